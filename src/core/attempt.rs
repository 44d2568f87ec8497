//! How one operation's attempts run, once the manager holds its lease and quota slot: writes outside a
//! session on the core's retryable writes (`retry.rs`), everything else on the driver's typed operations;
//! each attempt bounded by socketTimeoutMS (`deadline.rs`), a read cut short by it run once more, and
//! errors labelled as pymongo labels them (`labels.rs`).

use std::time::Duration;

use mongodb::bson::{RawDocument, RawDocumentBuf};
use mongodb::options::ClientOptions;
use mongodb::{ClientSession, Database};

use super::deadline;
use super::labels::{self, Labelled};
use super::manager::CoreError;
use super::ops::{self, CursorOp, Op, Opened};
use super::retry::Stash;

/// The client settings that decide how attempts run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// socketTimeoutMS: None, no deadline.
    pub socket_timeout: Option<Duration>,
    pub retry_writes: bool,
    pub retry_reads: bool,
}

impl Settings {
    /// `retryWrites` and `retryReads` are on unless turned off, as in pymongo.
    pub fn new(socket_timeout: Option<Duration>, options: &ClientOptions) -> Settings {
        Settings {
            socket_timeout,
            retry_writes: options.retry_writes != Some(false),
            retry_reads: options.retry_reads != Some(false),
        }
    }
}

/// A caller's driver session, and whether a transaction is open in it.
pub type InSession<'a> = Option<(&'a mut ClientSession, bool)>;

/// Runs a one-reply operation (see the module's comment).
pub async fn execute(
    db: &Database,
    stash: &Stash,
    op: Op,
    spec: &RawDocument,
    docs: Vec<RawDocumentBuf>,
    session: InSession<'_>,
    settings: Settings,
) -> Result<Option<RawDocumentBuf>, Labelled> {
    let Settings { socket_timeout: limit, retry_writes, retry_reads } = settings;
    match session {
        Some((s, in_transaction)) => {
            let context = labels::context(op, in_transaction, retry_writes);
            deadline::bounded(limit, context, ops::execute(db, op, spec, docs, Some(s))).await
        }
        // In a caller's session the write goes out as a plain command (see Op::RetryableWrite).
        None if op == Op::RetryableWrite => ops::retryable_write(db, stash, spec, retry_writes, limit).await,
        None if op == Op::InsertOne => ops::insert_one(db, stash, spec, docs, retry_writes, limit).await,
        None if deadline::is_retryable_read(op) => {
            let again = || ops::execute(db, op, spec, Vec::new(), None);
            deadline::bounded_read(limit, retry_reads, ops::execute(db, op, spec, docs, None), again).await
        }
        None => {
            let context = labels::context(op, false, retry_writes);
            deadline::bounded(limit, context, ops::execute(db, op, spec, docs, None)).await
        }
    }
}

/// Opens a cursor (its first batch is the only attempt the deadline bounds).
pub async fn open_cursor(
    db: &Database,
    op: CursorOp,
    spec: &RawDocument,
    session: InSession<'_>,
    settings: Settings,
) -> Result<Opened, Labelled> {
    let limit = settings.socket_timeout;
    match session {
        Some((s, in_transaction)) => {
            let context = labels::context(Op::FindOne, in_transaction, false);
            deadline::bounded(limit, context, ops::open_cursor(db, op, spec, Some(s))).await
        }
        None => {
            let retry = settings.retry_reads && deadline::is_retryable_cursor(op, spec);
            let again = || ops::open_cursor(db, op, spec, None);
            deadline::bounded_read(limit, retry, ops::open_cursor(db, op, spec, None), again).await
        }
    }
}

impl From<Labelled> for CoreError {
    fn from(l: Labelled) -> Self {
        if l.added_labels() {
            CoreError::Labelled(Box::new(l))
        } else {
            CoreError::Driver(l.error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_on_unless_turned_off() {
        let mut options = ClientOptions::default();
        let s = Settings::new(None, &options);
        assert!(s.retry_writes && s.retry_reads);
        options.retry_writes = Some(false);
        options.retry_reads = Some(false);
        let s = Settings::new(Some(Duration::from_secs(1)), &options);
        assert!(!s.retry_writes && !s.retry_reads);
        assert_eq!(s.socket_timeout, Some(Duration::from_secs(1)));
    }
}
