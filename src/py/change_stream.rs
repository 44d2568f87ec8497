//! `_core.RawChangeStream`: a change stream handing out one event at a time as BSON bytes, with its
//! resume token; the Python `ChangeStream` classes decode them with pymongo's decoder. Usable from
//! threads and from asyncio. Built like `RawCursor`: the stream leaves its slot while a round runs, so a
//! round blocked on the server holds no lock (another thread's `close` or `alive` never waits on it), and
//! `close` from another thread ends a blocked round at once.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::Notify;

use super::aio;
use super::blocking::{block_on, detached_or_here};
use super::cursor::invalid_operation;
use super::manager::error;
use super::monitor;
use crate::core::change_stream::{Change, Watched};
use crate::core::manager::{CoreError, DriverClient, Manager, TenantSession};
use crate::core::monitor::{scoped, Scope};
use crate::core::registry::Lease;
use crate::core::{forklock, runtime};

struct Open {
    stream: Watched,
    // A stream opened in a session runs its getMores in that session.
    session: Option<Arc<TenantSession>>,
    // Keeps the tenant's pool open (no idle reaping, no LRU eviction) for as long as the stream lives.
    lease: Lease<DriverClient>,
}

enum State {
    Ready(Box<Open>),
    /// A round is in progress (the stream is out of the slot).
    Busy,
    /// `close` was called during a round: the round stops, then releases the stream.
    Closing,
    /// Closed, invalidated, or failed: the server cursor is gone and the lease returned.
    Done,
    /// A round was cancelled mid-way; the server cursor was killed.
    Cancelled,
}

/// One round's outcome for Python: the event and the resume token, as BSON bytes.
type Outcome = (Option<Vec<u8>>, Option<Vec<u8>>);

#[pyclass(module = "tenantpool._core", name = "RawChangeStream", frozen)]
pub struct PyRawChangeStream {
    manager: Arc<Manager>,
    state: Arc<Mutex<State>>,
    /// Wakes a round blocked on the server when another thread closes the stream.
    stop: Arc<Notify>,
    /// The resume token when the stream was opened (`{"_id": token}`), for `resume_token` before any round.
    initial_token: Option<Vec<u8>>,
    /// The fork generation (see `forklock`) that opened the stream: in a forked child its connection belongs to the parent.
    generation: u64,
    /// The tenant, for command events: None when the manager has no listeners.
    tenant: Option<String>,
}

impl PyRawChangeStream {
    pub fn new(
        manager: Arc<Manager>,
        stream: Watched,
        lease: Lease<DriverClient>,
        session: Option<Arc<TenantSession>>,
    ) -> Self {
        let initial_token = stream.initial_token().map(|d| d.as_bytes().to_vec());
        let tenant = manager.monitored().then(|| lease.entry().tenant.clone());
        let open = Open { stream, session, lease };
        PyRawChangeStream {
            manager,
            state: Arc::new(Mutex::new(State::Ready(Box::new(open)))),
            stop: Arc::new(Notify::new()),
            initial_token,
            generation: forklock::generation(),
            tenant,
        }
    }

    /// The command events' scope of a round starting now (None without listeners).
    fn scope(&self, py: Python<'_>) -> Option<Arc<Scope>> {
        monitor::scope(py, &self.manager, self.tenant.as_deref()?)
    }
}

/// Drops a stream inside the runtime: a live one schedules `killCursors` on the server. The lease goes
/// with it.
fn release(open: Box<Open>) {
    runtime::drop_in_runtime(open);
}

/// Takes the stream out of its slot for one round. If the round is abandoned (an asyncio task
/// cancelled), dropping the guard kills the stream and records why.
struct Round {
    state: Arc<Mutex<State>>,
    stop: Arc<Notify>,
    open: Option<Box<Open>>,
}

