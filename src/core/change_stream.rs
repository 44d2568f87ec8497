//! Change streams: the driver's resumable change stream, one event per round, its rounds bounded by
//! socketTimeoutMS as pymongo bounds its getMores (a round cut short resumes the stream once, as
//! pymongo's does).

use std::time::Duration;

use mongodb::bson::{self, rawdoc, RawDocument, RawDocumentBuf};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::session::SessionChangeStream;
use mongodb::change_stream::ChangeStream;
use mongodb::error::Result;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};
use mongodb::{ClientSession, Database};
use serde::{Deserialize, Serialize};

use super::deadline;
use super::ops::{invalid, pipeline_field, selection_criteria};

/// The driver's change stream, opened inside a session or not (two different types). Events stay raw
/// documents: the driver reads only their `_id` (the resume token); Python decodes the rest.
enum Stream {
    Plain(ChangeStream<RawDocumentBuf>),
    InSession(Box<SessionChangeStream<RawDocumentBuf>>),
}

/// An open change stream.
pub struct Watched {
    stream: Stream,
    /// Where the stream was opened and with what, to open it again after a round cut short.
    db: Database,
    spec: RawDocumentBuf,
    /// Whether an event was handed out: until then pymongo resumes with `startAfter`, if given.
    returned_event: bool,
    /// The resume token before any event: the one watched from, or the server's initial one.
    initial_token: Option<RawDocumentBuf>,
    /// An event of the aggregate's first batch, taken when the stream was opened (see `watch`).
    pending: Option<RawDocumentBuf>,
}

/// What one round of a change stream gave: at most one event, the stream's resume token after it (the
/// event's `_id`, or the server's post-batch resume token after an empty batch), and whether more may come
/// (false once the stream is invalidated: its collection or database dropped or renamed).
pub struct Change {
    pub event: Option<RawDocumentBuf>,
    /// `{"_id": token}`, so that Python decodes the token with the stream's codec options.
    pub token: Option<RawDocumentBuf>,
    pub alive: bool,
}

/// A resume token wrapped in a document, the only way in and out of the driver's opaque `ResumeToken`.
#[derive(Serialize, Deserialize)]
struct TokenDoc {
    #[serde(rename = "_id")]
    id: ResumeToken,
}

fn resume_token(value: bson::RawBsonRef<'_>, key: &str) -> Result<ResumeToken> {
    let doc = rawdoc! { "_id": value.to_raw_bson() };
    bson::from_slice::<TokenDoc>(doc.as_bytes())
        .map(|t| t.id)
        .map_err(|e| invalid(format!("{key}: not a resume token: {e}")))
}

fn token_doc(token: Option<ResumeToken>) -> Result<Option<RawDocumentBuf>> {
    token
        .map(|id| {
            bson::to_raw_document_buf(&TokenDoc { id }).map_err(|e| invalid(format!("resume token: {e}")))
        })
        .transpose()
}

fn non_negative(value: bson::RawBsonRef<'_>, key: &str) -> Result<u64> {
    match value {
        bson::RawBsonRef::Int32(n) if n >= 0 => Ok(n as u64),
        bson::RawBsonRef::Int64(n) if n >= 0 => Ok(n as u64),
        other => Err(invalid(format!("{key} must be a non-negative integer, got {other:?}"))),
    }
}

/// The driver's change stream options from `spec.options` (the `$changeStream` stage's fields and the
/// aggregate's, in the server's camelCase names). An option the driver cannot express is an error
/// naming it, never silently dropped.
fn change_stream_options(spec: &RawDocument) -> Result<ChangeStreamOptions> {
    let given = match spec.get("options").map_err(|e| invalid(format!("options: {e}")))? {
        Some(v) => v.as_document().ok_or_else(|| invalid("options must be a document"))?,
        None => return Ok(ChangeStreamOptions::default()),
    };
    // Read by serde (raw, so resume tokens stay byte for byte what the server sent).
    let mut typed = RawDocumentBuf::new();
    let (mut max_await, mut batch_size, mut full_document, mut before_change) = (None, None, None, None);
    for item in given {
        let (key, value) = item.map_err(|e| invalid(format!("options: {e}")))?;
        match key {
            "maxAwaitTimeMS" => max_await = Some(Duration::from_millis(non_negative(value, key)?)),
            "batchSize" => {
                let n = non_negative(value, key)?;
                batch_size =
                    Some(u32::try_from(n).map_err(|_| invalid(format!("batchSize too large: {n}")))?);
            }
            "fullDocument" => {
                full_document = match value.as_str() {
                    Some("default") => None,
                    Some("updateLookup") => Some(FullDocumentType::UpdateLookup),
                    Some("whenAvailable") => Some(FullDocumentType::WhenAvailable),
                    Some("required") => Some(FullDocumentType::Required),
                    _ => {
                        return Err(invalid(format!(
                            "full_document must be 'default', 'updateLookup', 'whenAvailable' or \
                             'required', got {value:?}"
                        )))
                    }
                }
            }
            "fullDocumentBeforeChange" => {
                before_change = match value.as_str() {
                    Some("off") => Some(FullDocumentBeforeChangeType::Off),
                    Some("whenAvailable") => Some(FullDocumentBeforeChangeType::WhenAvailable),
                    Some("required") => Some(FullDocumentBeforeChangeType::Required),
                    _ => {
                        return Err(invalid(format!(
                            "full_document_before_change must be 'off', 'whenAvailable' or 'required', \
                             got {value:?}"
                        )))
                    }
                }
            }
            "resumeAfter" | "startAfter" => {
                resume_token(value, key)?;
                typed.append(key, value.to_raw_bson());
            }
            // Not `comment`: the driver would put it in the `$changeStream` stage, which the server
            // refuses ("BSON field '$changeStream.comment' is an unknown field").
            "startAtOperationTime" | "showExpandedEvents" | "collation" | "readConcern" => {
                typed.append(key, value.to_raw_bson());
            }
            other => return Err(invalid(format!("change streams do not support the option {other:?}"))),
        }
    }
    let mut o: ChangeStreamOptions = bson::from_slice(typed.as_bytes())
        .map_err(|e| invalid(format!("invalid change stream option: {e}")))?;
    o.max_await_time = max_await;
    o.batch_size = batch_size;
    o.full_document = full_document;
    o.full_document_before_change = before_change;
    Ok(o)
}

