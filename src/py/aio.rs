//! Awaitables for asyncio: each operation runs as one task on tenantpool's tokio runtime and resolves an
//! `asyncio.Future` of the calling event loop.
//!
//! Finished operations are handed to the event loop in batches. Each event loop (per thread) has a
//! completion queue; the I/O thread pushes `(future, result)` to it without the GIL and wakes the loop only
//! when the queue goes from empty to non-empty, by writing one byte to a socket the loop watches
//! (`add_reader`). The loop's callback then resolves every queued future at once, on the loop's thread,
//! where it holds the GIL anyway. Resolving each future from another thread instead (a blocking-pool
//! thread taking the GIL, then `call_soon_threadsafe`) costs a thread hop, a contended GIL hand-over and a
//! loop wake-up per operation: measured, three quarters of the process's CPU time under load went to
//! those hand-overs.
//!
//! Cancelling the asyncio future (cancelling the awaiting task) aborts the tokio task, which drops the
//! Rust future: its lease and quota slot are released at once.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock, Weak};

use futures_util::FutureExt;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};
use pyo3::IntoPyObjectExt;
use tokio::task::AbortHandle;

use super::errors::core_error;
use crate::core::manager::CoreError;
use crate::core::{forklock, runtime};

/// Runs the future `make` returns on the tenantpool runtime and returns an asyncio future (of the
/// running event loop) of its result.
///
/// `make` runs on the I/O thread, where the future is boxed: the driver's futures are large, and
/// allocating and moving them into the task here would be done by the event loop's thread, with the
/// GIL held (measured: a few percent of that thread's CPU time in the async benchmark).
///
/// The future ends in a `Deferred` (see `deliver`): what needs the GIL runs on the event loop's thread
/// when the asyncio future is resolved, never on the I/O thread. Taking the GIL there would stall every
/// other operation's socket I/O while the event loop holds the GIL.
pub fn awaitable<'py, M, F>(py: Python<'py>, make: M) -> PyResult<Bound<'py, PyAny>>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future<Output = Deferred> + Send + 'static,
{
    let Some(rt) = runtime::live() else {
        return Err(core_error(py, CoreError::Stopped, &|m| m.to_owned()));
    };
    let completions = Completions::of_running_loop(py)?;
    let future = completions.create_future.bind(py).call0()?;
    let on_done = Bound::new(py, Abort(OnceLock::new()))?;
    let delivery =
        Delivery { completions, future: Some((future.clone().unbind(), on_done.clone().unbind())) };
    let task = rt.spawn(async move {
        let outcome = match AssertUnwindSafe(async move { Box::pin(make()).await }).catch_unwind().await {
            Ok(deferred) => Outcome::Ready(deferred),
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
        };
        delivery.deliver(outcome);
    });
    let _ = on_done.get().0.set(task.abort_handle());
    if let Err(e) = future.call_method1(intern!(py, "add_done_callback"), (on_done,)) {
        task.abort();
        return Err(e);
    }
    Ok(future)
}

/// The Python side of an awaitable's result, built once the GIL is held.
pub struct Deferred(Box<Convert>);

type Convert = dyn for<'a> FnOnce(Python<'a>) -> PyResult<Py<PyAny>> + Send;

/// Wraps the part of an awaitable that turns its Rust outcome into Python objects (or exceptions).
pub fn deliver<T, C>(convert: C) -> Deferred
where
    C: for<'a> FnOnce(Python<'a>) -> PyResult<T> + Send + 'static,
    T: for<'a> IntoPyObject<'a>,
{
    Deferred(Box::new(move |py| convert(py)?.into_py_any(py)))
}

enum Outcome {
    Ready(Deferred),
    Panicked(String),
    /// The task was dropped before it finished: aborted (its future is cancelled, nobody waits) or
    /// dropped by the runtime's shutdown at interpreter exit.
    Dropped,
}

struct Done {
    future: Py<PyAny>,
    on_done: Py<Abort>,
    outcome: Outcome,
}

/// An operation's way back to its event loop. Dropped without delivering (the task was aborted or
/// the runtime shut down), it still resolves the future, so that no awaiting task waits for ever.
struct Delivery {
    completions: Arc<Completions>,
    future: Option<(Py<PyAny>, Py<Abort>)>,
}

impl Delivery {
    fn deliver(mut self, outcome: Outcome) {
        if let Some((future, on_done)) = self.future.take() {
            self.completions.push(Done { future, on_done, outcome });
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some((future, on_done)) = self.future.take() {
            self.completions.push(Done { future, on_done, outcome: Outcome::Dropped });
        }
    }
}

/// The done callback of every operation's future: a cancelled future aborts its task. Set before the
/// task exists, so that the task can hand it back with its result (see `drain`).
#[pyclass(frozen)]
struct Abort(OnceLock<AbortHandle>);

#[pymethods]
impl Abort {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0(intern!(future.py(), "cancelled"))?.is_truthy()? {
            if let Some(task) = self.0.get() {
                task.abort();
            }
        }
        Ok(())
    }
}

