//! Module-level policy functions: stable grouping and the design document's pool sizing.

use pyo3::prelude::*;

use crate::core::policy;

/// The group (0..groups) a tenant belongs to; identical in every process and after restarts.
#[pyfunction]
pub fn group_of(tenant: &str, groups: u32) -> PyResult<u32> {
    if groups == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err("groups must be at least 1"));
    }
    Ok(policy::group_of(tenant, groups))
}

/// `(user_pool_size, max_users)` for `concurrent_users` users making `requests_per_user` concurrent
/// requests each, within `available_connections` server connections.
#[pyfunction]
#[pyo3(signature = (concurrent_users, requests_per_user=5, available_connections=10000))]
pub fn calculate_pool_size(
    concurrent_users: u64,
    requests_per_user: u64,
    available_connections: u64,
) -> (u64, u64) {
    policy::calculate_pool_size(concurrent_users, requests_per_user, available_connections)
}
