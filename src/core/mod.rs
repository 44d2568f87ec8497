//! The plain Rust core: no Python in here.

pub mod attempt;
pub mod budget;
pub mod change_stream;
pub mod credentials;
pub mod deadline;
pub mod error;
pub mod exposition;
pub mod forklock;
pub mod labels;
pub mod manager;
pub mod metrics;
pub mod monitor;
pub mod naming;
pub mod ops;
pub mod options;
pub mod policy;
pub mod provision;
pub mod quota;
pub mod registry;
pub mod retry;
pub mod room;
pub mod runtime;
