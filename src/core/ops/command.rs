//! A one-reply command the caller built (pymongo's own `find` with `singleBatch`, `count`, `distinct`,
//! an `aggregate` read in one batch, `Database.command`...), run on the driver's generic command.
//!
//! The driver's generic command gives none of what its typed reads do for free, so a command marked as
//! a read gets it here and in `attempt.rs`, as pymongo gives it:
//! - `retryable`: one retry after a retryable error (`retry::is_retryable_read_error`);
//! - `causal`: in a causally consistent session outside a transaction, `readConcern.afterClusterTime`
//!   from the session's operation time. The driver adds it to its typed reads only (for a generic
//!   command it cannot tell a read from a write); inside a transaction it adds it itself, to the first
//!   command, with `startTransaction`, `autocommit` and `txnNumber`, and `$clusterTime` and `lsid` always.

use mongodb::bson::{rawdoc, Document, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp};
use mongodb::error::Result;
use mongodb::options::{SelectionCriteria, WriteConcern};
use mongodb::{ClientSession, Database};

use super::{invalid, selection_criteria};

/// A command read from its spec: `command`, `readPreference`, `retryable`, `causal`.
#[derive(Debug)]
pub struct Command {
    pub command: RawDocumentBuf,
    pub criteria: SelectionCriteria,
    /// A read pymongo retries (retryReads).
    pub retryable: bool,
    /// A read that takes a read concern, ordered after the session's operation time.
    pub causal: bool,
}

impl Command {
    /// `client_wc`, `in_transaction`: the client's write concern, and whether the session it runs in has
    /// a transaction open (see `write_command`).
    pub fn parse(
        spec: &RawDocument,
        client_wc: Option<&WriteConcern>,
        in_transaction: bool,
    ) -> Result<Command> {
        let command = write_command(spec, client_wc, in_transaction)?;
        if command.is_empty() {
            return Err(invalid("command must not be empty"));
        }
        Ok(Command {
            command,
            criteria: selection_criteria(spec)?,
            retryable: flag(spec, "retryable"),
            causal: flag(spec, "causal"),
        })
    }

    /// The command to send in `session` (see the module's comment for when it changes).
    pub fn for_session(
        &self,
        session: Option<&ClientSession>,
        causal_session: bool,
    ) -> Result<RawDocumentBuf> {
        match session.and_then(|s| s.operation_time()) {
            Some(time) if self.causal && causal_session => after_cluster_time(&self.command, time),
            _ => Ok(self.command.clone()),
        }
    }
}

/// The write command under `command` in `spec`, given the client's write concern (the connection
/// string's) when the spec marks it a `write` that carries none, outside a transaction: the driver
/// applies that write concern to its typed writes only, and pymongo's reaches every write. Inside a
/// transaction the transaction's concern rules, and a command may carry none of its own.
pub fn write_command(
    spec: &RawDocument,
    client_wc: Option<&WriteConcern>,
    in_transaction: bool,
) -> Result<RawDocumentBuf> {
    let command = spec.get_document("command").map_err(|e| invalid(format!("command: {e}")))?;
    let mut command = command.to_raw_document_buf();
    if let Some(wc) = client_wc.filter(|_| flag(spec, "write") && !in_transaction) {
        if command.get("writeConcern").map_err(|e| invalid(format!("command: {e}")))?.is_none() {
            command.append("writeConcern", write_concern_document(wc)?);
        }
    }
    Ok(command)
}

/// A write concern as a command carries it (`w`, `wtimeout`, `j`).
pub fn write_concern_document(wc: &WriteConcern) -> Result<RawDocumentBuf> {
    mongodb::bson::to_raw_document_buf(wc).map_err(|e| invalid(format!("writeConcern: {e}")))
}

/// A boolean field of a spec; absent (or not a boolean) is false.
pub(super) fn flag(spec: &RawDocument, key: &str) -> bool {
    spec.get_bool(key).unwrap_or(false)
}

/// The command with `readConcern.afterClusterTime` set to `time`, its read concern's other fields (the
/// level) kept, and its other fields in their order, as pymongo's `_update_read_concern` leaves them.
pub fn after_cluster_time(command: &RawDocument, time: Timestamp) -> Result<RawDocumentBuf> {
    let mut out = RawDocumentBuf::new();
    let mut found = false;
    for entry in command {
        let (key, value) = entry.map_err(|e| invalid(format!("command: {e}")))?;
        if key != "readConcern" {
            out.append(key, value.to_raw_bson());
            continue;
        }
        found = true;
        let RawBsonRef::Document(given) = value else {
            return Err(invalid("readConcern must be a document"));
        };
        let mut merged = RawDocumentBuf::new();
        for field in given {
            let (k, v) = field.map_err(|e| invalid(format!("readConcern: {e}")))?;
            if k != "afterClusterTime" {
                merged.append(k, v.to_raw_bson());
            }
        }
        merged.append("afterClusterTime", time);
        out.append("readConcern", merged);
    }
    if !found {
        out.append("readConcern", rawdoc! { "afterClusterTime": time });
    }
    Ok(out)
}

