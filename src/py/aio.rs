//! Awaitables for asyncio, on pyo3-async-runtimes' generic runtime bridge pointed at tenantpool's own
//! tokio runtime (which, unlike a runtime stored once for the process, is rebuilt after a fork).
//!
//! Cancelling the Python awaitable drops the Rust future: its lease and quota slot are released at once.

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime};
use pyo3_async_runtimes::TaskLocals;

use crate::core::runtime;

pub struct TenantRuntime;

pub struct TaskJoinError(tokio::task::JoinError);

impl JoinError for TaskJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

impl Runtime for TenantRuntime {
    type JoinError = TaskJoinError;
    type JoinHandle = Pin<Box<dyn Future<Output = Result<(), TaskJoinError>> + Send>>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = runtime::get().spawn(fut);
        Box::pin(async move { handle.await.map_err(TaskJoinError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let handle = runtime::get().spawn_blocking(f);
        Box::pin(async move { handle.await.map_err(TaskJoinError) })
    }
}

impl ContextExt for TenantRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|c| c.get().cloned()).unwrap_or_default()
    }
}

/// Runs `fut` on the tenantpool runtime and returns an asyncio awaitable of its result.
///
/// `fut` ends in a `Deferred` (see `deliver`): what needs the GIL runs where pyo3-async-runtimes already
/// holds it to resolve the asyncio future, on a blocking-pool thread, and never on the I/O thread. Taking
/// the GIL there would stall every other operation's socket I/O while the event loop holds the GIL.
pub fn awaitable<'py, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Deferred> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<TenantRuntime, _, Deferred>(
        py,
        async move { Ok(fut.await) },
    )
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

impl<'py> IntoPyObject<'py> for Deferred {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok((self.0)(py)?.into_bound(py))
    }
}
