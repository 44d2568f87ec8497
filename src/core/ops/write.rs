//! Write commands the core runs as retryable writes outside a session (`retry.rs`): pymongo's own
//! commands, and the insert of one document, built here around the document pymongo encoded.

use std::time::Duration;

use mongodb::bson::{rawdoc, RawArrayBuf, RawDocument, RawDocumentBuf};
use mongodb::Database;

use super::{command, invalid, to_raw};
use crate::core::labels::Labelled;
use crate::core::retry::{self, RetrySessions};

/// Runs the write command under `command` in `spec` as a retryable write (`retry::write`).
pub async fn retryable_write(
    db: &Database,
    retry_sessions: &RetrySessions,
    spec: &RawDocument,
    retry_writes: bool,
    deadline: Option<Duration>,
) -> std::result::Result<Option<RawDocumentBuf>, Labelled> {
    let command = command::write_command(spec, db.write_concern(), false)?;
    let reply = retry::write(db, retry_sessions, command, retry_writes, deadline).await?;
    Ok(Some(to_raw(reply)?))
}

/// insert_one outside a session: the insert command pymongo sends, run as a retryable write. The
/// driver's typed insert turns a refused write into an error without the server's reply, whose
/// writeErrors entry (with keyPattern and keyValue for a duplicate key, which apps read to tell which
/// unique field collided) is pymongo's `details`. So the reply comes back when it holds write or write
/// concern errors, for the caller to raise as pymongo does; otherwise nothing does.
pub async fn insert_one(
    db: &Database,
    retry_sessions: &RetrySessions,
    spec: &RawDocument,
    docs: Vec<RawDocumentBuf>,
    retry_writes: bool,
    deadline: Option<Duration>,
) -> std::result::Result<Option<RawDocumentBuf>, Labelled> {
    let name =
        spec.get_str("collection").map_err(|_| invalid("collection: a collection name is required"))?;
    let doc = docs.into_iter().next().ok_or_else(|| invalid("insert_one needs a document"))?;
    let mut documents = RawArrayBuf::new();
    documents.push(doc);
    let mut command = rawdoc! { "insert": name, "ordered": true, "documents": documents };
    let mut has_write_concern = false;
    if let Ok(options) = spec.get_document("options") {
        for entry in options {
            let (key, value) = entry.map_err(|e| invalid(format!("options: {e}")))?;
            match key {
                "bypassDocumentValidation" | "comment" | "writeConcern" => {
                    has_write_concern |= key == "writeConcern";
                    command.append(key, value.to_raw_bson())
                }
                other => return Err(invalid(format!("insert_one does not take the option {other:?}")).into()),
            }
        }
    }
    if let (false, Some(wc)) = (has_write_concern, db.write_concern()) {
        command.append("writeConcern", command::write_concern_document(wc)?);
    }
    let reply = retry::write(db, retry_sessions, command, retry_writes, deadline).await?;
    if reply.contains_key("writeErrors") || reply.contains_key("writeConcernError") {
        return Ok(Some(to_raw(reply)?));
    }
    Ok(Some(RawDocumentBuf::new()))
}
