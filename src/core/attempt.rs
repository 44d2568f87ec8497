//! How one operation's attempts run, once the manager holds its lease and quota slot: commands with the
//! read retries the caller asked for (`read!`), writes outside a session as the core's retryable writes
//! (`retry.rs`), and the driver's typed writes for the one case left to them (`ops/typed.rs`); each
//! attempt bounded by socketTimeoutMS (`deadline.rs`), and errors labelled as pymongo labels them
//! (`labels.rs`). A cursor's later batches and the end of a
//! transaction are bounded too (`next_batch`, `commit`, `abort`); a change stream's rounds in
//! `change_stream.rs`.

use std::time::Duration;

use mongodb::bson::{RawDocument, RawDocumentBuf};
use mongodb::error::{
    ErrorKind, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::ClientOptions;
use mongodb::{ClientSession, Database};

use super::deadline;
use super::labels::{self, Labelled};
use super::manager::CoreError;
use super::ops::{self, command, cursor, invalid, to_raw, typed, write, Op, Opened};
use super::retry::{self, Reported, RetrySessions};

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

/// Runs a read's attempt (`$attempt`, an expression evaluated afresh for each attempt, so a session in
/// it is reborrowed with `as_deref_mut`, which clippy takes for needless in the last one), and once more
/// after a retryable error if `$retry`, as pymongo retries reads (`retry::is_retryable_read_error`);
/// each attempt is bounded by socketTimeoutMS. Of two failures, the one `retry::after_failed_read_retry`
/// picks is reported.
macro_rules! read {
    ($limit:expr, $context:expr, $retry:expr, $attempt:expr) => {{
        match deadline::bounded($limit, $context, $attempt).await {
            Err(first) if $retry && retry::is_retryable_read_error(&first.error) => {
                match deadline::bounded($limit, $context, $attempt).await {
                    Err(e) if retry::after_failed_read_retry(no_server(&e)) == Reported::First => Err(first),
                    r => r,
                }
            }
            r => r,
        }
    }};
}

fn no_server(e: &Labelled) -> bool {
    matches!(*e.error.kind, ErrorKind::ServerSelection { .. })
}

/// A caller's driver session, as an attempt needs to know it.
pub struct InSession<'a> {
    pub session: &'a mut ClientSession,
    /// Whether a transaction is open in it.
    pub in_transaction: bool,
    /// Whether it is causally consistent (the driver keeps its own options to itself).
    pub causal: bool,
}

/// Runs a one-reply operation (see the module's comment).
pub async fn execute(
    db: &Database,
    retry_sessions: &RetrySessions,
    op: Op,
    spec: &RawDocument,
    docs: Vec<RawDocumentBuf>,
    session: Option<InSession<'_>>,
    settings: Settings,
) -> Result<Option<RawDocumentBuf>, Labelled> {
    let Settings { socket_timeout: limit, retry_writes, retry_reads } = settings;
    match (op, session) {
        (Op::Command, session) => command(db, spec, session, limit, retry_reads).await.map(Some),
        (Op::RetryableWrite, None) => {
            write::retryable_write(db, retry_sessions, spec, retry_writes, limit).await
        }
        (Op::InsertOne, None) => write::insert_one(db, retry_sessions, spec, docs, retry_writes, limit).await,
        (op, Some(InSession { session, in_transaction, .. })) => {
            let context = labels::context(op, in_transaction, retry_writes);
            deadline::bounded(limit, context, typed::execute(db, op, spec, docs, session)).await.map(Some)
        }
        (op, None) => {
            Err(invalid(format!("{op:?} runs in a session only; send its command outside one")).into())
        }
    }
}

/// A command as the caller built it: a read it marked retryable is retried (`read!`) and, in a causally
/// consistent session, ordered after the session's operation time; a write it marked as one takes the
/// client's write concern (see `ops/command.rs`). Inside a transaction, neither: the driver numbers the
/// command into the transaction, and nothing is retried statement by statement.
#[allow(clippy::needless_option_as_deref)] // see `read!`
async fn command(
    db: &Database,
    spec: &RawDocument,
    session: Option<InSession<'_>>,
    limit: Option<Duration>,
    retry_reads: bool,
) -> Result<RawDocumentBuf, Labelled> {
    let in_transaction = session.as_ref().is_some_and(|s| s.in_transaction);
    let causal = session.as_ref().is_some_and(|s| s.causal) && !in_transaction;
    let command = command::Command::parse(spec, db.write_concern(), in_transaction)?;
    let retry = retry_reads && command.retryable && !in_transaction;
    let context = labels::context(Op::Command, in_transaction, false);
    let mut session = session.map(|s| s.session);
    let reply = read!(limit, context, retry, {
        let c = command.for_session(session.as_deref(), causal)?;
        command::run(db, c, command.criteria.clone(), session.as_deref_mut())
    })?;
    Ok(to_raw(reply)?)
}

/// Opens a cursor (its first batch is the only attempt the deadline bounds), retried as a read
/// (`read!`) when the caller marked it retryable, outside a transaction.
#[allow(clippy::needless_option_as_deref)] // see `read!`
pub async fn open_cursor(
    db: &Database,
    spec: &RawDocument,
    session: Option<InSession<'_>>,
    settings: Settings,
) -> Result<Opened, Labelled> {
    let in_transaction = session.as_ref().is_some_and(|s| s.in_transaction);
    let causal = session.as_ref().is_some_and(|s| s.causal) && !in_transaction;
    let retry = settings.retry_reads && !in_transaction && cursor::is_retryable(spec);
    let context = labels::context(Op::Command, in_transaction, false);
    let mut session = session.map(|s| s.session);
    read!(
        settings.socket_timeout,
        context,
        retry,
        cursor::open_cursor(db, spec, session.as_deref_mut(), causal)
    )
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
    let context = labels::context(Op::Command, in_transaction, false);
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
