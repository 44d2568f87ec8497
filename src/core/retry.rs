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
//! retry fails with `NoWritesPerformed`, the first error is the one reported.

use std::sync::atomic::{AtomicBool, Ordering};

use mongodb::bson::{Document, RawDocumentBuf};
use mongodb::error::{Error, ErrorKind, Result, NO_WRITES_PERFORMED, RETRYABLE_WRITE_ERROR};
use mongodb::{Client, ClientSession, Database};
use parking_lot::Mutex;

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
pub struct Stash {
    idle: Mutex<Vec<Numbered>>,
    closed: AtomicBool,
    /// Set once a server refused `txnNumber` (a standalone): then writes run without retry, as in pymongo.
    unsupported: AtomicBool,
}

impl Stash {
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

impl Drop for Stash {
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

/// A session lent out; goes back to its stash however the command ends, cancellation included.
struct Lent<'a> {
    stash: &'a Stash,
    numbered: Option<Numbered>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.numbered.take() {
            self.stash.give(n);
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

fn is_network(e: &Error) -> bool {
    matches!(*e.kind, ErrorKind::Io(..) | ErrorKind::ConnectionPoolCleared { .. })
}

fn refuses_txn_number(e: &Error) -> bool {
    // The driver rewrites the server's "Transaction numbers are only allowed on a replica set member or
    // mongos" into advice about retryWrites=false; either way the code is IllegalOperation.
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == ILLEGAL_OPERATION
        && (c.message.contains("Transaction numbers") || c.message.contains("retryable writes")))
}

/// Runs a write command as a retryable write (see the module's comment). `retry_writes` is the client's
/// `retryWrites` setting: off, the command runs once, as it is.
pub async fn write(
    db: &Database,
    stash: &Stash,
    command: RawDocumentBuf,
    retry_writes: bool,
) -> Result<Document> {
    if !retry_writes || stash.unsupported.load(Ordering::Relaxed) {
        return db.run_raw_command(command).await;
    }
    let mut lent = Lent { stash, numbered: Some(stash.take(db.client()).await?) };
    let numbered = lent.numbered.as_mut().expect("lent until dropped");
    numbered.txn_number += 1;
    let mut numbered_command = command.clone();
    numbered_command.append("txnNumber", numbered.txn_number);

    let first = db.run_raw_command(numbered_command.clone()).session(&mut numbered.session).await;
    let first_error = match first {
        Ok(reply) if after_reply(&reply) == Verdict::Done => return Ok(reply),
        Ok(reply) => Ok(reply),
        Err(e) if refuses_txn_number(&e) => {
            stash.unsupported.store(true, Ordering::Relaxed);
            drop(lent);
            return db.run_raw_command(command).await;
        }
        Err(e) if after_error(e.contains_label(RETRYABLE_WRITE_ERROR), is_network(&e)) == Verdict::Done => {
            return Err(e)
        }
        Err(e) => Err(e),
    };
    match db.run_raw_command(numbered_command).session(&mut numbered.session).await {
        Err(e) if e.contains_label(NO_WRITES_PERFORMED) => first_error,
        second => second,
    }
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
    fn a_closed_stash_keeps_nothing() {
        let stash = Stash::default();
        assert!(stash.close().is_empty());
        assert!(stash.closed.load(Ordering::SeqCst));
    }
}
