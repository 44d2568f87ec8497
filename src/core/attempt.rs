//! How one operation's attempts run, once the manager holds its lease and quota slot: writes outside a
//! session on the core's retryable writes (`retry.rs`), everything else on the driver's typed operations;
//! each attempt bounded by socketTimeoutMS (`deadline.rs`), a read cut short by it run once more, and
//! errors labelled as pymongo labels them (`labels.rs`). A cursor's later batches and the end of a
//! transaction are bounded too (`next_batch`, `commit`, `abort`); a change stream's rounds in
//! `change_stream.rs`.

use std::time::Duration;

use mongodb::bson::{RawDocument, RawDocumentBuf};
use mongodb::error::{RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::ClientOptions;
use mongodb::{ClientSession, Database};

use super::deadline;
use super::labels::{self, Labelled};
use super::manager::CoreError;
use super::ops::{self, CursorOp, Op, Opened};
use super::retry::RetrySessions;

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
    retry_sessions: &RetrySessions,
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
        None if op == Op::RetryableWrite => {
            ops::retryable_write(db, retry_sessions, spec, retry_writes, limit).await
        }
        None if op == Op::InsertOne => {
            ops::insert_one(db, retry_sessions, spec, docs, retry_writes, limit).await
        }
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

/// A cursor's next batch (a getMore), bounded by socketTimeoutMS as pymongo bounds its read, awaitData
/// or not: pymongo's socket timeout for a getMore is socketTimeoutMS alone (its `maxTimeMS`,
/// maxAwaitTimeMS, is not added), so a tailable-await cursor whose maxAwaitTimeMS exceeds it times out
/// there too. Not retried (pymongo never retries a getMore). Cut short, the caller must drop the cursor:
/// the driver's cursor still holds the abandoned getMore, and dropping it closes that connection and
/// kills the server cursor.
pub async fn next_batch<S>(
    batches: &mut S,
    tailable: bool,
    in_transaction: bool,
    limit: Option<Duration>,
) -> Result<Option<ops::Batch>, Labelled>
where
    S: futures_util::Stream<Item = mongodb::error::Result<mongodb::raw_batch_cursor::RawBatch>> + Unpin,
{
    let context = labels::context(Op::FindOne, in_transaction, false);
    deadline::bounded(limit, context, ops::next_batch(batches, tailable)).await
}

/// Commits the session's transaction, each attempt bounded by socketTimeoutMS. As pymongo's
/// `commit_transaction`: an attempt cut short is retried once (the driver resends the commit with
/// `w: majority`, as pymongo's retry does), and a commit that still timed out is raised with
/// `RetryableWriteError` and `UnknownTransactionCommitResult`, never `TransientTransactionError` (its
/// outcome on the server is unknown).
pub async fn commit(session: &mut ClientSession, limit: Option<Duration>) -> Result<(), Labelled> {
    let first = deadline::bounded(limit, labels::Context::Other, session.commit_transaction()).await;
    let last = match first {
        Err(e) if deadline::cut_short(&e) => {
            deadline::bounded(limit, labels::Context::Other, session.commit_transaction()).await
        }
        r => r,
    };
    last.map_err(|e| match deadline::cut_short(&e) {
        true => labels::relabel(
            e,
            &[RETRYABLE_WRITE_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT],
            &[TRANSIENT_TRANSACTION_ERROR],
        ),
        false => e,
    })
}

/// Aborts the session's transaction, bounded by socketTimeoutMS. pymongo ignores the errors of
/// `abortTransaction` (the server aborts an abandoned transaction at its lifetime limit), and so does
/// the driver: an abort cut short ends quietly too. pymongo retries it once first; the driver refuses a
/// second abort, so here it is not retried.
pub async fn abort(session: &mut ClientSession, limit: Option<Duration>) -> Result<(), Labelled> {
    match deadline::bounded(limit, labels::Context::Other, session.abort_transaction()).await {
        Err(e) if deadline::cut_short(&e) => Ok(()),
        r => r,
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
