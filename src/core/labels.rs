//! The error labels pymongo would put on an error, for errors whose labels the driver does not set.
//!
//! The driver labels the errors of its own typed operations (`RetryableWriteError` on a network error
//! in a retryable write, `TransientTransactionError` in a transaction...), but its generic command knows
//! nothing of retryable writes, and the driver's `Error` cannot be given labels from outside. So the
//! core's own retryable writes (`retry.rs`) and deadlines (`deadline.rs`) hand their errors on as a
//! `Labelled`: the driver's error and the full set of labels pymongo would give it. Applications and
//! frameworks decide whether to retry from these labels (`has_error_label`).

use std::collections::BTreeSet;

use mongodb::error::{Error, ErrorKind, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};

use super::ops::Op;

/// A driver error with the labels to raise it with (the driver's own, plus those added here).
#[derive(Debug)]
pub struct Labelled {
    pub error: Error,
    pub labels: BTreeSet<String>,
}

impl From<Error> for Labelled {
    fn from(error: Error) -> Self {
        let labels = error.labels().iter().cloned().collect();
        Labelled { error, labels }
    }
}

impl Labelled {
    /// Whether the error carries `label`, from the server, the driver or this module.
    pub fn has(&self, label: &str) -> bool {
        self.labels.contains(label)
    }

    fn with(mut self, label: &str) -> Self {
        self.labels.insert(label.to_owned());
        self
    }

    /// Whether labels were added to the driver's own (else the driver's error says it all).
    pub fn added_labels(&self) -> bool {
        self.labels.len() != self.error.labels().len()
    }
}

/// A connection failure: pymongo's `AutoReconnect` and `NetworkTimeout` (not `NotPrimaryError`, which
/// is a server's reply, nor a wait for a connection).
pub fn is_network(e: &Error) -> bool {
    matches!(*e.kind, ErrorKind::Io(..) | ErrorKind::ConnectionPoolCleared { .. })
}

/// An attempt of a retryable write failed: as pymongo's `_add_retryable_write_error`, the server's
/// labels stay (the server labels a retryable write's not-primary and shutdown errors itself) and a
/// connection failure is labelled `RetryableWriteError`.
pub fn retryable_write_attempt(e: Error) -> Labelled {
    let network = is_network(&e);
    let labelled = Labelled::from(e);
    if network {
        labelled.with(RETRYABLE_WRITE_ERROR)
    } else {
        labelled
    }
}

/// What kind of operation a deadline cut short, for the labels of its `NetworkTimeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// A write pymongo would retry (retryWrites on, outside a transaction).
    RetryableWrite,
    /// Any operation inside a transaction.
    Transaction,
    /// Anything else (reads, commands, non-retryable writes).
    Other,
}

/// The context of operation `op`: pymongo retries (and labels) the single-document writes as
/// retryable writes (`Op::is_retryable_write`), never the multi-document ones, which are commands.
pub fn context(op: Op, in_transaction: bool, retry_writes: bool) -> Context {
    match (in_transaction, op.is_retryable_write() && retry_writes) {
        (true, _) => Context::Transaction,
        (false, true) => Context::RetryableWrite,
        (false, false) => Context::Other,
    }
}

/// The labels of a connection failure in `context`, as pymongo gives them: `RetryableWriteError` in a
/// retryable write, `TransientTransactionError` in a transaction, none otherwise.
pub fn network_failure(e: Error, context: Context) -> Labelled {
    let labelled = Labelled::from(e);
    match context {
        Context::RetryableWrite => labelled.with(RETRYABLE_WRITE_ERROR),
        Context::Transaction => labelled.with(TRANSIENT_TRANSACTION_ERROR),
        Context::Other => labelled,
    }
}

/// The error with `add` labels given and `remove` taken away (pymongo's commit replaces a network
/// error's `TransientTransactionError` with `UnknownTransactionCommitResult`).
pub fn relabel(mut e: Labelled, add: &[&str], remove: &[&str]) -> Labelled {
    for label in remove {
        e.labels.remove(*label);
    }
    for label in add {
        e.labels.insert((*label).to_owned());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> Error {
        Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    #[test]
    fn a_commit_timeout_is_relabelled_as_pymongo_relabels_it() {
        let l = network_failure(io_error(), Context::Transaction);
        let l = relabel(l, &["UnknownTransactionCommitResult"], &[TRANSIENT_TRANSACTION_ERROR]);
        assert!(l.has("UnknownTransactionCommitResult") && !l.has(TRANSIENT_TRANSACTION_ERROR));
        assert!(l.added_labels());
    }

    #[test]
    fn a_network_error_in_a_retryable_write_is_labelled() {
        let l = retryable_write_attempt(io_error());
        assert!(l.has(RETRYABLE_WRITE_ERROR));
        assert!(l.added_labels());
    }

    #[test]
    fn other_errors_keep_only_their_own_labels() {
        let l = retryable_write_attempt(Error::custom("not a network error"));
        assert!(l.labels.is_empty());
        assert!(!l.added_labels());
    }

    #[test]
    fn a_deadline_labels_by_context() {
        assert!(network_failure(io_error(), Context::RetryableWrite).has(RETRYABLE_WRITE_ERROR));
        let t = network_failure(io_error(), Context::Transaction);
        assert!(t.has(TRANSIENT_TRANSACTION_ERROR) && !t.has(RETRYABLE_WRITE_ERROR));
        assert!(network_failure(io_error(), Context::Other).labels.is_empty());
    }

    #[test]
    fn only_single_document_writes_are_retryable() {
        assert_eq!(context(Op::UpdateOne, false, true), Context::RetryableWrite);
        assert_eq!(context(Op::Command, false, true), Context::Other);
        assert_eq!(context(Op::InsertOne, false, false), Context::Other);
        assert_eq!(context(Op::Command, true, true), Context::Transaction);
    }
}
