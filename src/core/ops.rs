//! The operations a tenant can run. Each is the command pymongo would send, built in Python and run
//! by the core as the server's BSON, so results and errors are the server's own: one-reply commands
//! (`command.rs`), writes run as retryable writes (`write.rs`), and cursor commands the core continues
//! with getMore (`cursor.rs`). One case is left to the driver's typed writes (`typed.rs`): a
//! single-document write in an explicit session outside a transaction, which only the driver can number
//! with that session's transaction number (docs/execution-paths.md).
//!
//! A spec is a document: the command under `command` with what the core must know about it
//! (`readPreference`, `retryable`, `causal`, `write`), or for a typed write its arguments with the
//! driver's options under `options` in the server's camelCase names.

use mongodb::bson::{self, Document, RawDocument, RawDocumentBuf};
use mongodb::error::{Error, Result};
use mongodb::options::{ReadPreference, SelectionCriteria};

pub mod command;
pub mod cursor;
pub mod typed;
pub mod write;

pub use cursor::{next_batch, open_cursor, Batch, Opened};

/// Operations that return one reply document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A command as the caller built it (`command.rs`).
    Command,
    /// A write command pymongo retries, run as a retryable write (`write.rs`).
    RetryableWrite,
    /// pymongo's insert of one document, built here around the document as pymongo encoded it.
    InsertOne,
    // The driver's typed writes, in a session outside a transaction only (`typed.rs`).
    InsertMany,
    UpdateOne,
    ReplaceOne,
    DeleteOne,
    FindOneAndUpdate,
    FindOneAndReplace,
    FindOneAndDelete,
}

impl Op {
    pub fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "command" => Op::Command,
            "retryable_write" => Op::RetryableWrite,
            "insert_one" => Op::InsertOne,
            "insert_many" => Op::InsertMany,
            "update_one" => Op::UpdateOne,
            "replace_one" => Op::ReplaceOne,
            "delete_one" => Op::DeleteOne,
            "find_one_and_update" => Op::FindOneAndUpdate,
            "find_one_and_replace" => Op::FindOneAndReplace,
            "find_one_and_delete" => Op::FindOneAndDelete,
            _ => return None,
        })
    }

    /// Whether pymongo retries the operation as a retryable write (outside a transaction).
    pub fn is_retryable_write(self) -> bool {
        !matches!(self, Op::Command)
    }
}

/// A malformed operation spec: a bug in the caller's arguments, reported as InvalidOperation.
#[derive(Debug)]
pub struct InvalidSpec(pub String);

pub(super) fn invalid(message: impl Into<String>) -> Error {
    Error::custom(InvalidSpec(message.into()))
}

pub(super) fn doc_field(spec: &RawDocument, key: &str) -> Result<Document> {
    match spec.get(key).map_err(|e| invalid(format!("{key}: {e}")))? {
        Some(v) => match v.as_document() {
            Some(d) => Document::try_from(d).map_err(|e| invalid(format!("{key}: {e}"))),
            None => Err(invalid(format!("{key} must be a document"))),
        },
        None => Ok(Document::new()),
    }
}

pub(super) fn raw_doc_field(spec: &RawDocument, key: &str) -> Result<RawDocumentBuf> {
    match spec.get_document(key) {
        Ok(d) => Ok(d.to_raw_document_buf()),
        Err(e) => Err(invalid(format!("{key}: {e}"))),
    }
}

pub(super) fn pipeline_field(spec: &RawDocument, key: &str) -> Result<Vec<Document>> {
    let arr = spec.get_array(key).map_err(|e| invalid(format!("{key}: {e}")))?;
    arr.into_iter()
        .map(|v| {
            let v = v.map_err(|e| invalid(format!("{key}: {e}")))?;
            let d = v.as_document().ok_or_else(|| invalid(format!("{key} must hold documents")))?;
            Document::try_from(d).map_err(|e| invalid(format!("{key}: {e}")))
        })
        .collect()
}

/// The read preference of a read, from `spec.readPreference` (the driver's read preference document:
/// `mode`, `tagSets`, `maxStalenessSeconds`, `hedge`); the primary without one. Always explicit, so that
/// no operation falls back on a default of the driver's: the Python layer decides, as pymongo would.
pub(super) fn selection_criteria(spec: &RawDocument) -> Result<SelectionCriteria> {
    match spec.get("readPreference").map_err(|e| invalid(format!("readPreference: {e}")))? {
        None => Ok(SelectionCriteria::ReadPreference(ReadPreference::Primary)),
        Some(v) => {
            let doc = v.as_document().ok_or_else(|| invalid("readPreference must be a document"))?;
            bson::from_slice::<SelectionCriteria>(doc.as_bytes())
                .map_err(|e| invalid(format!("invalid readPreference: {e}")))
        }
    }
}

pub fn to_raw(doc: Document) -> Result<RawDocumentBuf> {
    RawDocumentBuf::from_document(&doc).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_op_name() {
        for name in ["command", "retryable_write", "insert_one", "update_one", "find_one_and_delete"] {
            assert!(Op::parse(name).is_some(), "{name}");
        }
        // The driver's typed reads and administration are gone: Python sends their commands.
        for gone in ["find_one", "count_documents", "update_many", "delete_many", "drop_database", "nope"] {
            assert!(Op::parse(gone).is_none(), "{gone}");
        }
        assert!(Op::UpdateOne.is_retryable_write() && !Op::Command.is_retryable_write());
    }

    #[test]
    fn read_preference_from_spec() {
        use mongodb::options::ReadPreference as Rp;
        use std::time::Duration;
        let primary = selection_criteria(&mongodb::bson::rawdoc! {}).unwrap();
        assert!(matches!(primary, SelectionCriteria::ReadPreference(Rp::Primary)));
        let spec = mongodb::bson::rawdoc! { "readPreference": { "mode": "secondaryPreferred",
        "tagSets": [{ "dc": "ny" }, {}], "maxStalenessSeconds": 120_i32 } };
        match selection_criteria(&spec).unwrap() {
            SelectionCriteria::ReadPreference(Rp::SecondaryPreferred { options: Some(o) }) => {
                assert_eq!(o.tag_sets.as_ref().map(Vec::len), Some(2));
                assert_eq!(o.max_staleness, Some(Duration::from_secs(120)));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            mongodb::bson::rawdoc! { "readPreference": { "mode": "bogus" } },
            mongodb::bson::rawdoc! { "readPreference": { "mode": "primary", "tagSets": [{ "dc": "ny" }] } },
            mongodb::bson::rawdoc! { "readPreference": { "mode": "secondary", "tags": [] } },
            mongodb::bson::rawdoc! { "readPreference": "secondary" },
        ] {
            assert!(selection_criteria(&bad).is_err(), "{bad:?}");
        }
    }
}
