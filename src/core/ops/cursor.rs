//! Cursors: a command the caller built that opens one (pymongo's own `find`, `aggregate`,
//! `listIndexes`, `listCollections`, and `Database.cursor_command`'s), run on the driver's cursor
//! command, which continues the cursor with getMore itself (in the caller's session, if any); and its
//! batches, handed on as the server sent them.
//!
//! The spec: `command` (the command document, as the caller encoded it), `readPreference`, `retryable`
//! (a read pymongo retries: a find or an aggregate, not `cursor_command`), `causal` (a read ordered
//! after the session's operation time, see `command.rs`), and under `options` what the getMores carry: `batchSize`,
//! `maxAwaitTimeMS` (their `maxTimeMS`) and `comment`.

use std::time::Duration;

use mongodb::bson::{Bson, RawDocument, RawDocumentBuf};
use mongodb::error::{ErrorKind, Result};
use mongodb::options::SelectionCriteria;
use mongodb::raw_batch_cursor::{RawBatch, RawBatchCursor, SessionRawBatchCursor};
use mongodb::{ClientSession, Database};

use super::command::{after_cluster_time, flag};
use super::{invalid, selection_criteria};

/// A server cursor, opened inside a session or not (the driver gives the two different types).
pub enum Opened {
    Plain(RawBatchCursor),
    InSession(SessionRawBatchCursor),
}

/// A cursor command, read from its spec.
#[derive(Debug)]
pub(super) struct CursorCommand {
    command: RawDocumentBuf,
    criteria: SelectionCriteria,
    batch_size: Option<u32>,
    max_await: Option<Duration>,
    comment: Option<Bson>,
}

/// A non-negative integer option (`batchSize`, `maxAwaitTimeMS`); None if absent or null.
fn non_negative(options: &RawDocument, key: &str) -> Result<Option<u64>> {
    let value = options.get(key).map_err(|e| invalid(format!("options.{key}: {e}")))?;
    let n = match value.map(|v| v.to_raw_bson()) {
        None | Some(mongodb::bson::RawBson::Null) => return Ok(None),
        Some(mongodb::bson::RawBson::Int32(n)) => n as i64,
        Some(mongodb::bson::RawBson::Int64(n)) => n,
        Some(other) => return Err(invalid(format!("{key} must be an integer, got {other:?}"))),
    };
    u64::try_from(n).map(Some).map_err(|_| invalid(format!("{key} must be non-negative, got {n}")))
}

impl CursorCommand {
    pub(super) fn parse(spec: &RawDocument) -> Result<CursorCommand> {
        let command = spec.get_document("command").map_err(|e| invalid(format!("command: {e}")))?;
        if command.is_empty() {
            return Err(invalid("command must not be empty"));
        }
        let mut parsed = CursorCommand {
            command: command.to_raw_document_buf(),
            criteria: selection_criteria(spec)?,
            batch_size: None,
            max_await: None,
            comment: None,
        };
        if let Ok(options) = spec.get_document("options") {
            parsed.batch_size = match non_negative(options, "batchSize")? {
                None | Some(0) => None,
                Some(n) => {
                    Some(u32::try_from(n).map_err(|_| invalid(format!("batchSize {n} is too large")))?)
                }
            };
            parsed.max_await = non_negative(options, "maxAwaitTimeMS")?.map(Duration::from_millis);
            parsed.comment = match options.get("comment").map_err(|e| invalid(format!("comment: {e}")))? {
                None => None,
                Some(v) => match Bson::try_from(v.to_raw_bson()) {
                    Ok(Bson::Null) => None,
                    Ok(b) => Some(b),
                    Err(e) => return Err(invalid(format!("comment: {e}"))),
                },
            };
        }
        Ok(parsed)
    }
}

/// Whether the command opens a tailable cursor (a `find` with `tailable: true`): its empty batches do
/// not end it.
pub fn is_tailable(spec: &RawDocument) -> bool {
    let command = spec.get_document("command");
    command.is_ok_and(|c| c.get_bool("tailable").unwrap_or(false))
}

/// Whether the command is a read pymongo retries (see the module's comment).
pub fn is_retryable(spec: &RawDocument) -> bool {
    spec.get_bool("retryable").unwrap_or(false)
}

/// Opens the cursor: runs the command; its reply's first batch is the cursor's first, later ones come
/// from getMore. `causal`: the session is causally consistent and not in a transaction, so a read that takes a read
/// concern is ordered after the session's operation time (see `command.rs`).
pub async fn open_cursor(
    db: &Database,
    spec: &RawDocument,
    session: Option<&mut ClientSession>,
    causal: bool,
) -> Result<Opened> {
    let c = CursorCommand::parse(spec)?;
    let command = match session.as_deref().and_then(|s| s.operation_time()) {
        Some(time) if causal && flag(spec, "causal") => after_cluster_time(&c.command, time)?,
        _ => c.command,
    };
    let action = db
        .run_raw_cursor_command(command)
        .selection_criteria(c.criteria)
        .optional(c.batch_size, |a, n| a.batch_size(n))
        .optional(c.max_await, |a, d| a.max_time(d))
        .optional(c.comment, |a, b| a.comment(b));
    let opened = match session {
        Some(s) => action.session(s).batch().await.map(Opened::InSession),
        None => action.batch().await.map(Opened::Plain),
    };
    // A reply without a cursor (the command is not a cursor command): pymongo's error for it.
    opened.map_err(|e| match *e.kind {
        ErrorKind::InvalidResponse { .. } => invalid("Command does not return a cursor."),
        _ => e,
    })
}

