//! The core's errors: what went wrong, in words a user can act on. The binding layer maps each to the
//! pymongo exception class an application's `except` clauses expect.

use std::fmt;
use std::time::Duration;

use super::labels::Labelled;
use super::registry::RegistryError;
use super::runtime;

#[derive(Debug)]
pub enum CoreError {
    /// The manager was closed.
    Closed,
    InvalidName(String),
    Configuration(String),
    Driver(mongodb::error::Error),
    /// A driver error with labels the driver did not give it (see `labels.rs`).
    Labelled(Box<Labelled>),
    /// The caller used an object wrongly (e.g. another tenant's session); InvalidOperation in Python.
    Misuse(String),
    /// No room in the connection budget for the tenant's new pool for the whole wait.
    BudgetTimeout {
        tenant: String,
        /// What the pool needs, in words.
        need: String,
        limit: u32,
        reserved: u32,
        in_use: u32,
        waited: Duration,
        /// The option the wait's length came from.
        timeout_option: &'static str,
    },
    /// The tenant's quota stayed full for the whole wait queue timeout.
    WaitQueueTimeout {
        tenant: String,
        quota: u32,
        waited: Duration,
    },
    /// The runtime has shut down: the interpreter is exiting.
    Stopped,
    /// The tenant's client could not authenticate (OperationFailure code 18); the message names the
    /// tenant and its user, never a password.
    Authentication(String),
}

impl From<runtime::Stopped> for CoreError {
    fn from(_: runtime::Stopped) -> Self {
        CoreError::Stopped
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Closed => write!(f, "the UserConnectionManager is closed; create a new one"),
            CoreError::Stopped => write!(f, "tenantpool has stopped because the interpreter is exiting"),
            CoreError::InvalidName(m)
            | CoreError::Configuration(m)
            | CoreError::Misuse(m)
            | CoreError::Authentication(m) => f.write_str(m),
            CoreError::Driver(e) => write!(f, "{e}"),
            CoreError::Labelled(l) => write!(f, "{}", l.error),
            CoreError::WaitQueueTimeout { tenant, quota, waited } => write!(
                f,
                "tenant {tenant:?} already has {quota} operations in flight (its quota) and waited \
                 {} ms for a slot (waitQueueTimeoutMS); raise its pool size or tier, or retry later",
                waited.as_millis()
            ),
            CoreError::BudgetTimeout { tenant, need, limit, reserved, in_use, waited, timeout_option }
                if tenant.starts_with('(') =>
            {
                // One of tenantpool's own clients ("(catalog)", "(move)", "(provisioning)"): no tenant's
                // pool size to lower.
                write!(
                    f,
                    "tenantpool's own client {tenant} waited {} ms ({timeout_option}) for room in the \
                 connection budget ({need}): max_server_connections={limit}, {reserved} reserved, \
                 {in_use} of them by pools in use, none idle to close. Retry once tenants' pools are idle, \
                 or raise max_server_connections if the server can hold more",
                    waited.as_millis()
                )
            }
            CoreError::BudgetTimeout { tenant, need, limit, reserved, in_use, waited, timeout_option } => {
                write!(
                    f,
                    "tenant {tenant:?} has no pool and waited {} ms ({timeout_option}) for room in the \
                 connection budget for one ({need}): max_server_connections={limit}, {reserved} reserved, \
                 {in_use} of them by pools in use, none idle to close. Retry later, lower user_pool_size \
                 (or the tier sizes), use strategy='grouped' or 'shared', or raise max_server_connections \
                 if the server can hold more",
                    waited.as_millis()
                )
            }
        }
    }
}

impl From<RegistryError> for CoreError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Closed => CoreError::Closed,
            RegistryError::Make(m) => CoreError::Configuration(m),
        }
    }
}