/// The driver's stream on `spec.collection`, or on the whole database without one.
async fn open(
    db: &Database,
    spec: &RawDocument,
    options: ChangeStreamOptions,
    session: Option<&mut ClientSession>,
) -> Result<Stream> {
    let pipeline = match spec.get("pipeline").map_err(|e| invalid(format!("pipeline: {e}")))? {
        Some(_) => pipeline_field(spec, "pipeline")?,
        None => Vec::new(),
    };
    // Both arms build the same action; only the session differs.
    macro_rules! open {
        ($action:expr) => {{
            let action = $action.pipeline(pipeline).with_options(options);
            match session {
                Some(s) => {
                    Stream::InSession(Box::new(action.session(s).await?.with_type::<RawDocumentBuf>()))
                }
                None => Stream::Plain(action.await?.with_type::<RawDocumentBuf>()),
            }
        }};
    }
    Ok(match spec.get_str("collection") {
        Ok(name) => {
            let coll = db.collection::<RawDocumentBuf>(name);
            open!(coll.watch())
        }
        Err(_) => open!(db.watch()),
    })
}

fn stream_options(spec: &RawDocument) -> Result<ChangeStreamOptions> {
    let mut options = change_stream_options(spec)?;
    options.selection_criteria = Some(selection_criteria(spec)?);
    Ok(options)
}

/// Opens a change stream on `spec.collection`, or on the whole database without one. The driver runs
/// the `$changeStream` aggregate now, so that no change made after this returns is missed. The
/// aggregate is bounded by socketTimeoutMS (`limit`) and, cut short, run once more if `retry` (retryReads),
/// as pymongo's.
pub async fn watch(
    db: &Database,
    spec: &RawDocument,
    mut session: Option<&mut ClientSession>,
    limit: Option<Duration>,
    retry: bool,
) -> Result<Watched> {
    let first = deadline::within(limit, open(db, spec, stream_options(spec)?, session.as_deref_mut())).await;
    let stream = match first {
        Err(e) if retry && deadline::is_timed_out(&e) => {
            deadline::within(limit, open(db, spec, stream_options(spec)?, session.as_deref_mut())).await?
        }
        r => r?,
    };
    let mut watched = Watched {
        initial_token: None,
        pending: None,
        stream,
        db: db.clone(),
        spec: spec.to_owned(),
        returned_event: false,
    };
    watched.initial_token = watched.resume_token()?;
    // The driver hands out the aggregate's first batch as a round of its own, with no I/O: take it now,
    // so that the caller's first round is a getMore, as in pymongo (a change made between `watch()` and
    // the first `try_next()` is returned by that `try_next()`).
    watched.pending = watched.advance(session).await?;
    Ok(watched)
}

impl Watched {
    /// The resume token before any event was returned, as `{"_id": token}`.
    pub fn initial_token(&self) -> Option<&RawDocumentBuf> {
        self.initial_token.as_ref()
    }

    /// The token to resume after the last event returned, as `{"_id": token}`.
    pub fn resume_token(&self) -> Result<Option<RawDocumentBuf>> {
        token_doc(match &self.stream {
            Stream::Plain(s) => s.resume_token(),
            Stream::InSession(s) => s.resume_token(),
        })
    }

