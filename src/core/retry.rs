//! Retryable writes for commands the driver only runs generically (pymongo's `bulk_write` batches).
//!
//! The driver makes its typed writes retryable by adding a `txnNumber` from its session, but it does not
//! do so for a generic command, and it keeps a session's transaction number to itself. So these writes
//! run in driver sessions that tenantpool keeps to itself for the client's whole life, numbering their
//! writes itself, far above any number the driver used on the session before: a session that had a
//! number of ours must never go back to the driver's pool, where the driver would later send a lower
//! number on the same `lsid` and the server refuse it as too old. So they are kept even when idle (a
//! session the server has timed out is simply started afresh under the same `lsid`).
//!
//! The retry follows the retryable writes specification as pymongo applies it: one retry, with the same
//! `lsid` and `txnNumber` (so the server applies the write at most once), after a network error or an
//! error labelled `RetryableWriteError` (in a failed reply or beside a write concern error); if the
//! retry fails with `NoWritesPerformed` or finds no server, the first error is the one reported, else
//! the retry's. Either carries the labels pymongo would give it (`labels.rs`): a connection failure in
//! a retryable write is labelled `RetryableWriteError`, which the driver's generic command does not do.
//! A retry refused by the primary that had just stepped down, which pymongo would not have sent there,
//! goes once more, to the new primary (see `sent_to_a_stale_primary`).

use std::sync::atomic::{AtomicBool, Ordering};

use mongodb::bson::{Document, RawDocumentBuf};
use std::time::Duration;

use mongodb::error::{Error, ErrorKind, Result, NO_WRITES_PERFORMED, RETRYABLE_WRITE_ERROR};
use mongodb::{Client, ClientSession, Database};
use parking_lot::Mutex;

use super::deadline;
use super::labels::{self, Labelled};
use super::runtime;

/// The first `txnNumber` of a session: the driver may have used the session (from its pool) before us,
/// numbering its writes from 1, and the server refuses a number lower than the last it saw.
const FIRST_TXN_NUMBER: i64 = 1 << 32;

/// The server's refusal of `txnNumber` outside a replica set or sharded cluster.
const ILLEGAL_OPERATION: i32 = 20;

struct Numbered {
    session: ClientSession,
    /// The last `txnNumber` this session sent.
    txn_number: i64,
}

/// The sessions one driver client lends to retryable commands, and whether its server takes them.
#[derive(Default)]
pub struct RetrySessions {
    idle: Mutex<Vec<Numbered>>,
    closed: AtomicBool,
    /// Set once a server refused `txnNumber` (a standalone): then writes run without retry, as in pymongo.
    unsupported: AtomicBool,
}

impl RetrySessions {
    /// Takes every idle session so the client can be shut down (the driver's `shutdown` waits for every
    /// session to be dropped); sessions still lent out are dropped when they come back.
    pub fn close(&self) -> Vec<ClientSession> {
        self.closed.store(true, Ordering::SeqCst);
        std::mem::take(&mut *self.idle.lock()).into_iter().map(|n| n.session).collect()
    }

    async fn take(&self, client: &Client) -> Result<Numbered> {
        if let Some(n) = self.idle.lock().pop() {
            return Ok(n);
        }
        // Causal consistency would add nothing to a write and costs an `afterClusterTime` on reads.
        let session = client.start_session().causal_consistency(false).await?;
        Ok(Numbered { session, txn_number: FIRST_TXN_NUMBER })
    }

    fn give(&self, numbered: Numbered) {
        let mut idle = self.idle.lock();
        // Checked under the lock `close` takes, so no session is left behind after a close.
        if !self.closed.load(Ordering::SeqCst) {
            idle.push(numbered);
        }
    }
}

impl Drop for RetrySessions {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock());
        match runtime::live() {
            Some(rt) => {
                let _guard = rt.enter();
                drop(idle);
            }
            // At process exit there is no runtime to return them on: leave them to the OS.
            None => std::mem::forget(idle),
        }
    }
}

/// A session lent out; goes back to its RetrySessions however the command ends, cancellation included.
struct Lent<'a> {
    retry_sessions: &'a RetrySessions,
    numbered: Option<Numbered>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.numbered.take() {
            self.retry_sessions.give(n);
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Retry,
}

/// Whether a failed first attempt may be retried.
pub fn after_error(labels_retryable: bool, network: bool) -> Verdict {
    if labels_retryable || network {
        Verdict::Retry
    } else {
        Verdict::Done
    }
}

