//! The process's tokio runtime. A forked child inherits the parent's runtime as dead memory (its worker
//! threads did not survive the fork), so the runtime is keyed by fork generation and rebuilt in a child.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};

use super::forklock::{self, ForkMutex};

/// The runtime, owned here until `shutdown`, with the fork generation that built it.
static RUNTIME: ForkMutex<Option<(u64, Runtime)>> = ForkMutex::new(None);
/// What `get` hands out without a lock: every operation asks for the runtime, and a process-wide lock
/// (plus a `getpid` to tell a forked child) on that path cost every thread a turn at it. Never freed:
/// a reader may still hold the pointer it loaded; there is one per runtime built (one per process, and
/// one per forked child that uses tenantpool).
static CURRENT: AtomicPtr<Current> = AtomicPtr::new(std::ptr::null_mut());
/// Set by `shutdown`: the embedding process is exiting.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

struct Current {
    generation: u64,
    handle: Handle,
}

/// The runtime of this process, created on first use. Once it has shut down, the handle's spawns fail
/// (their tasks are cancelled at once) rather than run.
pub fn get() -> &'static Handle {
    let generation = forklock::generation();
    // SAFETY: non-null pointers stored in CURRENT come from `Box::leak` and are never freed.
    match unsafe { CURRENT.load(Ordering::Acquire).as_ref() } {
        Some(current) if current.generation == generation => &current.handle,
        _ => start(generation),
    }
}

/// The slow path of `get`: first use, or first use in a forked child.
#[cold]
fn start(generation: u64) -> &'static Handle {
    let mut slot = RUNTIME.lock();
    // SAFETY: as in `get`.
    if let Some(current) = unsafe { CURRENT.load(Ordering::Acquire).as_ref() } {
        if current.generation == generation && slot.is_some() {
            return &current.handle;
        }
    }
    if slot.as_ref().is_some_and(|(built, _)| *built != generation) {
        // Dropping it would try to join threads that do not exist in this process.
        std::mem::forget(slot.take());
    }
    let handle = slot.get_or_insert_with(|| (generation, build())).1.handle().clone();
    let current: &'static Current = Box::leak(Box::new(Current { generation, handle }));
    CURRENT.store(current as *const Current as *mut Current, Ordering::Release);
    &current.handle
}

/// The runtime slot's lock, for `fork()` to hold (taken last: other locks are taken before it).
pub fn lock_for_fork() -> impl Sized {
    RUNTIME.lock()
}

/// The runtime, unless the process is exiting. Cleanup paths (drops, background closes) use this: at
/// exit they leave resources to the OS rather than start a runtime or touch a stopped one.
pub fn live() -> Option<&'static Handle> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return None;
    }
    Some(get())
}

/// Drops `value` inside the runtime: driver objects (cursors, change streams) spawn their server-side
/// cleanup from `Drop`. At exit it is left to the OS instead, like everything else then.
pub fn drop_in_runtime<T>(value: T) {
    match live() {
        Some(rt) => {
            let _guard = rt.enter();
            drop(value);
        }
        None => std::mem::forget(value),
    }
}

/// Stops the runtime when the embedding interpreter exits, so that no runtime thread calls into an
/// interpreter that is being torn down. Operations still running (daemon threads) are dropped: their
/// callers get `Stopped`. Returns once those callers are back in the interpreter, or after a bound.
/// Call without the GIL.
pub fn shutdown() {
    SHUT_DOWN.store(true, Ordering::SeqCst);
    let taken = {
        let mut slot = RUNTIME.lock();
        CURRENT.store(std::ptr::null_mut(), Ordering::Release);
        slot.take()
    };
    if let Some((generation, rt)) = taken {
        if generation != forklock::generation() {
            std::mem::forget(rt);
        } else {
            // Waits for the workers to stop: returning while one still delivers a result to Python (an
            // asyncio task) would let finalization race it. Dropping the runtime drops every task,
            // which wakes their callers in `run`; a caller between `live()` and its spawn gets a task
            // cancelled at once, with the same outcome.
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
    // The callers need the GIL to return, which the exiting thread has let go of while it waits here.
    let deadline = Instant::now() + Duration::from_secs(2);
    while BLOCKING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `fut` on the runtime's workers and blocks this thread until it has finished.
///
/// Faster than `Runtime::block_on` on the calling thread: the driver's pool checkout, the socket
/// readiness and the check-in all happen on the worker that polls the I/O driver, so an operation
/// costs two thread wake-ups (start, finish) instead of one per event (measured: 3.6 context switches
/// per `find_one` instead of 15).
///
/// Once the runtime has shut down (interpreter exit) this fails with `Stopped` instead of starting a
/// new one; an operation under way when it shuts down is dropped and fails the same way.
pub fn run<'a, T: Send + 'static, E: From<Stopped> + Send + 'static>(
    fut: impl Future<Output = Result<T, E>> + Send + 'a,
) -> Result<T, E> {
    let rt = live().ok_or(Stopped)?;
    let boxed: Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>> = Box::pin(fut);
    // SAFETY: the task may borrow from the caller's frame because this function does not return
    // before the task has completed or been dropped: it waits on the JoinHandle, which resolves only
    // after the task's future is gone (finished, or cancelled by a runtime shutdown).
    let boxed: Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>> =
        unsafe { std::mem::transmute(boxed) };
    match wait(rt.spawn(boxed)) {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Stopped.into()),
    }
}

/// The runtime has shut down: the process is exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Counts a thread that is blocked in `run` without the GIL, from before it lets go of the GIL until
/// after it has it back: `shutdown` waits for the count to drop to zero, so that no thread is still
/// on its way back into the interpreter when finalization starts (it would be killed by
/// `pthread_exit` while unwinding Rust frames, which aborts the process).
pub struct Blocking(());

static BLOCKING: AtomicUsize = AtomicUsize::new(0);

impl Blocking {
    /// `None` once shutdown has begun. Call with the GIL held.
    pub fn enter() -> Option<Blocking> {
        // SeqCst on both sides: either this thread sees SHUT_DOWN, or `shutdown` sees the count.
        BLOCKING.fetch_add(1, Ordering::SeqCst);
        if SHUT_DOWN.load(Ordering::SeqCst) {
            BLOCKING.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Blocking(()))
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        BLOCKING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `fut` on this thread, parking between wake-ups.
fn wait<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn build() -> Runtime {
    // One worker by default: it drives sockets and timers and runs the operations, which are mostly
    // waiting; more workers add wake-ups between them (2 workers: 7-8 context switches per find_one,
    // 1: 3.6) without adding throughput on small machines. TENANTPOOL_IO_THREADS overrides it.
    let workers = std::env::var("TENANTPOOL_IO_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tenantpool-io")
        .enable_all()
        .build()
        .expect("tenantpool: cannot start the tokio runtime")
}
