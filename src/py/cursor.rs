//! `_core.RawCursor`: a server cursor handing out one server batch at a time as BSON bytes, which the
//! Python cursor classes decode with pymongo's C decoder. Usable from threads and from asyncio. A fetch
//! takes the cursor out of its slot, so one blocked on the server (a tailable-await getMore) holds no
//! lock, and `close` from another thread ends it at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::aio;
use super::blocking::{block_on, detached_or_here};
use super::manager::error;
use super::monitor;
use crate::core::manager::{CoreError, DriverClient, Manager, TenantSession};
use crate::core::monitor::{scoped, Scope};
use crate::core::ops::{Batch, Opened};
use crate::core::registry::Lease;
use crate::core::{forklock, runtime};

struct Open {
    cursor: Opened,
    // Its empty batches are answers ("nothing new yet"), not something to fetch past.
    tailable: bool,
    // A cursor opened in a session fetches its later batches in that session.
    session: Option<Arc<TenantSession>>,
    // Keeps the tenant's pool open for as long as the server cursor lives.
    lease: Lease<DriverClient>,
}

enum State {
    Ready(Box<Open>),
    /// A fetch is in progress (the cursor is out of the slot).
    Busy,
    Done,
    /// A fetch was cancelled mid-way; the server cursor was killed.
    Cancelled,
}

type Fetched = Result<Option<Batch>, CoreError>;

#[pyclass(module = "tenantpool._core", name = "RawCursor", frozen)]
pub struct PyRawCursor {
    manager: Arc<Manager>,
    state: Arc<Mutex<State>>,
    /// Wakes a fetch blocked on the server when another thread closes the cursor.
    stop: Arc<Notify>,
    /// The next batch, being fetched while Python decodes the current one.
    ahead: Mutex<Option<JoinHandle<Fetched>>>,
    /// Batches handed out so far; read ahead only once the caller is going through a large result.
    batches: AtomicU32,
    in_session: bool,
    tailable: bool,
    /// The fork generation (see `forklock`) that opened the cursor: in a forked child its connection belongs to the parent.
    generation: u64,
    /// The tenant, for command events: None when the manager has no listeners.
    tenant: Option<String>,
}

impl PyRawCursor {
    pub fn new(
        manager: Arc<Manager>,
        cursor: Opened,
        lease: Lease<DriverClient>,
        session: Option<Arc<TenantSession>>,
        tailable: bool,
    ) -> Self {
        let in_session = session.is_some();
        let tenant = manager.monitored().then(|| lease.entry().tenant.clone());
        let open = Open { cursor, tailable, session, lease };
        PyRawCursor {
            manager,
            state: Arc::new(Mutex::new(State::Ready(Box::new(open)))),
            stop: Arc::new(Notify::new()),
            ahead: Mutex::new(None),
            batches: AtomicU32::new(0),
            in_session,
            tailable,
            generation: forklock::generation(),
            tenant,
        }
    }

    /// Starts fetching the batch after the one just handed out, so that the server's work and the
    /// transfer overlap with Python decoding it (as a cursor is read, each getMore then costs the
    /// caller only what its decoding does not hide).
    ///
    /// Only from the third batch on: the first comes with the query and the second is the caller's
    /// first getMore, so a cursor read for a few documents and abandoned never costs an extra
    /// getMore; one read past its first full batch costs at most one batch it does not use. Not in a
    /// session, where a background getMore would hold the session against the caller's own operations.
    /// Not on a tailable cursor: its getMore waits for new documents (up to maxAwaitTimeMS with
    /// awaitData), so one started ahead would hold a connection and a quota slot waiting for documents
    /// the caller may never ask for, and what it found would come late to a caller that asked again.
    ///
    /// `scope`: the command events' scope of the `next_batch` that asked for the batch before.
    fn read_ahead(&self, scope: Option<Arc<Scope>>) {
        if self.in_session || self.tailable || self.batches.fetch_add(1, Ordering::Relaxed) < 1 {
            return;
        }
        let Some(rt) = runtime::live() else { return };
        let Ok(Some(fetch)) = Fetch::start(&self.state, &self.stop) else { return };
        let manager = Arc::clone(&self.manager);
        *self.ahead.lock() = Some(rt.spawn(async move { scoped(scope, fetch.run(&manager)).await }));
    }

    /// The command events' scope of a fetch starting now (None without listeners).
    fn scope(&self, py: Python<'_>) -> Option<Arc<Scope>> {
        let tenant = self.tenant.as_deref()?;
        monitor::scope(py, &self.manager, tenant)
    }

    /// Stops a read-ahead in progress: dropping its fetch kills the server cursor.
    fn cancel_read_ahead(&self) {
        if let Some(handle) = self.ahead.lock().take() {
            handle.abort();
        }
    }
}

/// The outcome of a read-ahead task.
async fn read_ahead_result(handle: JoinHandle<Fetched>) -> Fetched {
    handle.await.unwrap_or_else(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => Err(CoreError::Misuse("this cursor was closed while it fetched a batch".into())),
    })
}

/// Drops a cursor inside the runtime: an unexhausted one schedules `killCursors` on the server.
fn release(open: Box<Open>) {
    runtime::drop_in_runtime(open);
}

/// Takes the cursor out of its slot for one fetch. If the fetch is abandoned (an asyncio task
/// cancelled), dropping the guard kills the cursor and records why.
struct Fetch {
    state: Arc<Mutex<State>>,
    stop: Arc<Notify>,
    open: Option<Box<Open>>,
}