/// One attempt: the command on the driver's generic command, in the session if any.
pub async fn run(
    db: &Database,
    command: RawDocumentBuf,
    criteria: SelectionCriteria,
    session: Option<&mut ClientSession>,
) -> Result<Document> {
    let action = db.run_raw_command(command).selection_criteria(criteria);
    match session {
        Some(s) => action.session(s).await,
        None => action.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::options::ReadPreference;

    #[test]
    fn parses_the_read_flags() {
        let spec = rawdoc! { "command": { "count": "c" }, "retryable": true, "causal": true,
        "readPreference": { "mode": "nearest" } };
        let c = Command::parse(&spec, None, false).unwrap();
        assert!(c.retryable && c.causal);
        assert!(matches!(c.criteria, SelectionCriteria::ReadPreference(ReadPreference::Nearest { .. })));
        let c = Command::parse(&rawdoc! { "command": { "ping": 1_i32 }, "retryable": 1_i32 }, None, false)
            .unwrap();
        assert!(!c.retryable && !c.causal);
        assert!(matches!(c.criteria, SelectionCriteria::ReadPreference(ReadPreference::Primary)));
        for bad in [rawdoc! {}, rawdoc! { "command": {} }, rawdoc! { "command": "ping" }] {
            assert!(Command::parse(&bad, None, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn after_cluster_time_keeps_the_level_and_the_order() {
        let t = Timestamp { time: 7, increment: 3 };
        let cmd = rawdoc! { "find": "c", "readConcern": { "level": "majority", "afterClusterTime":
        Timestamp { time: 1, increment: 1 } }, "limit": 1_i32 };
        let out = after_cluster_time(&cmd, t).unwrap();
        let keys: Vec<_> = out.iter().map(|e| e.unwrap().0.to_owned()).collect();
        assert_eq!(keys, ["find", "readConcern", "limit"]);
        let rc = out.get_document("readConcern").unwrap();
        assert_eq!(rc.get_str("level").unwrap(), "majority");
        assert_eq!(rc.get_timestamp("afterClusterTime").unwrap(), t);
        assert_eq!(rc.iter().count(), 2);

        let out = after_cluster_time(&rawdoc! { "count": "c" }, t).unwrap();
        assert_eq!(out.get_document("readConcern").unwrap().get_timestamp("afterClusterTime").unwrap(), t);
        assert!(after_cluster_time(&rawdoc! { "count": "c", "readConcern": "x" }, t).is_err());
    }

    #[test]
    fn a_write_concern_is_sent_as_the_server_reads_it() {
        use mongodb::options::Acknowledgment;
        let wc = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .w_timeout(std::time::Duration::from_millis(1500))
            .journal(true)
            .build();
        let doc = write_concern_document(&wc).unwrap();
        assert_eq!(doc.get_str("w").unwrap(), "majority");
        assert_eq!(
            doc.get_i64("wtimeout").or_else(|_| doc.get_i32("wtimeout").map(i64::from)).unwrap(),
            1500
        );
        assert!(doc.get_bool("j").unwrap());
        let nodes =
            write_concern_document(&WriteConcern::builder().w(Acknowledgment::Nodes(2)).build()).unwrap();
        assert_eq!(nodes.iter().count(), 1);
        assert_eq!(nodes.get_i32("w").unwrap(), 2);
    }

    #[test]
    fn a_write_without_a_write_concern_takes_the_clients_outside_a_transaction() {
        let wc = WriteConcern::builder().w(mongodb::options::Acknowledgment::Majority).build();
        let write = rawdoc! { "command": { "update": "c", "updates": [] }, "write": true };
        let sent = write_command(&write, Some(&wc), false).unwrap();
        assert_eq!(sent.get_document("writeConcern").unwrap().get_str("w").unwrap(), "majority");
        // Its own write concern, a transaction, no client write concern, or not a write: left as built.
        let own = rawdoc! { "command": { "update": "c", "writeConcern": { "w": 0_i32 } }, "write": true };
        assert_eq!(
            write_command(&own, Some(&wc), false).unwrap(),
            own.get_document("command").unwrap().to_raw_document_buf()
        );
        for (spec, client, txn) in [(&write, Some(&wc), true), (&write, None, false)] {
            assert!(write_command(spec, client, txn).unwrap().get("writeConcern").unwrap().is_none());
        }
        let read = rawdoc! { "command": { "count": "c" } };
        assert!(write_command(&read, Some(&wc), false).unwrap().get("writeConcern").unwrap().is_none());
    }

    #[test]
    fn only_a_causal_read_in_a_causal_session_changes() {
        let c =
            Command::parse(&rawdoc! { "command": { "count": "c" }, "causal": true }, None, false).unwrap();
        // Without a session, or with one that has no operation time yet, the command goes as built.
        assert_eq!(c.for_session(None, true).unwrap(), c.command);
    }
}
