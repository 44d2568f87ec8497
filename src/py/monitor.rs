//! Command events for Python listeners: the core's monitor sink calls the manager's publisher
//! (`tenantpool.monitoring._Publisher`) with the GIL, in the context the operation was started in.
//!
//! Only a manager with listeners has a sink: the others never capture a context nor take the GIL for an
//! event (`scope` returns None at the cost of a field read).

use std::cell::Cell;
use std::sync::Arc;

use mongodb::bson::Document;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::core::manager::Manager;
use crate::core::monitor::{Context, Delivered, Outcome, Scope, Sink};

static COPY_CONTEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

thread_local! {
    static KEEPS_THREAD_STATE: Cell<bool> = const { Cell::new(false) };
}

/// Keeps this runtime thread's Python thread state for the thread's life. Without it each event's
/// attach creates a thread state and drops it again (with the frame stack Python allocates for it):
/// measured with one no-op listener, a `find_one` cost 130-160 µs more CPU than without; with it,
/// 50-60 µs more (pymongo: 20-60). The extra `PyGILState_Ensure` is never released, so the attach's
/// own release finds the state still counted and keeps it; finalization deletes it with the interpreter.
fn keep_thread_state(_py: Python<'_>) {
    KEEPS_THREAD_STATE.with(|keeps| {
        if !keeps.get() {
            // SAFETY: the GIL is held (by `_py`) and the interpreter is not finalizing: this only counts
            // the current thread state once more.
            unsafe { pyo3::ffi::PyGILState_Ensure() };
            keeps.set(true);
        }
    });
}

/// The scope of an operation of `tenant` starting now: None unless the manager has listeners; else
/// with a copy of the caller's `contextvars` context, so that a listener (OpenTelemetry) sees the
/// application's context (its current span) whichever thread the event comes from.
pub fn scope(py: Python<'_>, manager: &Manager, tenant: &str) -> Option<Arc<Scope>> {
    if !manager.monitored() {
        return None;
    }
    let copy = COPY_CONTEXT
        .get_or_try_init(py, || py.import("contextvars")?.getattr("copy_context").map(Bound::unbind))
        .ok()?;
    let context = copy.call0(py).ok().map(|c| Arc::new(c) as Context);
    Some(Scope::new(tenant, context))
}

fn bson_bytes<'py>(py: Python<'py>, doc: &Document) -> Bound<'py, PyBytes> {
    let mut buf = Vec::with_capacity(128);
    // A Document from the driver always serialises; an empty one stands in if it ever does not.
    if doc.to_writer(&mut buf).is_err() {
        buf = vec![5, 0, 0, 0, 0];
    }
    PyBytes::new(py, &buf)
}

/// The sink calling `publisher(kind, tenant, context, command_name, db, request_id, operation_id,
/// (host, port), server_connection_id, duration_micros, document)`; kind 0 started, 1 succeeded,
/// 2 failed. The publisher catches its listeners' errors; one escaping it is reported as unraisable.
pub fn python_sink(publisher: Py<PyAny>) -> Sink {
    Arc::new(move |d: Delivered<'_>| {
        // None once the interpreter is finalizing: the event is dropped.
        Python::try_attach(|py| {
            keep_thread_state(py);
            let (kind, duration, doc) = match &d.outcome {
                Outcome::Started { command } => (0u8, None, bson_bytes(py, command)),
                Outcome::Succeeded { duration, reply } => {
                    (1, Some(duration.as_micros() as u64), bson_bytes(py, reply))
                }
                Outcome::Failed { duration, failure } => {
                    (2, Some(duration.as_micros() as u64), bson_bytes(py, failure))
                }
            };
            let context = d.context.and_then(|c| c.downcast_ref::<Py<PyAny>>()).map(|c| c.bind(py));
            let args = (
                kind,
                d.tenant,
                context,
                d.command_name,
                d.db,
                d.request_id,
                d.operation_id,
                (d.host.as_str(), d.port),
                d.server_connection_id,
                duration,
                doc,
            );
            if let Err(e) = publisher.call1(py, args) {
                e.write_unraisable(py, Some(publisher.bind(py)));
            }
        });
    })
}