/// Applies a setter only when there is a value, keeping the action's chain in one expression.
trait Optional: Sized {
    fn optional<T>(self, value: Option<T>, set: impl FnOnce(Self, T) -> Self) -> Self {
        match value {
            Some(v) => set(self, v),
            None => self,
        }
    }
}

impl<T> Optional for T {}

/// One server batch, left in the reply it arrived in: the caller copies its documents once, straight
/// into the buffer it hands on (a 16 MiB batch is not worth a second copy on the way).
pub struct Batch {
    reply: RawBatch,
    len: usize,
}

impl Batch {
    /// Checks that every item is a document and totals their sizes.
    fn new(reply: RawBatch) -> Result<Batch> {
        let mut len = 0;
        for item in reply.doc_slices()? {
            let item = item.map_err(|e| invalid(e.to_string()))?;
            len +=
                item.as_document().ok_or_else(|| invalid("cursor returned a non-document"))?.as_bytes().len();
        }
        Ok(Batch { reply, len })
    }

    /// The documents' total size in bytes: the length `copy_to` needs.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the documents back to back into `out`, which is `len()` bytes long.
    pub fn copy_to(&self, out: &mut [u8]) {
        let mut at = 0;
        // Validated by `new`: every item is there and is a document.
        for d in self.reply.doc_slices().into_iter().flatten().flatten().filter_map(|i| i.as_document()) {
            let bytes = d.as_bytes();
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        }
        debug_assert_eq!(at, out.len());
    }

    /// The cursor id the server gave with this batch: 0 once it closed the cursor.
    fn cursor_id(&self) -> i64 {
        let cursor = self.reply.as_raw_document().get_document("cursor");
        cursor.ok().and_then(|c| c.get_i64("id").ok()).unwrap_or(0)
    }
}

/// A cursor's next non-empty server batch, or None once it is exhausted. A tailable cursor's next
/// batch, empty or not: an empty one means nothing new yet, and asking again is the caller's choice
/// (pymongo's iteration stops there while the cursor stays alive).
pub async fn next_batch<S>(batches: &mut S, tailable: bool) -> Result<Option<Batch>>
where
    S: futures_util::Stream<Item = Result<RawBatch>> + Unpin,
{
    use futures_util::StreamExt;
    while let Some(batch) = batches.next().await {
        let batch = Batch::new(batch?)?;
        // An empty batch of a live cursor is not the end (the server may still be producing).
        if !batch.is_empty() || (tailable && batch.cursor_id() != 0) {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::rawdoc;
    use mongodb::options::ReadPreference;

    #[test]
    fn parses_the_command_and_the_getmore_options() {
        let spec = rawdoc! {
            "command": { "aggregate": "c", "pipeline": [], "cursor": { "batchSize": 2_i32 } },
            "readPreference": { "mode": "secondaryPreferred" },
            "options": { "batchSize": 3_i64, "maxAwaitTimeMS": 250_i32, "comment": { "k": 1_i32 } },
            "retryable": true,
        };
        let c = CursorCommand::parse(&spec).unwrap();
        assert_eq!(c.command.iter().next().unwrap().unwrap().0, "aggregate");
        assert!(matches!(
            c.criteria,
            SelectionCriteria::ReadPreference(ReadPreference::SecondaryPreferred { .. })
        ));
        assert_eq!(c.batch_size, Some(3));
        assert_eq!(c.max_await, Some(Duration::from_millis(250)));
        assert!(matches!(c.comment, Some(Bson::Document(_))));
        assert!(is_retryable(&spec));
        assert!(!is_tailable(&spec));
    }

    #[test]
    fn defaults_to_the_primary_and_no_getmore_options() {
        let spec = rawdoc! { "command": { "listCollections": 1_i32 }, "options": { "batchSize": 0_i32,
        "comment": null } };
        let c = CursorCommand::parse(&spec).unwrap();
        assert!(matches!(c.criteria, SelectionCriteria::ReadPreference(ReadPreference::Primary)));
        assert_eq!(c.batch_size, None);
        assert_eq!(c.max_await, None);
        assert!(c.comment.is_none());
        assert!(!is_retryable(&spec));
    }

    #[test]
    fn a_tailable_find_is_tailable() {
        assert!(is_tailable(&rawdoc! { "command": { "find": "c", "tailable": true } }));
        assert!(!is_tailable(&rawdoc! { "command": { "find": "c", "tailable": 1_i32 } }));
    }

    #[test]
    fn refuses_malformed_specs() {
        for bad in [
            rawdoc! {},
            rawdoc! { "command": {} },
            rawdoc! { "command": "find" },
            rawdoc! { "command": { "find": "c" }, "options": { "batchSize": -1_i32 } },
            rawdoc! { "command": { "find": "c" }, "options": { "batchSize": 5_000_000_000_i64 } },
            rawdoc! { "command": { "find": "c" }, "options": { "maxAwaitTimeMS": 1.5 } },
            rawdoc! { "command": { "find": "c" }, "readPreference": { "mode": "bogus" } },
        ] {
            assert!(CursorCommand::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
