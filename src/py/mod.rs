//! The PyO3 layer: one file per Python-visible class, plus the error mapping.

mod cursor;
mod errors;
mod manager;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<manager::PyManager>()?;
    m.add_class::<cursor::PyRawCursor>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
