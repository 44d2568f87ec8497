//! `_core.RawCursor`: a server cursor handing out one server batch at a time as BSON bytes, which the
//! Python `Cursor` decodes with pymongo's C decoder.

use std::sync::Arc;

use mongodb::raw_batch_cursor::RawBatchCursor;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::errors::core_error;
use crate::core::manager::{CoreError, Manager, TenantPool};
use crate::core::ops;
use crate::core::registry::Lease;
use crate::core::runtime;

struct Open {
    cursor: RawBatchCursor,
    // Keeps the tenant's pool open for as long as the server cursor lives.
    lease: Lease<TenantPool>,
}

#[pyclass(module = "tenantpool._core", name = "RawCursor", frozen)]
pub struct PyRawCursor {
    manager: Arc<Manager>,
    open: Mutex<Option<Open>>,
}

impl PyRawCursor {
    pub fn new(manager: Arc<Manager>, cursor: RawBatchCursor, lease: Lease<TenantPool>) -> Self {
        PyRawCursor {
            manager,
            open: Mutex::new(Some(Open { cursor, lease })),
        }
    }
}

/// Drops a cursor inside the runtime: an unexhausted one schedules `killCursors` on the server.
fn release(open: Option<Open>) {
    if let Some(open) = open {
        let rt = runtime::get();
        let _guard = rt.enter();
        drop(open);
    }
}

#[pymethods]
impl PyRawCursor {
    /// The next server batch as consecutive BSON documents, or None once the cursor is exhausted.
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let fetched = py.detach(|| {
            let mut slot = self.open.lock();
            let Some(open) = slot.as_mut() else {
                return Ok(None);
            };
            let manager = &self.manager;
            let r = runtime::get().block_on(async {
                // A getMore uses a connection: it counts against the tenant's quota like any operation.
                let _slot = manager.permit(&open.lease).await?;
                ops::next_batch(&mut open.cursor)
                    .await
                    .map_err(CoreError::Driver)
            });
            if !matches!(r, Ok(Some(_))) {
                release(slot.take());
            }
            r
        });
        match fetched {
            Ok(Some(bytes)) => Ok(Some(PyBytes::new(py, &bytes))),
            Ok(None) => Ok(None),
            Err(e) => {
                let m = Arc::clone(&self.manager);
                Err(core_error(py, e, &move |s: &str| m.scrub(s)))
            }
        }
    }

    /// Kills the server cursor (if still open) and returns the lease. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| release(self.open.lock().take()));
    }

    #[getter]
    fn alive(&self) -> bool {
        self.open.lock().is_some()
    }
}

impl Drop for PyRawCursor {
    fn drop(&mut self) {
        release(self.open.get_mut().take());
    }
}
