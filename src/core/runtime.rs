//! The process's tokio runtime. A forked child inherits the parent's runtime as dead memory (its worker
//! threads did not survive the fork), so the runtime is keyed by process id and rebuilt in a child.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

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
