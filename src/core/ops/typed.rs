//! The driver's typed writes, for the one case docs/execution-paths.md leaves to them: a
//! single-document write in an explicit session outside a transaction. pymongo numbers such a write
//! with the session's next `txnNumber` and retries it under that number; the driver keeps a session's
//! number to itself, so only its own typed write can do that. Replies are shaped like the server's, for
//! the Python layer to turn into pymongo's results.

use std::time::Duration;

use mongodb::bson::{self, rawdoc, Bson, Document, RawDocument, RawDocumentBuf};
use mongodb::error::Result;
use mongodb::options::{
    DeleteOptions, FindOneAndDeleteOptions, FindOneAndReplaceOptions, FindOneAndUpdateOptions,
    InsertManyOptions, InsertOneOptions, ReplaceOptions, ReturnDocument, UpdateModifications, UpdateOptions,
};
use mongodb::{ClientSession, Collection, Database};
use serde::de::DeserializeOwned;

use super::{doc_field, invalid, pipeline_field, raw_doc_field, Op};

/// A duration in milliseconds (`maxTimeMS`, `maxAwaitTimeMS`) taken out of an options document.
fn take_millis(d: &mut Document, key: &str) -> Result<Option<Duration>> {
    match d.remove(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(n)) if n >= 0 => Ok(Some(Duration::from_millis(n as u64))),
        Some(Bson::Int64(n)) if n >= 0 => Ok(Some(Duration::from_millis(n as u64))),
        Some(other) => Err(invalid(format!("{key} must be a non-negative integer, got {other}"))),
    }
}

/// Deserializes the driver's options struct from `spec.options`. `maxTimeMS` is taken apart because
/// the driver's options hold it as a `Duration`, which does not deserialize from milliseconds.
fn options<T: DeserializeOwned + Default>(spec: &RawDocument) -> Result<(T, Option<Duration>)> {
    options_from(doc_field(spec, "options")?)
}

fn options_from<T: DeserializeOwned + Default>(mut d: Document) -> Result<(T, Option<Duration>)> {
    let max_time = take_millis(&mut d, "maxTimeMS")?;
    if d.is_empty() {
        return Ok((T::default(), max_time));
    }
    let opts = bson::from_document(d).map_err(|e| invalid(format!("invalid option: {e}")))?;
    Ok((opts, max_time))
}

/// The driver's insert_many options. Its `write_concern` is `#[serde(skip)]`, so serde would drop a write
/// concern silently: it is read here.
fn insert_many_options(spec: &RawDocument) -> Result<InsertManyOptions> {
    let (mut o, _) = options::<InsertManyOptions>(spec)?;
    let given = doc_field(spec, "options")?;
    if let Some(wc) = given.get("writeConcern") {
        o.write_concern =
            Some(bson::from_bson(wc.clone()).map_err(|e| invalid(format!("invalid writeConcern: {e}")))?);
    }
    Ok(o)
}

fn update_modifications(spec: &RawDocument) -> Result<UpdateModifications> {
    match spec.get("update").map_err(|e| invalid(e.to_string()))? {
        Some(v) if v.as_array().is_some() => {
            Ok(UpdateModifications::Pipeline(pipeline_field(spec, "update")?))
        }
        Some(_) => Ok(UpdateModifications::Document(doc_field(spec, "update")?)),
        None => Err(invalid("update is required")),
    }
}

fn update_reply(r: mongodb::results::UpdateResult) -> RawDocumentBuf {
    // The server's shape: `n` counts the upserted document too, as pymongo's UpdateResult expects.
    let upserted = r.upserted_id.is_some() as u64;
    let mut reply =
        rawdoc! { "n": (r.matched_count + upserted) as i64, "nModified": r.modified_count as i64 };
    if let Some(id) = r.upserted_id {
        if let Ok(raw) = bson::RawBson::try_from(id) {
            reply.append("upserted", raw);
        }
    }
    reply
}

fn value_reply(doc: Option<RawDocumentBuf>) -> RawDocumentBuf {
    let mut reply = RawDocumentBuf::new();
    match doc {
        Some(d) => reply.append("value", d),
        None => reply.append("value", bson::RawBson::Null),
    }
    reply
}

fn return_document(spec: &RawDocument) -> Option<ReturnDocument> {
    match spec.get_bool("returnNew") {
        Ok(true) => Some(ReturnDocument::After),
        Ok(false) => Some(ReturnDocument::Before),
        Err(_) => None,
    }
}