    fn is_alive(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_alive(),
            Stream::InSession(s) => s.is_alive(),
        }
    }

    /// The driver's round: the next buffered event, or else one getMore (waiting up to maxAwaitTimeMS
    /// on the server). The driver resumes the stream by itself after a resumable error.
    async fn advance(&mut self, session: Option<&mut ClientSession>) -> Result<Option<RawDocumentBuf>> {
        match (&mut self.stream, session) {
            (Stream::Plain(s), _) => s.next_if_any().await,
            (Stream::InSession(s), Some(session)) => s.next_if_any(session).await,
            (Stream::InSession(_), None) => {
                Err(invalid("a change stream opened in a session needs that session"))
            }
        }
    }

    /// Opens the stream again from its resume token, as pymongo's resume: `startAfter` the token until
    /// an event was returned if the stream was opened with `startAfter`, else `resumeAfter`. Replacing
    /// the driver's stream drops the abandoned getMore, closing its connection and killing its cursor.
    async fn resume(
        &mut self,
        mut session: Option<&mut ClientSession>,
        limit: Option<Duration>,
    ) -> Result<()> {
        let mut options = stream_options(&self.spec)?;
        let token = match &self.stream {
            Stream::Plain(s) => s.resume_token(),
            Stream::InSession(s) => s.resume_token(),
        };
        if token.is_some() {
            options.start_at_operation_time = None;
            if options.start_after.is_some() && !self.returned_event {
                (options.start_after, options.resume_after) = (token, None);
            } else {
                (options.start_after, options.resume_after) = (None, token);
            }
        }
        let opened = open(&self.db, &self.spec, options, session.as_deref_mut());
        self.stream = deadline::within(limit, opened).await?;
        self.pending = self.advance(session).await?;
        Ok(())
    }

    /// One round, with the resume token after it and whether the stream goes on. A getMore that
    /// outlives socketTimeoutMS (`limit`) is a resumable network error to pymongo's change stream, which
    /// resumes once and returns what the new aggregate's first batch holds: so here too, on a new
    /// driver stream (the driver's own would go on waiting for the abandoned getMore).
    pub async fn next_change(
        &mut self,
        mut session: Option<&mut ClientSession>,
        limit: Option<Duration>,
    ) -> Result<Change> {
        let event = match self.pending.take() {
            // The driver's token already follows it (nothing was taken after it).
            Some(event) => Some(event),
            None => match deadline::within(limit, self.advance(session.as_deref_mut())).await {
                Err(e) if deadline::is_timed_out(&e) => {
                    self.resume(session, limit).await?;
                    self.pending.take()
                }
                r => r?,
            },
        };
        self.returned_event |= event.is_some();
        // The server closes the cursor with the batch that holds an invalidate event, which is always the
        // stream's last; before it, events of that batch may still be buffered here. So the stream ends
        // with an invalidate, or when a round on a closed cursor finds nothing buffered.
        let alive = self.is_alive()
            || event.as_ref().is_some_and(|e| e.get_str("operationType").ok() != Some("invalidate"));
        Ok(Change { event, token: self.resume_token()?, alive })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_stream_options_from_camel_case() {
        let spec = rawdoc! { "options": { "fullDocument": "updateLookup", "fullDocumentBeforeChange": "off",
        "maxAwaitTimeMS": 50_i32, "batchSize": 3_i64, "resumeAfter": { "_data": "8263" },
        "showExpandedEvents": true, "collation": { "locale": "fr" }, "readConcern": { "level": "majority" } } };
        let o = change_stream_options(&spec).unwrap();
        assert!(matches!(o.full_document, Some(FullDocumentType::UpdateLookup)));
        assert!(matches!(o.full_document_before_change, Some(FullDocumentBeforeChangeType::Off)));
        assert_eq!(o.max_await_time, Some(Duration::from_millis(50)));
        assert_eq!(o.batch_size, Some(3));
        assert!(o.resume_after.is_some());
        assert_eq!(o.show_expanded_events, Some(true));
        assert!(o.collation.is_some());
        assert!(o.read_concern.is_some());
        // The server's default needs no option.
        let o = change_stream_options(&rawdoc! { "options": { "fullDocument": "default" } }).unwrap();
        assert!(o.full_document.is_none());
    }

    #[test]
    fn change_stream_options_refuse_what_the_driver_cannot_send() {
        for spec in [
            rawdoc! { "options": { "comment": "tag" } },
            rawdoc! { "options": { "fullDocument": "bogus" } },
            rawdoc! { "options": { "batchSize": -1_i32 } },
            rawdoc! { "options": { "maxAwaitTimeMS": "1" } },
            rawdoc! { "options": { "allChangesForCluster": true } },
        ] {
            assert!(change_stream_options(&spec).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn resume_tokens_round_trip() {
        let given = rawdoc! { "_data": "8263" };
        let token = resume_token(bson::RawBsonRef::Document(&given), "resumeAfter").unwrap();
        let doc = token_doc(Some(token)).unwrap().unwrap();
        assert_eq!(doc.get_document("_id").unwrap(), given.as_ref());
    }
}
