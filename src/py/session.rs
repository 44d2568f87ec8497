//! `_core.Session`: one tenant's client session, for the Python `ClientSession` / `AsyncClientSession`.
//!
//! `end()` lets go of the core session at once (aborting an open transaction and returning the tenant's
//! lease), even while Python objects still refer to this one: a traceback kept alive by a reference
//! cycle must not hold a tenant's pool open until the garbage collector runs.

use std::sync::Arc;

use mongodb::bson::{RawDocumentBuf, Timestamp};
use mongodb::options::TransactionOptions;
use mongodb::{ClientSession, ClusterTime};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::aio;
use super::blocking::block_on;
use super::manager::error;
use super::monitor::scope;
use crate::core::manager::{CoreError, Manager, TenantSession};
use crate::core::monitor::scoped;

#[pyclass(module = "tenantpool._core", name = "Session", frozen)]
pub struct PySession {
    manager: Arc<Manager>,
    /// None once ended. Operations in flight, cursors and change streams hold their own reference.
    inner: Mutex<Option<Arc<TenantSession>>>,
}

impl PySession {
    pub fn new(manager: Arc<Manager>, session: TenantSession) -> Self {
        PySession { manager, inner: Mutex::new(Some(Arc::new(session))) }
    }

    /// The core session, for an operation; InvalidOperation once ended.
    pub fn handle(&self, py: Python<'_>) -> PyResult<Arc<TenantSession>> {
        match self.inner.lock().as_ref() {
            Some(s) => Ok(Arc::clone(s)),
            None => Err(error(py, &self.manager, CoreError::Misuse("Cannot use ended session".into()))),
        }
    }
}

fn cluster_time_bytes<'py>(py: Python<'py>, time: &ClusterTime) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = mongodb::bson::to_vec(time).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &bytes))
}

impl PySession {
    /// Reads the driver session's state: at once if no operation of the session is running, else
    /// once it finishes (without the GIL).
    fn read<T: Send + 'static>(
        &self,
        py: Python<'_>,
        inner: &TenantSession,
        f: impl FnOnce(&ClientSession) -> T + Send,
    ) -> PyResult<T> {
        if let Ok(s) = inner.session.try_lock() {
            return Ok(f(&s));
        }
        block_on(py, async { Ok(f(&*inner.session.lock().await)) }).map_err(|e| error(py, &self.manager, e))
    }

    /// Changes the driver session's state, as `read` reads it.
    fn update(
        &self,
        py: Python<'_>,
        inner: &TenantSession,
        f: impl FnOnce(&mut ClientSession) + Send,
    ) -> PyResult<()> {
        if let Ok(mut s) = inner.session.try_lock() {
            f(&mut s);
            return Ok(());
        }
        block_on(py, async {
            f(&mut *inner.session.lock().await);
            Ok(())
        })
        .map_err(|e| error(py, &self.manager, e))
    }
}

