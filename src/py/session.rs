//! `_core.Session`: one tenant's client session, for the Python `ClientSession` / `AsyncClientSession`.
//!
//! `end()` lets go of the core session at once (aborting an open transaction and returning the tenant's
//! lease), even while Python objects still refer to this one: a traceback kept alive by a reference
//! cycle must not hold a tenant's pool open until the garbage collector runs.

use std::sync::Arc;

use mongodb::bson::RawDocumentBuf;
use mongodb::options::TransactionOptions;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::aio;
use super::blocking::block_on;
use super::manager::error;
use crate::core::manager::{CoreError, Manager, TenantSession};

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

    /// Lets go of the core session: once no operation, cursor or stream uses it any more, the driver
    /// aborts its open transaction (in the background) and the tenant's lease is returned.
    fn end(&self, py: Python<'_>) {
        let taken = self.inner.lock().take();
        py.detach(move || drop(taken));
    }

    /// Starts a transaction; options are `readConcern`, `writeConcern`, `maxCommitTimeMS` as BSON.
    fn start_transaction(&self, py: Python<'_>, options: &[u8]) -> PyResult<()> {
        let options = transaction_options(options)?;
        let inner = self.handle(py)?;
        block_on(py, self.manager.start_transaction(&inner, options)).map_err(|e| error(py, &self.manager, e))
    }

    fn commit_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.handle(py)?;
        block_on(py, self.manager.commit_transaction(&inner)).map_err(|e| error(py, &self.manager, e))
    }

    fn abort_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.handle(py)?;
        block_on(py, self.manager.abort_transaction(&inner)).map_err(|e| error(py, &self.manager, e))
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
        aio::awaitable(py, move || async move {
            let r = manager.commit_transaction(&inner).await;
            aio::deliver(move |py| r.map_err(|e| error(py, &manager, e)))
        })
    }

    fn abort_transaction_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (inner, manager) = (self.handle(py)?, Arc::clone(&self.manager));
        aio::awaitable(py, move || async move {
            let r = manager.abort_transaction(&inner).await;
            aio::deliver(move |py| r.map_err(|e| error(py, &manager, e)))
        })
    }
}