/// Whether a reply that succeeded as a command still asks for a retry: a write concern error the server
/// labelled retryable (a primary stepping down while waiting for replication, say).
pub fn after_reply(reply: &Document) -> Verdict {
    let labelled = reply
        .get_array("errorLabels")
        .map(|labels| labels.iter().any(|l| l.as_str() == Some(RETRYABLE_WRITE_ERROR)))
        .unwrap_or(false);
    if labelled {
        Verdict::Retry
    } else {
        Verdict::Done
    }
}

fn refuses_txn_number(e: &Error) -> bool {
    // The driver rewrites the server's "Transaction numbers are only allowed on a replica set member or
    // mongos" into advice about retryWrites=false; either way the code is IllegalOperation.
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == ILLEGAL_OPERATION
        && (c.message.contains("Transaction numbers") || c.message.contains("retryable writes")))
}

/// Which error a retryable write that failed twice reports, as pymongo decides it: the first one when
/// the retry performed no write (`NoWritesPerformed`) or found no server to run on (pymongo: "the
/// application may think the write was never attempted"), else the retry's.
pub fn after_failed_retry(retry_labels_no_writes: bool, retry_found_no_server: bool) -> Reported {
    if retry_labels_no_writes || retry_found_no_server {
        Reported::First
    } else {
        Reported::Retry
    }
}

/// The error a failed retryable write reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Reported {
    First,
    Retry,
}

/// Runs a write command as a retryable write (see the module's comment). `retry_writes` is the client's
/// `retryWrites` setting: off, the command runs once, as it is. Each attempt is bounded by `deadline`
/// (socketTimeoutMS, see `deadline.rs`). Errors carry pymongo's labels (see `labels.rs`).
pub async fn write(
    db: &Database,
    retry_sessions: &RetrySessions,
    command: RawDocumentBuf,
    retry_writes: bool,
    deadline: Option<Duration>,
) -> std::result::Result<Document, Labelled> {
    if !retry_writes || retry_sessions.unsupported.load(Ordering::Relaxed) {
        return deadline::within(deadline, db.run_raw_command(command)).await.map_err(Labelled::from);
    }
    let mut lent = Lent { retry_sessions, numbered: Some(retry_sessions.take(db.client()).await?) };
    let numbered = lent.numbered.as_mut().expect("lent until dropped");
    numbered.txn_number += 1;
    let mut numbered_command = command.clone();
    numbered_command.append("txnNumber", numbered.txn_number);

    let first = deadline::within(
        deadline,
        db.run_raw_command(numbered_command.clone()).session(&mut numbered.session),
    )
    .await;
    let first_error = match first {
        Ok(reply) if after_reply(&reply) == Verdict::Done => return Ok(reply),
        Ok(reply) => Ok(reply),
        Err(e) if refuses_txn_number(&e) => {
            retry_sessions.unsupported.store(true, Ordering::Relaxed);
            drop(lent);
            return deadline::within(deadline, db.run_raw_command(command)).await.map_err(Labelled::from);
        }
        Err(e) => {
            let network = labels::is_network(&e);
            let e = labels::retryable_write_attempt(e);
            match after_error(e.has(RETRYABLE_WRITE_ERROR), network) {
                Verdict::Done => return Err(e),
                Verdict::Retry => Err(e),
            }
        }
    };
    let mut second = deadline::within(
        deadline,
        db.run_raw_command(numbered_command.clone()).session(&mut numbered.session),
    )
    .await;
    if let (Ok(reply), Err(e)) = (&first_error, &second) {
        if sent_to_a_stale_primary(reply, e) {
            second = deadline::within(
                deadline,
                db.run_raw_command(numbered_command).session(&mut numbered.session),
            )
            .await;
        }
    }
    match second {
        Ok(reply) => Ok(reply),
        Err(e) => {
            let no_server = matches!(*e.kind, ErrorKind::ServerSelection { .. });
            match after_failed_retry(e.contains_label(NO_WRITES_PERFORMED), no_server) {
                Reported::First => first_error,
                Reported::Retry => Err(labels::retryable_write_attempt(e)),
            }
        }
    }
}

/// The server codes after which pymongo retries a read (`helpers_shared._RETRYABLE_ERROR_CODES`): the
/// "not primary" and "node is recovering" codes, and the network and time-limit ones.
const RETRYABLE_READ_CODES: [i32; 14] =
    [10058, 10107, 13435, 11602, 13436, 189, 11600, 91, 7, 6, 89, 9001, 262, 134];

/// Whether a read that failed with `e` is retried (retryReads): after a connection failure (a deadline's
/// cut included) or a server error with one of pymongo's retryable codes. Each attempt selects its
/// server afresh, and the driver has marked a server that failed this way unknown, so the retry goes
/// to a server known to be fit (the new primary, for a read on the primary).
pub fn is_retryable_read_error(e: &Error) -> bool {
    labels::is_network(e)
        || matches!(&*e.kind, ErrorKind::Command(c) if RETRYABLE_READ_CODES.contains(&c.code))
}

