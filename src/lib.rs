//! tenantpool: per-tenant MongoDB connection pools with a Rust core.
//!
//! `core` is plain Rust (registry, policies, operations); `py` is the PyO3 layer over it.

pub mod core;
mod py;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