impl Round {
    fn start(stream: &PyRawChangeStream) -> Result<Option<Round>, &'static str> {
        let mut slot = stream.state.lock();
        match std::mem::replace(&mut *slot, State::Busy) {
            State::Ready(open) => Ok(Some(Round {
                state: Arc::clone(&stream.state),
                stop: Arc::clone(&stream.stop),
                open: Some(open),
            })),
            State::Busy => {
                *slot = State::Busy;
                Err("this change stream is already waiting for an event; a change stream is not for \
                     concurrent use")
            }
            closed @ (State::Done | State::Closing) => {
                *slot = closed;
                Ok(None)
            }
            State::Cancelled => {
                *slot = State::Cancelled;
                Err("a wait on this change stream was cancelled, which closed it; resume with a new \
                     watch(resume_after=stream.resume_token)")
            }
        }
    }

    async fn run(mut self, manager: &Manager) -> Result<Outcome, CoreError> {
        let open = self.open.as_mut().expect("present until finished");
        let stop = Arc::clone(&self.stop);
        let r = tokio::select! {
            r = manager.next_change(&mut open.stream, &open.lease, open.session.as_deref()) => Some(r),
            // Closed from another thread: abandon the getMore; releasing the stream kills its cursor.
            _ = stop.notified() => None,
        };
        let open = self.open.take().expect("present until finished");
        let mut slot = self.state.lock();
        let closing = matches!(*slot, State::Closing);
        match r {
            None => {
                *slot = State::Done;
                drop(slot);
                release(open);
                Ok((None, None))
            }
            Some(Ok(Change { event, token, alive })) => {
                if alive && !closing {
                    *slot = State::Ready(open);
                } else {
                    // Invalidated (its collection dropped or renamed): the server closed the cursor.
                    *slot = State::Done;
                    drop(slot);
                    release(open);
                }
                Ok((event.map(|d| d.into_bytes()), token.map(|d| d.into_bytes())))
            }
            Some(Err(e)) => {
                // The driver already resumed after any resumable error: this one ends the stream.
                *slot = State::Done;
                drop(slot);
                release(open);
                Err(e)
            }
        }
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            *self.state.lock() = State::Cancelled;
            release(open);
        }
    }
}

fn to_python(py: Python<'_>, round: Outcome) -> (Option<Py<PyBytes>>, Option<Py<PyBytes>>) {
    let (event, token) = round;
    (event.map(|b| PyBytes::new(py, &b).unbind()), token.map(|b| PyBytes::new(py, &b).unbind()))
}

impl PyRawChangeStream {
    /// A stream inherited through fork cannot continue: its server cursor lives on the parent's
    /// connection. Forget it (closing would disturb the parent) and say so.
    fn check_process(&self) -> PyResult<()> {
        if self.generation == forklock::generation() {
            return Ok(());
        }
        if let State::Ready(open) = std::mem::replace(&mut *self.state.lock(), State::Done) {
            std::mem::forget(open);
        }
        Err(invalid_operation(
            "this change stream was opened before os.fork(); watch again (resume_after=its resume_token) \
             in this process",
        ))
    }
}

#[pymethods]
impl PyRawChangeStream {
    /// One round: `(event, token)`, each BSON bytes or None. The event is None when no change came
    /// within maxAwaitTimeMS (or the stream is closed); the token is `{"_id": resume token}`.
    #[allow(clippy::type_complexity)]
    fn try_next(&self, py: Python<'_>) -> PyResult<(Option<Py<PyBytes>>, Option<Py<PyBytes>>)> {
        self.check_process()?;
        let Some(round) = Round::start(self).map_err(invalid_operation)? else {
            return Ok((None, None));
        };
        let manager = &self.manager;
        let scope = self.scope(py);
        match block_on(py, scoped(scope, round.run(manager))) {
            Ok(r) => Ok(to_python(py, r)),
            Err(e) => Err(error(py, &self.manager, e)),
        }
    }

    /// `try_next` as an asyncio awaitable; cancelling it closes the stream.
    fn try_next_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_process()?;
        let round = Round::start(self).map_err(invalid_operation)?;
        let manager = Arc::clone(&self.manager);
        let scope = self.scope(py);
        aio::awaitable(py, move || async move {
            let r = match round {
                Some(round) => scoped(scope, round.run(&manager)).await,
                None => Ok((None, None)),
            };
            aio::deliver(move |py| match r {
                Ok(r) => Ok(to_python(py, r)),
                Err(e) => Err(error(py, &manager, e)),
            })
        })
    }

    /// The resume token the stream was opened with (the server's initial one), as `{"_id": token}`.
    #[getter]
    fn initial_token<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.initial_token.as_deref().map(|b| PyBytes::new(py, b))
    }

    /// Kills the server cursor (if still open) and returns the lease. Idempotent. A round in progress
    /// in another thread stops at once (returning no event) and releases the stream.
    fn close(&self, py: Python<'_>) {
        let close = || {
            let mut slot = self.state.lock();
            match std::mem::replace(&mut *slot, State::Done) {
                State::Ready(open) => {
                    drop(slot);
                    release(open);
                }
                State::Busy | State::Closing => {
                    *slot = State::Closing;
                    // A stored permit if the round has not started waiting yet.
                    self.stop.notify_one();
                }
                other @ State::Cancelled => *slot = other,
                State::Done => {}
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

impl Drop for PyRawChangeStream {
    fn drop(&mut self) {
        if self.generation != forklock::generation() {
            return;
        }
        let mut slot = self.state.lock();
        if let State::Ready(open) = std::mem::replace(&mut *slot, State::Done) {
            drop(slot);
            release(open);
        }
    }
}
