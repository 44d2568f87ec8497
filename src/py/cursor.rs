//! `_core.RawCursor`: a server cursor handing out one server batch at a time as BSON bytes, which the
//! Python cursor classes decode with pymongo's C decoder. Usable from threads and from asyncio.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::aio;
use super::blocking::{block_on, detached};
use super::manager::error;
use crate::core::manager::{CoreError, Manager, TenantPool, TenantSession};
use crate::core::ops::Opened;
use crate::core::registry::Lease;
use crate::core::runtime;

struct Open {
    cursor: Opened,
    // A cursor opened in a session fetches its later batches in that session.
    session: Option<Arc<TenantSession>>,
    // Keeps the tenant's pool open for as long as the server cursor lives.
    lease: Lease<TenantPool>,
}

enum State {
    Ready(Box<Open>),
    /// A fetch is in progress (the cursor is out of the slot).
    Busy,
    Done,
    /// A fetch was cancelled mid-way; the server cursor was killed.
    Cancelled,
}

#[pyclass(module = "tenantpool._core", name = "RawCursor", frozen)]
pub struct PyRawCursor {
    manager: Arc<Manager>,
    state: Arc<Mutex<State>>,
    /// The process that opened the cursor: in a forked child its connection belongs to the parent.
    pid: u32,
}

impl PyRawCursor {
    pub fn new(
        manager: Arc<Manager>,
        cursor: Opened,
        lease: Lease<TenantPool>,
        session: Option<Arc<TenantSession>>,
    ) -> Self {
        let open = Open { cursor, session, lease };
        PyRawCursor {
            manager,
            state: Arc::new(Mutex::new(State::Ready(Box::new(open)))),
            pid: std::process::id(),
        }
    }
}

/// Drops a cursor inside the runtime: an unexhausted one schedules `killCursors` on the server.
fn release(open: Box<Open>) {
    match runtime::live() {
        Some(rt) => {
            let _guard = rt.enter();
            drop(open);
        }
        None => std::mem::forget(open),
    }
}

/// Takes the cursor out of its slot for one fetch. If the fetch is abandoned (an asyncio task
/// cancelled), dropping the guard kills the cursor and records why.
struct Fetch {
    state: Arc<Mutex<State>>,
    open: Option<Box<Open>>,
}

impl Fetch {
    fn start(state: &Arc<Mutex<State>>) -> Result<Option<Fetch>, &'static str> {
        let mut slot = state.lock();
        match std::mem::replace(&mut *slot, State::Busy) {
            State::Ready(open) => Ok(Some(Fetch { state: Arc::clone(state), open: Some(open) })),
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

    async fn run(mut self, manager: &Manager) -> Result<Option<Vec<u8>>, CoreError> {
        let open = self.open.as_mut().expect("present until finished");
        let r = manager.next_batch(&mut open.cursor, &open.lease, open.session.as_deref()).await;
        let open = self.open.take().expect("present until finished");
        let mut slot = self.state.lock();
        if matches!(r, Ok(Some(_))) {
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
            *self.state.lock() = State::Cancelled;
            release(open);
        }
    }
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
        if self.pid == std::process::id() {
            return Ok(());
        }
        if let State::Ready(open) = std::mem::replace(&mut *self.state.lock(), State::Done) {
            std::mem::forget(open);
        }
        Err(invalid_operation("this cursor was opened before os.fork(); run the query again in this process"))
    }
}

#[pymethods]
impl PyRawCursor {
    /// The next server batch as consecutive BSON documents, or None once the cursor is exhausted.
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.check_process()?;
        let Some(fetch) = Fetch::start(&self.state).map_err(invalid_operation)? else {
            return Ok(None);
        };
        let manager = &self.manager;
        match block_on(py, fetch.run(manager)) {
            Ok(bytes) => Ok(bytes.map(|b| PyBytes::new(py, &b))),
            Err(e) => Err(error(py, &self.manager, e)),
        }
    }

    /// `next_batch` as an asyncio awaitable.
    fn next_batch_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_process()?;
        let fetch = Fetch::start(&self.state).map_err(invalid_operation)?;
        let manager = Arc::clone(&self.manager);
        aio::awaitable(py, async move {
            let r = match fetch {
                Some(f) => f.run(&manager).await,
                None => Ok(None),
            };
            Python::attach(|py| match r {
                Ok(bytes) => Ok(bytes.map(|b| PyBytes::new(py, &b).unbind())),
                Err(e) => Err(error(py, &manager, e)),
            })
        })
    }

    /// Kills the server cursor (if still open) and returns the lease. Idempotent.
    fn close(&self, py: Python<'_>) {
        let state = &self.state;
        // Cannot fail: at exit (`Stopped`) it closes with the GIL held, which is only a lock and a spawn.
        let close = || {
            let mut slot = state.lock();
            if let State::Ready(_) = &*slot {
                if let State::Ready(open) = std::mem::replace(&mut *slot, State::Done) {
                    drop(slot);
                    release(open);
                }
            }
            Ok::<(), CoreError>(())
        };
        if let Err(CoreError::Stopped) = detached(py, close) {
            let _ = close();
        }
    }

    #[getter]
    fn alive(&self) -> bool {
        matches!(&*self.state.lock(), State::Ready(_) | State::Busy)
    }
}

impl Drop for PyRawCursor {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return;
        }
        let mut slot = self.state.lock();
        if let State::Ready(open) = std::mem::replace(&mut *slot, State::Done) {
            drop(slot);
            release(open);
        }
    }
}