/// Runs a typed write in `session`. `docs` are the documents of an insert, each as pymongo encoded it.
pub async fn execute(
    db: &Database,
    op: Op,
    spec: &RawDocument,
    docs: Vec<RawDocumentBuf>,
    session: &mut ClientSession,
) -> Result<RawDocumentBuf> {
    let name =
        spec.get_str("collection").map_err(|_| invalid("collection: a collection name is required"))?;
    let coll: Collection<RawDocumentBuf> = db.collection(name);
    Ok(match op {
        Op::InsertOne => {
            let (o, _) = options::<InsertOneOptions>(spec)?;
            let doc = docs.into_iter().next().ok_or_else(|| invalid("insert_one needs a document"))?;
            coll.insert_one(doc).with_options(o).session(session).await?;
            RawDocumentBuf::new()
        }
        Op::InsertMany => {
            let o = insert_many_options(spec)?;
            if docs.is_empty() {
                return Err(invalid("documents must be a non-empty list"));
            }
            coll.insert_many(docs).with_options(o).session(session).await?;
            RawDocumentBuf::new()
        }
        Op::UpdateOne => {
            let (o, _) = options::<UpdateOptions>(spec)?;
            let (filter, update) = (doc_field(spec, "filter")?, update_modifications(spec)?);
            update_reply(coll.update_one(filter, update).with_options(o).session(session).await?)
        }
        Op::ReplaceOne => {
            let (o, _) = options::<ReplaceOptions>(spec)?;
            let (filter, replacement) = (doc_field(spec, "filter")?, raw_doc_field(spec, "replacement")?);
            update_reply(coll.replace_one(filter, replacement).with_options(o).session(session).await?)
        }
        Op::DeleteOne => {
            let (o, _) = options::<DeleteOptions>(spec)?;
            let r = coll.delete_one(doc_field(spec, "filter")?).with_options(o).session(session).await?;
            rawdoc! { "n": r.deleted_count as i64 }
        }
        Op::FindOneAndUpdate => {
            let (mut o, mt) = options::<FindOneAndUpdateOptions>(spec)?;
            o.max_time = mt;
            o.return_document = return_document(spec);
            let (filter, update) = (doc_field(spec, "filter")?, update_modifications(spec)?);
            value_reply(coll.find_one_and_update(filter, update).with_options(o).session(session).await?)
        }
        Op::FindOneAndReplace => {
            let (mut o, mt) = options::<FindOneAndReplaceOptions>(spec)?;
            o.max_time = mt;
            o.return_document = return_document(spec);
            let (filter, replacement) = (doc_field(spec, "filter")?, raw_doc_field(spec, "replacement")?);
            value_reply(
                coll.find_one_and_replace(filter, replacement).with_options(o).session(session).await?,
            )
        }
        Op::FindOneAndDelete => {
            let (mut o, mt) = options::<FindOneAndDeleteOptions>(spec)?;
            o.max_time = mt;
            value_reply(
                coll.find_one_and_delete(doc_field(spec, "filter")?).with_options(o).session(session).await?,
            )
        }
        Op::Command | Op::RetryableWrite => {
            return Err(invalid(format!("{op:?} is a command, not a typed write")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_deserialize_from_camel_case() {
        let spec = rawdoc! { "options": { "upsert": true, "hint": "a_1", "comment": "c", "maxTimeMS": 50_i32,
        "arrayFilters": [{ "x": 1_i32 }] } };
        let (o, mt) = options::<FindOneAndUpdateOptions>(&spec).unwrap();
        assert_eq!(mt, Some(Duration::from_millis(50)));
        assert_eq!(o.upsert, Some(true));
        assert!(o.hint.is_some() && o.comment.is_some());
        assert_eq!(o.array_filters.map(|a| a.len()), Some(1));
        assert!(options::<UpdateOptions>(&rawdoc! { "options": { "maxTimeMS": -1_i32 } }).is_err());
        assert!(options::<UpdateOptions>(&rawdoc! { "options": { "upsert": "yes" } }).is_err());
    }

    #[test]
    fn insert_many_keeps_its_write_concern() {
        let spec =
            rawdoc! { "options": { "ordered": false, "writeConcern": { "w": 3_i32, "wtimeout": 500_i32 } } };
        let o = insert_many_options(&spec).unwrap();
        assert_eq!(o.ordered, Some(false));
        let wc = o.write_concern.unwrap();
        assert_eq!(wc.w, Some(mongodb::options::Acknowledgment::Nodes(3)));
        assert_eq!(wc.w_timeout, Some(Duration::from_millis(500)));
        assert!(insert_many_options(&rawdoc! {}).unwrap().write_concern.is_none());
    }

    #[test]
    fn update_reply_counts_upsert_in_n() {
        let mut r = mongodb::results::UpdateResult::default();
        r.matched_count = 0;
        r.upserted_id = Some(Bson::Int32(7));
        let reply = update_reply(r);
        assert_eq!(reply.get_i64("n").unwrap(), 1);
        assert_eq!(reply.get_i32("upserted").unwrap(), 7);
        assert!(value_reply(None).get("value").unwrap().is_some());
        assert!(matches!(return_document(&rawdoc! { "returnNew": true }), Some(ReturnDocument::After)));
        assert!(matches!(return_document(&rawdoc! { "returnNew": false }), Some(ReturnDocument::Before)));
        assert!(return_document(&rawdoc! {}).is_none());
    }
}