fn transaction_options(spec: &[u8]) -> PyResult<TransactionOptions> {
    let raw = RawDocumentBuf::from_bytes(spec.to_vec()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let doc =
        mongodb::bson::Document::try_from(raw.as_ref()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    mongodb::bson::from_document(doc).map_err(|e| PyValueError::new_err(format!("transaction options: {e}")))
}

#[pymethods]
impl PySession {
    #[getter]
    fn tenant(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.handle(py)?.tenant.clone())
    }

    /// Whether a transaction is open: the core's own state, right even after a cancelled call.
    #[getter]
    fn in_transaction(&self) -> bool {
        self.inner.lock().as_ref().is_some_and(|s| s.in_transaction())
    }

    /// The session's `lsid` document as BSON.
    #[getter]
    fn session_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut bytes = Vec::new();
        self.handle(py)?.id.to_writer(&mut bytes).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The session's cluster time as BSON (`{"clusterTime": Timestamp, "signature": {...}}`), or None
    /// before its first command.
    #[getter]
    fn cluster_time<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let inner = self.handle(py)?;
        let time = self.read(py, &inner, |s| s.cluster_time().cloned())?;
        time.map(|t| cluster_time_bytes(py, &t)).transpose()
    }

    /// The session's operation time as `(time, increment)`, or None before its first command.
    #[getter]
    fn operation_time(&self, py: Python<'_>) -> PyResult<Option<(u32, u32)>> {
        let inner = self.handle(py)?;
        let ts = self.read(py, &inner, |s| s.operation_time())?;
        Ok(ts.map(|t| (t.time, t.increment)))
    }

    /// Advances the cluster time to `cluster_time` (BSON `{"clusterTime": Timestamp, "signature": {...}}`)
    /// if it is later; the Python layer has checked the types as pymongo does.
    fn advance_cluster_time(&self, py: Python<'_>, cluster_time: &[u8]) -> PyResult<()> {
        let time: ClusterTime = mongodb::bson::from_slice(cluster_time).map_err(|e| {
            PyValueError::new_err(format!(
                "cluster_time must be a session's cluster_time ({{'clusterTime': Timestamp, 'signature': \
                 {{...}}}}): {e}"
            ))
        })?;
        let inner = self.handle(py)?;
        self.update(py, &inner, move |s| s.advance_cluster_time(&time))
    }

    /// Advances the operation time to `Timestamp(time, increment)` if it is later.
    fn advance_operation_time(&self, py: Python<'_>, time: u32, increment: u32) -> PyResult<()> {
        let inner = self.handle(py)?;
        self.update(py, &inner, move |s| s.advance_operation_time(Timestamp { time, increment }))
    }

    /// Lets go of the core session: once no operation, cursor or stream uses it any more, the driver
    /// aborts its open transaction (in the background) and the tenant's lease is returned. Returns the
    /// session's cluster time (BSON) and operation time, which pymongo's ended sessions still report
    /// (None for either if an operation of the session is still running).
    #[allow(clippy::type_complexity)]
    fn end<'py>(&self, py: Python<'py>) -> PyResult<(Option<Bound<'py, PyBytes>>, Option<(u32, u32)>)> {
        let taken = self.inner.lock().take();
        let times = taken
            .as_ref()
            .and_then(|s| s.session.try_lock().ok().map(|s| (s.cluster_time().cloned(), s.operation_time())));
        py.detach(move || drop(taken));
        let (cluster_time, operation_time) = times.unwrap_or((None, None));
        let cluster_time = cluster_time.map(|t| cluster_time_bytes(py, &t)).transpose()?;
        Ok((cluster_time, operation_time.map(|t| (t.time, t.increment))))
    }

    /// Starts a transaction; options are `readConcern`, `writeConcern`, `maxCommitTimeMS` as BSON.
    fn start_transaction(&self, py: Python<'_>, options: &[u8]) -> PyResult<()> {
        let options = transaction_options(options)?;
        let inner = self.handle(py)?;
        block_on(py, self.manager.start_transaction(&inner, options)).map_err(|e| error(py, &self.manager, e))
    }

    fn commit_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.handle(py)?;
        let scope = scope(py, &self.manager, &inner.tenant);
        block_on(py, scoped(scope, self.manager.commit_transaction(&inner)))
            .map_err(|e| error(py, &self.manager, e))
    }

    fn abort_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.handle(py)?;
        let scope = scope(py, &self.manager, &inner.tenant);
        block_on(py, scoped(scope, self.manager.abort_transaction(&inner)))
            .map_err(|e| error(py, &self.manager, e))
    }

    /// `start_transaction` as an asyncio awaitable (the driver may wait for server selection).
    fn start_transaction_async<'py>(&self, py: Python<'py>, options: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let options = transaction_options(options)?;
        let (inner, manager) = (self.handle(py)?, Arc::clone(&self.manager));
        aio::awaitable(py, move || async move {
            let r = manager.start_transaction(&inner, options).await;
            aio::deliver(move |py| r.map_err(|e| error(py, &manager, e)))
        })
    }

    fn commit_transaction_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (inner, manager) = (self.handle(py)?, Arc::clone(&self.manager));
        let scope = scope(py, &manager, &inner.tenant);
        aio::awaitable(py, move || async move {
            let r = scoped(scope, manager.commit_transaction(&inner)).await;
            aio::deliver(move |py| r.map_err(|e| error(py, &manager, e)))
        })
    }

    fn abort_transaction_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (inner, manager) = (self.handle(py)?, Arc::clone(&self.manager));
        let scope = scope(py, &manager, &inner.tenant);
        aio::awaitable(py, move || async move {
            let r = scoped(scope, manager.abort_transaction(&inner)).await;
            aio::deliver(move |py| r.map_err(|e| error(py, &manager, e)))
        })
    }
}