/// One event loop's completion queue.
struct Completions {
    ready: Mutex<VecDeque<Done>>,
    wake: Wake,
    /// The loop's `create_future`, looked up once.
    create_future: Py<PyAny>,
}

/// Results resolved per loop callback. Each resolved future makes its task runnable in the next loop
/// iteration: in slices, a burst of results does not become one long iteration of task steps, and
/// timers and other I/O get their turn in between. 16 rather than 64: 1,000 tasks over 200 tenants,
/// shared strategy, 7 interleaved pairs on a busy 2-core machine: loop lag p99 median 33 ms (29-46)
/// instead of 52 ms (24-153), ops/s median 2,588 instead of 2,805 (within the runs' spread).
const DRAIN_AT_ONCE: usize = 16;

enum Wake {
    /// One byte on a socket pair whose reading end the loop watches: no GIL, no thread hop.
    #[cfg(unix)]
    Socket { reader: std::os::unix::net::UnixStream, writer: std::os::unix::net::UnixStream },
    /// For loops without `add_reader` (Windows' proactor loop): `call_soon_threadsafe` from a
    /// blocking-pool thread, once per batch.
    Threadsafe { event_loop: Py<PyAny> },
}

thread_local! {
    /// The completion queues of the event loops that ran operations on this thread, the last used
    /// first. A loop runs on one thread at a time, so this needs no lock. Neither the loop nor its
    /// queue is kept alive from here: the queue lives as long as the loop watches its socket (the
    /// loop's reader callback holds it) or an operation may still deliver to it, so that the results
    /// left in the queue of a closed loop (an open cursor's lease) are released once the last
    /// operation has finished.
    static QUEUES: RefCell<Vec<Registered>> = const { RefCell::new(Vec::new()) };
}

struct Registered {
    generation: u64,
    event_loop: Py<PyWeakrefReference>,
    completions: Weak<Completions>,
}

