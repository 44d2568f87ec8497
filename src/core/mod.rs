//! The plain Rust core: no Python in here.

pub mod manager;
pub mod metrics;
pub mod naming;
pub mod ops;
pub mod options;
pub mod registry;
pub mod runtime;
