//! The Python side of per-tenant credentials: the application's callback as the core's
//! `CredentialSource`, called once per pool creation, like the tier callback (`python_sizer`).

use pyo3::prelude::*;

use crate::core::credentials::{CredentialSource, TenantCredential};

/// `callback(tenant)` returns `(username, password, source, mechanism)`: the Python layer has already
/// turned whatever the application's callback returned into that tuple, with errors that name the
/// tenant and never a value. Called without any core lock held; it takes the GIL.
pub fn python_credentials(callback: Py<PyAny>) -> CredentialSource {
    Box::new(move |tenant: &str| {
        Python::attach(|py| {
            let r = callback.call1(py, (tenant,))?;
            r.extract::<(String, String, Option<String>, Option<String>)>(py)
        })
        .map(|(username, password, source, mechanism)| TenantCredential {
            username,
            password,
            source,
            mechanism,
        })
        // The exception's text, not its arguments' values: a callback's error could carry a secret only
        // if the application put it there.
        .map_err(|e| format!("the credentials callback failed for tenant {tenant:?}: {e}"))
    })
}