impl Registered {
    fn get(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        generation: u64,
    ) -> Option<Arc<Completions>> {
        let registered = self.event_loop.bind(py).upgrade()?;
        if registered.is(event_loop) && self.generation == generation {
            self.completions.upgrade()
        } else {
            None
        }
    }
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl Completions {
    fn of_running_loop(py: Python<'_>) -> PyResult<Arc<Completions>> {
        let get = GET_RUNNING_LOOP
            .get_or_try_init(py, || py.import("asyncio")?.getattr("get_running_loop").map(Bound::unbind))?;
        let event_loop = get.bind(py).call0()?;
        let generation = forklock::generation();
        QUEUES.with(|queues| {
            let mut queues = queues.borrow_mut();
            if let Some(found) = queues.first().and_then(|q| q.get(py, &event_loop, generation)) {
                return Ok(found);
            }
            // A queue inherited through fork() shares its socket with the parent's.
            queues.retain(|q| {
                q.generation == generation
                    && q.completions.strong_count() > 0
                    && q.event_loop.bind(py).upgrade().is_some()
            });
            let hit =
                queues.iter().enumerate().find_map(|(at, q)| Some((at, q.get(py, &event_loop, generation)?)));
            if let Some((at, completions)) = hit {
                let entry = queues.remove(at);
                queues.insert(0, entry);
                return Ok(completions);
            }
            let completions = Completions::register(&event_loop)?;
            let entry = Registered {
                generation,
                event_loop: PyWeakrefReference::new(&event_loop)?.unbind(),
                completions: Arc::downgrade(&completions),
            };
            queues.insert(0, entry);
            Ok(completions)
        })
    }

    fn register(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Completions>> {
        let py = event_loop.py();
        let create_future = event_loop.getattr(intern!(py, "create_future"))?.unbind();
        #[cfg(unix)]
        {
            let (reader, writer) = std::os::unix::net::UnixStream::pair()
                .and_then(|(r, w)| r.set_nonblocking(true).and(w.set_nonblocking(true)).map(|()| (r, w)))
                .map_err(|e| {
                    PyRuntimeError::new_err(format!("tenantpool: cannot create a socket pair: {e}"))
                })?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
            let completions = Arc::new(Completions {
                ready: Mutex::new(VecDeque::new()),
                wake: Wake::Socket { reader, writer },
                create_future: create_future.clone_ref(py),
            });
            let drain = Drain(Arc::clone(&completions));
            match event_loop.call_method1(intern!(py, "add_reader"), (fd, drain)) {
                Ok(_) => return Ok(completions),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::new(Completions {
            ready: Mutex::new(VecDeque::new()),
            wake: Wake::Threadsafe { event_loop: event_loop.clone().unbind() },
            create_future,
        }))
    }

    /// Called from any thread, without the GIL.
    fn push(self: &Arc<Self>, done: Done) {
        let first = {
            let mut ready = self.ready.lock();
            ready.push_back(done);
            ready.len() == 1
        };
        if !first {
            // A wake-up is already on its way, and the drain it triggers takes this one too.
            return;
        }
        match &self.wake {
            #[cfg(unix)]
            // A full socket buffer means unread bytes, hence a drain to come: nothing is lost.
            Wake::Socket { writer, .. } => drop((&*writer).write(&[1])),
            Wake::Threadsafe { .. } => {
                let Some(rt) = runtime::live() else { return };
                let completions = Arc::clone(self);
                rt.spawn_blocking(move || {
                    Python::attach(|py| {
                        let Wake::Threadsafe { event_loop } = &completions.wake else { return };
                        let event_loop = event_loop.bind(py).clone();
                        // Fails once the loop is closed: its futures can no longer be resolved.
                        let _ = event_loop
                            .call_method1(intern!(py, "call_soon_threadsafe"), (Drain(completions),));
                    })
                });
            }
        }
    }

    /// Resolves the queued futures, at most `DRAIN_AT_ONCE` of them, and asks for another drain if
    /// more are left. On the loop's thread, with the GIL.
    fn drain(self: &Arc<Self>, py: Python<'_>) {
        #[cfg(unix)]
        if let Wake::Socket { reader, .. } = &self.wake {
            // Emptied before the queue is taken: a byte written after this belongs to a push that
            // the next drain takes.
            let mut buf = [0u8; 256];
            loop {
                match (&*reader).read(&mut buf) {
                    Ok(n) if n == buf.len() => continue,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
        let (batch, more): (Vec<Done>, bool) = {
            let mut ready = self.ready.lock();
            let n = ready.len().min(DRAIN_AT_ONCE);
            (ready.drain(..n).collect(), !ready.is_empty())
        };
        if more {
            // The rest in a later loop iteration, after the callbacks already due (timers, other I/O).
            // A push sees a non-empty queue and sends no wake-up of its own, so this one must.
            self.wake_again(py);
        }
        let mut unused = Vec::new();
        for Done { future, on_done, outcome } in batch {
            let future = future.bind(py);
            let cancelled =
                future.call_method0(intern!(py, "cancelled")).and_then(|c| c.is_truthy()).unwrap_or(true);
            if cancelled {
                unused.push(outcome);
                continue;
            }
            let result = match outcome {
                Outcome::Ready(Deferred(convert)) => {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| convert(py))) {
                        Ok(result) => result,
                        Err(panic) => Err(panicked(&panic_message(&*panic))),
                    }
                }
                Outcome::Panicked(message) => Err(panicked(&message)),
                Outcome::Dropped => Err(core_error(py, CoreError::Stopped, &|m| m.to_owned())),
            };
            // Resolved here, the future no longer needs its cancellation callback: removed, it costs
            // the loop no extra callback per operation.
            let _ = future.call_method1(intern!(py, "remove_done_callback"), (on_done,));
            let set = match result {
                Ok(value) => future.call_method1(intern!(py, "set_result"), (value,)),
                Err(e) => future.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
            };
            if let Err(e) = set {
                e.write_unraisable(py, Some(future));
            }
        }
        if !unused.is_empty() {
            // Results of cancelled operations may hold driver objects (a cursor) whose drop spawns
            // their server-side cleanup.
            runtime::drop_in_runtime(unused);
        }
    }
}

impl Completions {
    /// Asks the loop for one more drain, from its own thread.
    fn wake_again(self: &Arc<Self>, py: Python<'_>) {
        match &self.wake {
            #[cfg(unix)]
            Wake::Socket { writer, .. } => drop((&*writer).write(&[1])),
            Wake::Threadsafe { event_loop } => {
                let again = Drain(Arc::clone(self));
                if let Err(e) = event_loop.bind(py).call_method1(intern!(py, "call_soon"), (again,)) {
                    e.write_unraisable(py, None);
                }
            }
        }
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        // Results nobody will take (the loop closed first): dropped like those of cancelled operations.
        let left = std::mem::take(self.ready.get_mut());
        if !left.is_empty() {
            runtime::drop_in_runtime(left);
        }
    }
}

/// The loop's callback that drains a completion queue.
#[pyclass(frozen)]
struct Drain(Arc<Completions>);

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.0.drain(py);
    }
}

fn panicked(message: &str) -> PyErr {
    PyRuntimeError::new_err(format!("tenantpool: rust future panicked: {message}"))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown error".to_owned()
    }
}
