//! The mutex for locks that the fork hooks hold across `fork()` (see `manager::prepare_fork`).
//!
//! parking_lot's mutex must not be used for them. Parent threads that were parked waiting for such a
//! lock at the instant of the fork are still listed in parking_lot's wait queue, which is ordinary
//! memory and so inherited by the child, and its "eventual fairness" makes an unlock, now and then, hand
//! the lock straight to the first queued thread instead of releasing it. In the child that thread does
//! not exist: the lock stays held forever and the child's next `lock` never returns. std's mutex keeps
//! its waiters in the kernel (a futex on Linux), which does not carry the parent's threads into the
//! child, and its unlock always releases: the forking thread holds the guards across the fork and drops
//! them in the parent and in the child alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{MutexGuard, Once, PoisonError, TryLockError};

/// Bumped in the child of every `fork()` (a `pthread_atfork` child handler), so that state inherited
/// from the parent is recognised by a load and a compare: the process id would cost a `getpid` system
/// call per check (glibc no longer caches it), on every operation.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

extern "C" fn forked_child() {
    // The child's only thread runs this before `fork()` returns: no other thread can be reading.
    GENERATION.fetch_add(1, Ordering::Release);
}

/// Which process this is, as a number that differs in a forked child from what its parent saw (and
/// from what any of its ancestors saw); unlike a pid, it is never reused. Compare a value kept from
/// earlier with it to tell whether the state that value belongs to was inherited across a fork.
pub fn generation() -> u64 {
    // Registered before the first value is handed out: a fork before it would go unnoticed.
    HOOK.call_once(|| {
        // SAFETY: `forked_child` only touches an atomic, which is async-signal-safe.
        let failed = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        // Only ENOMEM; without the hook a child would use its parent's dead runtime.
        assert_eq!(failed, 0, "tenantpool: cannot register the fork handler (out of memory)");
    });
    GENERATION.load(Ordering::Acquire)
}

/// `std::sync::Mutex` with parking_lot's interface: a panic while the lock is held does not poison it.
#[derive(Default)]
pub struct ForkMutex<T>(std::sync::Mutex<T>);

impl<T> ForkMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkMutex(std::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock if it is free now; never waits.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Forks while this thread holds a lock and another thread is blocked waiting for it; the child
    /// releases the lock (as `finish_fork` does) and takes it again. Whether the child managed to.
    fn child_relocks_after_fork<G>(lock: impl Fn() -> G + Sync, unlock: impl Fn(G)) -> bool {
        let held = lock();
        std::thread::scope(|s| {
            s.spawn(|| drop(lock()));
            // Long enough for the waiter to park (and for parking_lot's fairness timer to expire).
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: the child only releases and takes the lock, then leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                unsafe { libc::alarm(10) };
                unlock(held);
                drop(lock());
                unsafe { libc::_exit(0) };
            }
            unlock(held);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut status = 0;
            loop {
                if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                    return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                }
                if Instant::now() > deadline {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    }

    /// Runs `child` in a forked child (which exits 0 if it returns true); whether it did.
    fn in_child(child: impl FnOnce() -> bool) -> bool {
        // SAFETY: the child only runs `child` and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe { libc::alarm(10) };
            let ok = child();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn the_generation_changes_in_a_forked_child_only() {
        let parent = generation();
        assert_eq!(generation(), parent, "stable within a process");
        assert!(in_child(|| {
            let child = generation();
            // And again in a grandchild: a generation is never seen by two processes of one lineage.
            child != parent
                && generation() == child
                && in_child(|| generation() != child && generation() != parent)
        }));
        assert_eq!(generation(), parent, "the parent's is untouched by its children");
    }

    #[test]
    fn a_lock_held_across_fork_is_free_in_the_child() {
        let mutex = ForkMutex::new(0u32);
        for _ in 0..3 {
            assert!(child_relocks_after_fork(|| mutex.lock(), drop));
        }
    }

    /// Why `ForkMutex` exists: parking_lot hands the lock, on the child's unlock, to the parent thread
    /// that was waiting for it, which does not exist in the child. Ignored: whether an unlock is "fair"
    /// depends on a timer shared with every other lock hashed to the same bucket, so tests running in
    /// parallel can make it pass; run alone with `cargo test parking_lot_hands -- --ignored`.
    #[test]
    #[ignore]
    fn parking_lot_hands_a_lock_held_across_fork_to_a_thread_the_child_does_not_have() {
        let mutex = parking_lot::Mutex::new(0u32);
        let relocked = child_relocks_after_fork(
            || std::mem::forget(mutex.lock()),
            // SAFETY: taken, and its guard forgotten, by this thread before the fork.
            |()| unsafe { mutex.force_unlock() },
        );
        assert!(!relocked, "parking_lot no longer hands off to a waiter: ForkMutex may be unnecessary");
    }
}
