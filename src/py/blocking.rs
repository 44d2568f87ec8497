//! The one way the binding layer waits: without the GIL, and never once the interpreter is exiting.

use std::future::Future;

use pyo3::prelude::*;

use crate::core::manager::CoreError;
use crate::core::runtime::{self, Blocking};

/// Runs `f` without the GIL. Counted by `runtime::shutdown`, which waits at exit until every such call
/// is back in the interpreter; after that, fails at once with `Stopped` without letting go of the GIL.
pub fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, CoreError> + Send,
) -> Result<T, CoreError> {
    let Some(_counted) = Blocking::enter() else {
        return Err(CoreError::Stopped);
    };
    py.detach(f)
}

/// Runs a short `f` that must run even at exit (a close): without the GIL, or with it once the
/// interpreter is exiting, when letting go of the GIL is no longer safe.
pub fn detached_or_here(py: Python<'_>, f: impl FnOnce() + Send) {
    match Blocking::enter() {
        Some(_counted) => py.detach(f),
        None => f(),
    }
}

/// Runs an operation on the runtime and waits for it without the GIL.
pub fn block_on<'a, T: Send + 'static>(
    py: Python<'_>,
    fut: impl Future<Output = Result<T, CoreError>> + Send + 'a,
) -> Result<T, CoreError> {
    detached(py, || runtime::run(fut))
}
