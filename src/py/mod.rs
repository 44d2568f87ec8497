//! The PyO3 layer: one file per Python-visible class, plus the error mapping.

mod aio;
mod blocking;
mod change_stream;
mod credentials;
mod cursor;
mod errors;
mod manager;
mod monitor;
mod policy;
mod reservation;
mod session;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<manager::PyManager>()?;
    m.add_class::<cursor::PyRawCursor>()?;
    m.add_class::<change_stream::PyRawChangeStream>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<reservation::PyReservation>()?;
    m.add_function(wrap_pyfunction!(policy::group_of, m)?)?;
    m.add_function(wrap_pyfunction!(policy::calculate_pool_size, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Stops tenantpool's runtime threads; registered with `atexit` by the Python package.
#[pyfunction]
fn shutdown(py: Python<'_>) {
    py.detach(crate::core::runtime::shutdown);
}

/// `os.register_at_fork(before=...)`: no thread may be inside the core at the instant of the fork.
#[pyfunction]
fn before_fork(py: Python<'_>) {
    // Without the GIL: a thread inside the core may need it to finish (the tier callback).
    py.detach(crate::core::manager::prepare_fork);
}

/// `os.register_at_fork(after_in_parent=..., after_in_child=...)`.
#[pyfunction]
fn after_fork() {
    crate::core::manager::finish_fork();
}
