//! `_core.Session`: one tenant's client session, for the Python `ClientSession` wrapper.

use std::sync::Arc;

use mongodb::bson::RawDocumentBuf;
use mongodb::options::TransactionOptions;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::aio;
use super::blocking::block_on;
use super::manager::error;
use crate::core::manager::{Manager, TenantSession};

#[pyclass(module = "tenantpool._core", name = "Session", frozen)]
pub struct PySession {
    manager: Arc<Manager>,
    inner: Arc<TenantSession>,
}

impl PySession {
    pub fn new(manager: Arc<Manager>, session: TenantSession) -> Self {
        PySession { manager, inner: Arc::new(session) }
    }

    pub fn handle(&self) -> Arc<TenantSession> {
        Arc::clone(&self.inner)
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
    fn tenant(&self) -> String {
        self.inner.tenant.clone()
    }

    /// Starts a transaction; options are `readConcern`, `writeConcern`, `maxCommitTimeMS` as BSON.
    fn start_transaction(&self, py: Python<'_>, options: &[u8]) -> PyResult<()> {
        let options = transaction_options(options)?;
        let inner = &self.inner;
        block_on(py, inner.start_transaction(options)).map_err(|e| error(py, &self.manager, e))
    }

    fn commit_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        block_on(py, inner.commit_transaction()).map_err(|e| error(py, &self.manager, e))
    }

    fn abort_transaction(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        block_on(py, inner.abort_transaction()).map_err(|e| error(py, &self.manager, e))
    }

    fn commit_transaction_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (inner, manager) = (Arc::clone(&self.inner), Arc::clone(&self.manager));
        aio::awaitable(py, async move {
            let r = inner.commit_transaction().await;
            Python::attach(|py| r.map_err(|e| error(py, &manager, e)))
        })
    }

    fn abort_transaction_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (inner, manager) = (Arc::clone(&self.inner), Arc::clone(&self.manager));
        aio::awaitable(py, async move {
            let r = inner.abort_transaction().await;
            Python::attach(|py| r.map_err(|e| error(py, &manager, e)))
        })
    }
}