impl Fetch {
    fn start(state: &Arc<Mutex<State>>, stop: &Arc<Notify>) -> Result<Option<Fetch>, &'static str> {
        let mut slot = state.lock();
        match std::mem::replace(&mut *slot, State::Busy) {
            State::Ready(open) => {
                Ok(Some(Fetch { state: Arc::clone(state), stop: Arc::clone(stop), open: Some(open) }))
            }
            State::Busy => Err("this cursor is already fetching a batch; a cursor is not for concurrent use"),
            State::Done => {
                *slot = State::Done;
                Ok(None)
            }
            State::Cancelled => {
                *slot = State::Cancelled;
                Err("a fetch of this cursor was cancelled, which closed it; run the query again")
            }
        }
    }

    async fn run(mut self, manager: &Manager) -> Result<Option<Batch>, CoreError> {
        let open = self.open.as_mut().expect("present until finished");
        let stop = Arc::clone(&self.stop);
        let r = tokio::select! {
            r = manager.next_batch(&mut open.cursor, open.tailable, &open.lease, open.session.as_deref()) => r,
            // Closed from another thread: abandon the getMore (a tailable-await one may wait for
            // seconds); the cursor ends as if exhausted, and releasing it kills the server cursor.
            _ = stop.notified() => Ok(None),
        };
        let open = self.open.take().expect("present until finished");
        let mut slot = self.state.lock();
        // Still Busy unless the cursor was closed meanwhile (then it is Done and stays so).
        if matches!(r, Ok(Some(_))) && matches!(*slot, State::Busy) {
            *slot = State::Ready(open);
        } else {
            *slot = State::Done;
            drop(slot);
            release(open);
        }
        r
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            let mut slot = self.state.lock();
            if matches!(*slot, State::Busy) {
                *slot = State::Cancelled;
            }
            drop(slot);
            release(open);
        }
    }
}

/// The batch's documents as one `bytes`, copied once, from the server's reply.
fn to_bytes<'py>(py: Python<'py>, batch: &Batch) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, batch.len(), |out| {
        batch.copy_to(out);
        Ok(())
    })
}

pub fn invalid_operation(message: &str) -> PyErr {
    Python::attach(|py| match py.import("pymongo.errors").and_then(|m| m.getattr("InvalidOperation")) {
        Ok(cls) => match cls.call1((message,)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(e) => e,
    })
}

impl PyRawCursor {
    /// A cursor inherited through fork cannot continue: its server cursor lives on the parent's
    /// connection. Forget it (closing would disturb the parent) and say so.
    fn check_process(&self) -> PyResult<()> {
        if self.generation == forklock::generation() {
            return Ok(());
        }
        if let State::Ready(open) = std::mem::replace(&mut *self.state.lock(), State::Done) {
            std::mem::forget(open);
        }
        // A read-ahead task of the parent's runtime, which has no threads here.
        std::mem::forget(self.ahead.lock().take());
        Err(invalid_operation("this cursor was opened before os.fork(); run the query again in this process"))
    }
}

#[pymethods]
impl PyRawCursor {
    /// The next server batch as consecutive BSON documents, or None once the cursor is exhausted.
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.check_process()?;
        let ahead = self.ahead.lock().take();
        let scope = self.scope(py);
        let fetched = match ahead {
            Some(handle) => block_on(py, read_ahead_result(handle)),
            None => match Fetch::start(&self.state, &self.stop).map_err(invalid_operation)? {
                Some(fetch) => block_on(py, scoped(scope.clone(), fetch.run(&self.manager))),
                None => return Ok(None),
            },
        };
        match fetched {
            Ok(Some(batch)) => {
                self.read_ahead(scope);
                to_bytes(py, &batch).map(Some)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(error(py, &self.manager, e)),
        }
    }

    /// `next_batch` as an asyncio awaitable.
    fn next_batch_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_process()?;
        let ahead = self.ahead.lock().take();
        let fetch = match ahead {
            Some(_) => None,
            None => Fetch::start(&self.state, &self.stop).map_err(invalid_operation)?,
        };
        let manager = Arc::clone(&self.manager);
        let scope = self.scope(py);
        aio::awaitable(py, move || async move {
            let r = match (ahead, fetch) {
                (Some(handle), _) => read_ahead_result(handle).await,
                (None, Some(f)) => scoped(scope, f.run(&manager)).await,
                (None, None) => Ok(None),
            };
            aio::deliver(move |py| match r {
                Ok(batch) => Ok(batch.map(|b| to_bytes(py, &b)).transpose()?.map(Bound::unbind)),
                Err(e) => Err(error(py, &manager, e)),
            })
        })
    }

    /// Kills the server cursor (if still open) and returns the lease. Idempotent. A fetch in progress
    /// in another thread stops at once (as if the cursor were exhausted) and releases the cursor.
    fn close(&self, py: Python<'_>) {
        let state = &self.state;
        let close = || {
            self.cancel_read_ahead();
            let mut slot = state.lock();
            match std::mem::replace(&mut *slot, State::Done) {
                State::Ready(open) => {
                    drop(slot);
                    release(open);
                }
                State::Busy => {
                    // The fetch releases the cursor when it stops and sees Done. A stored permit if it
                    // has not started waiting yet.
                    self.stop.notify_one();
                }
                State::Done => {}
                State::Cancelled => *slot = State::Cancelled,
            }
        };
        // At exit it closes with the GIL held: only a lock and a spawn.
        detached_or_here(py, close);
    }

    #[getter]
    fn alive(&self) -> bool {
        matches!(&*self.state.lock(), State::Ready(_) | State::Busy)
    }
}

impl Drop for PyRawCursor {
    fn drop(&mut self) {
        if self.generation != forklock::generation() {
            std::mem::forget(self.ahead.lock().take());
            return;
        }
        self.cancel_read_ahead();
        let mut slot = self.state.lock();
        if let State::Ready(open) = std::mem::replace(&mut *slot, State::Done) {
            drop(slot);
            release(open);
        }
    }
}