/// Which error a read that failed twice reports, as pymongo decides it: the first when the retry found
/// no server (a persistent outage, which would hide the error that caused it), else the retry's.
pub fn after_failed_read_retry(retry_found_no_server: bool) -> Reported {
    if retry_found_no_server {
        Reported::First
    } else {
        Reported::Retry
    }
}

/// SDAM's "not writable primary" and "node is recovering" codes: the server is not, or no longer, the
/// primary, and the driver marks it unknown when a command fails with one.
fn is_state_change(code: i32) -> bool {
    matches!(code, 10107 | 13435 | 10058 | 11600 | 11602 | 13436 | 189 | 91)
}

/// Whether the retry went to the primary that had just stepped down, which pymongo would not have sent
/// it to. A write concern error with a state-change code (a primary stepping down while the write waited
/// for replication) comes in a successful reply, which the driver's generic command does not treat as
/// an error: so, unlike pymongo, it did not mark the server unknown, and the retry went to the same
/// server, which refused it as not primary, before doing anything. That refusal has now made the driver
/// mark it unknown, so the next attempt waits for the new primary (up to serverSelectionTimeoutMS) as
/// pymongo's retry does. The attempt keeps its `txnNumber`: the server applies it at most once.
pub fn sent_to_a_stale_primary(first_reply: &Document, retry_error: &Error) -> bool {
    let wce_code = first_reply.get_document("writeConcernError").ok().and_then(|w| w.get_i32("code").ok());
    let refused = matches!(&*retry_error.kind, ErrorKind::Command(c) if is_state_change(c.code));
    wce_code.is_some_and(is_state_change) && refused
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    #[test]
    fn network_errors_and_labelled_errors_are_retried() {
        assert_eq!(after_error(true, false), Verdict::Retry);
        assert_eq!(after_error(false, true), Verdict::Retry);
        assert_eq!(after_error(false, false), Verdict::Done);
    }

    #[test]
    fn a_reply_is_retried_only_when_labelled() {
        assert_eq!(after_reply(&doc! {"ok": 1, "n": 1}), Verdict::Done);
        let wce =
            doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 91}, "errorLabels": ["RetryableWriteError"]};
        assert_eq!(after_reply(&wce), Verdict::Retry);
        let other = doc! {"ok": 1, "writeConcernError": {"code": 64}, "errorLabels": ["Other"]};
        assert_eq!(after_reply(&other), Verdict::Done);
    }

    #[test]
    fn a_failed_retry_reports_the_first_error_only_without_writes_or_server() {
        assert_eq!(after_failed_retry(false, false), Reported::Retry);
        assert_eq!(after_failed_retry(true, false), Reported::First);
        assert_eq!(after_failed_retry(false, true), Reported::First);
    }

    #[test]
    fn a_retry_refused_by_a_stepped_down_primary_goes_again() {
        let stepped_down = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 189},
        "errorLabels": ["RetryableWriteError"]};
        let timed_out = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 64}};
        let io = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!sent_to_a_stale_primary(&stepped_down, &io));
        assert!(!sent_to_a_stale_primary(&timed_out, &io));
        assert!(!sent_to_a_stale_primary(&doc! {"ok": 1, "n": 1}, &io));
        assert!(is_state_change(10107) && is_state_change(91) && !is_state_change(64));
    }

    #[test]
    fn reads_are_retried_after_network_errors_and_pymongos_codes_only() {
        use mongodb::error::CommandError;
        let command = |code: i32| {
            let c: CommandError =
                mongodb::bson::from_document(doc! {"code": code, "codeName": "X", "errmsg": "failed"})
                    .unwrap();
            Error::from(ErrorKind::Command(c))
        };
        let io = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_retryable_read_error(&io));
        for code in [91, 189, 10107, 11600, 262, 134, 9001] {
            assert!(is_retryable_read_error(&command(code)), "{code}");
        }
        // A query error, a duplicate key, an interrupted operation, MaxTimeMSExpired: not retried.
        for code in [2, 11000, 11601, 50, 8000] {
            assert!(!is_retryable_read_error(&command(code)), "{code}");
        }
        assert_eq!(after_failed_read_retry(false), Reported::Retry);
        assert_eq!(after_failed_read_retry(true), Reported::First);
    }

    #[test]
    fn closed_retry_sessions_keep_nothing() {
        let retry_sessions = RetrySessions::default();
        assert!(retry_sessions.close().is_empty());
        assert!(retry_sessions.closed.load(Ordering::SeqCst));
    }
}
