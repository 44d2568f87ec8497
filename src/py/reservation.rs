//! `_core.Reservation`: room in a deployment's connection budget held by a client that tenantpool opens
//! outside the core (the tenant catalog's and a move's pymongo clients), released by its owner once
//! that client is closed.

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::core::budget::Held;

#[pyclass(module = "tenantpool._core", name = "Reservation", frozen)]
pub struct PyReservation {
    held: Mutex<Held>,
}

impl PyReservation {
    pub fn new(held: Held) -> Self {
        PyReservation { held: Mutex::new(held) }
    }
}

#[pymethods]
impl PyReservation {
    /// Gives the room back; False if it was given back already. Dropping the object gives it back too,
    /// and in a forked child it gives nothing back (the child's budget starts empty).
    fn release(&self) -> bool {
        self.held.lock().release()
    }

    /// Server connections held (0 once released).
    #[getter]
    fn units(&self) -> u32 {
        self.held.lock().units()
    }

    /// The name the budget's figures list it under, e.g. "(catalog)".
    #[getter]
    fn what(&self) -> String {
        self.held.lock().what().to_owned()
    }

    fn __repr__(&self) -> String {
        let held = self.held.lock();
        format!("Reservation({:?}, units={})", held.what(), held.units())
    }
}
