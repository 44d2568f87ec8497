//! The process's tokio runtime. A forked child inherits the parent's runtime as dead memory (its worker
//! threads did not survive the fork), so the runtime is keyed by process id and rebuilt in a child.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::runtime::Runtime;

use super::forklock::ForkMutex;

static RUNTIME: ForkMutex<Option<(u32, Arc<Runtime>)>> = ForkMutex::new(None);
/// Set by `shutdown`: the embedding process is exiting.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

/// The runtime of this process, created on first use.
pub fn get() -> Arc<Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock();
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Arc::clone(rt);
        }
    }
    if let Some((_, inherited)) = slot.take() {
        // Dropping it would try to join threads that do not exist in this process.
        std::mem::forget(inherited);
    }
    let rt = Arc::new(build());
    *slot = Some((pid, Arc::clone(&rt)));
    rt
}

/// The runtime slot's lock, for `fork()` to hold (taken last: other locks are taken before it).
pub fn lock_for_fork() -> impl Sized {
    RUNTIME.lock()
}

/// The runtime, unless the process is exiting. Cleanup paths (drops, background closes) use this: at
/// exit they leave resources to the OS rather than start a runtime or touch a stopped one.
pub fn live() -> Option<Arc<Runtime>> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return None;
    }
    Some(get())
}

/// Stops the runtime's threads without waiting for their tasks. Called when the embedding interpreter
/// exits, so that no runtime thread calls into an interpreter that is being torn down (a task finishing
/// late would try to hand its result to Python).
pub fn shutdown() {
    SHUT_DOWN.store(true, Ordering::Release);
    let Some((pid, mut rt)) = RUNTIME.lock().take() else { return };
    if pid != std::process::id() {
        return std::mem::forget(rt);
    }
    // Other holders are operations finishing on other threads; give them a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        match Arc::try_unwrap(rt) {
            // Waits for the worker threads to stop: returning while one is still delivering a result to
            // Python would let finalization race it.
            Ok(owned) => return owned.shutdown_timeout(std::time::Duration::from_secs(2)),
            Err(shared) if std::time::Instant::now() < deadline => {
                rt = shared;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // Still in use (a daemon thread blocked in an operation): leave it rather than hang the exit.
            Err(shared) => return std::mem::forget(shared),
        }
    }
}

fn build() -> Runtime {
    // Few workers: they only drive sockets and timers; operations run on the calling threads.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tenantpool-io")
        .enable_all()
        .build()
        .expect("tenantpool: cannot start the tokio runtime")
}
