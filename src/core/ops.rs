//! The operations a tenant can run, on the driver's raw-document API so documents cross from Python to
//! the server as the BSON bytes pymongo's encoder made, without a detour through Rust types.
//!
//! Each operation takes a spec document (the arguments, with driver options under `options` in the
//! server's camelCase names) and returns a reply document shaped like the server's, which the Python
//! layer turns into pymongo's result classes.

use std::time::Duration;

use mongodb::bson::{self, rawdoc, Bson, Document, RawArrayBuf, RawDocument, RawDocumentBuf};
use mongodb::error::{Error, Result};
use mongodb::options::{
    AggregateOptions, CountOptions, CreateCollectionOptions, CursorType, DeleteOptions, DistinctOptions,
    EstimatedDocumentCountOptions, FindOneAndDeleteOptions, FindOneAndReplaceOptions,
    FindOneAndUpdateOptions, FindOneOptions, FindOptions, InsertManyOptions, InsertOneOptions,
    ReplaceOptions, ReturnDocument, UpdateModifications, UpdateOptions,
};
use mongodb::options::{ReadPreference, SelectionCriteria};
use mongodb::raw_batch_cursor::SessionRawBatchCursor;
use mongodb::raw_batch_cursor::{RawBatch, RawBatchCursor};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::de::DeserializeOwned;

use super::labels::Labelled;
use super::retry::{self, RetrySessions};

pub mod command;
pub mod command_cursor;

/// Operations that return one reply document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    InsertOne,
    InsertMany,
    FindOne,
    UpdateOne,
    UpdateMany,
    ReplaceOne,
    DeleteOne,
    DeleteMany,
    CountDocuments,
    EstimatedDocumentCount,
    Distinct,
    FindOneAndUpdate,
    FindOneAndReplace,
    FindOneAndDelete,
    CreateIndexes,
    DropIndex,
    DropIndexes,
    DropCollection,
    CreateCollection,
    ListCollectionNames,
    /// A command as the caller built it.
    Command,
    /// A write command (pymongo's bulk batches) run as a retryable write.
    RetryableWrite,
    DropDatabase,
}

impl Op {
    pub fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "insert_one" => Op::InsertOne,
            "insert_many" => Op::InsertMany,
            "find_one" => Op::FindOne,
            "update_one" => Op::UpdateOne,
            "update_many" => Op::UpdateMany,
            "replace_one" => Op::ReplaceOne,
            "delete_one" => Op::DeleteOne,
            "delete_many" => Op::DeleteMany,
            "count_documents" => Op::CountDocuments,
            "estimated_document_count" => Op::EstimatedDocumentCount,
            "distinct" => Op::Distinct,
            "find_one_and_update" => Op::FindOneAndUpdate,
            "find_one_and_replace" => Op::FindOneAndReplace,
            "find_one_and_delete" => Op::FindOneAndDelete,
            "create_indexes" => Op::CreateIndexes,
            "drop_index" => Op::DropIndex,
            "drop_indexes" => Op::DropIndexes,
            "drop_collection" => Op::DropCollection,
            "create_collection" => Op::CreateCollection,
            "list_collection_names" => Op::ListCollectionNames,
            "command" => Op::Command,
            "retryable_write" => Op::RetryableWrite,
            "drop_database" => Op::DropDatabase,
            _ => return None,
        })
    }

    /// Whether the operation works on a collection (the spec then names it under `collection`).
    pub fn on_collection(self) -> bool {
        !matches!(
            self,
            Op::CreateCollection
                | Op::ListCollectionNames
                | Op::Command
                | Op::RetryableWrite
                | Op::DropDatabase
        )
    }
}

/// Operations that open a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorOp {
    Find,
    Aggregate,
    ListIndexes,
    ListCollections,
    /// A cursor command as the caller built it (see `command_cursor`).
    Command,
}

impl CursorOp {
    pub fn parse(name: &str) -> Option<CursorOp> {
        Some(match name {
            "find" => CursorOp::Find,
            "aggregate" => CursorOp::Aggregate,
            "list_indexes" => CursorOp::ListIndexes,
            "list_collections" => CursorOp::ListCollections,
            "command" => CursorOp::Command,
            _ => return None,
        })
    }
}

/// A malformed operation spec: a bug in the caller's arguments, reported as InvalidOperation.
#[derive(Debug)]
pub struct InvalidSpec(pub String);

pub(super) fn invalid(message: impl Into<String>) -> Error {
    Error::custom(InvalidSpec(message.into()))
}

fn doc_field(spec: &RawDocument, key: &str) -> Result<Document> {
    match spec.get(key).map_err(|e| invalid(format!("{key}: {e}")))? {
        Some(v) => match v.as_document() {
            Some(d) => Document::try_from(d).map_err(|e| invalid(format!("{key}: {e}"))),
            None => Err(invalid(format!("{key} must be a document"))),
        },
        None => Ok(Document::new()),
    }
}

fn raw_doc_field(spec: &RawDocument, key: &str) -> Result<RawDocumentBuf> {
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

fn str_field<'a>(spec: &'a RawDocument, key: &str) -> Result<&'a str> {
    spec.get_str(key).map_err(|e| invalid(format!("{key}: {e}")))
}

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

/// The driver's find options, with the cursor type and await time given in pymongo's find command
/// fields (`tailable`, `awaitData`) and `maxAwaitTimeMS`. The driver's struct skips those two in serde,
/// which would drop them silently (and ignores unknown fields), so they are read here.
fn find_options(spec: &RawDocument) -> Result<FindOptions> {
    let mut d = doc_field(spec, "options")?;
    let flag = |d: &mut Document, key: &str| match d.remove(key) {
        None | Some(Bson::Boolean(false)) => Ok(false),
        Some(Bson::Boolean(true)) => Ok(true),
        Some(other) => Err(invalid(format!("{key} must be a boolean, got {other}"))),
    };
    let (tailable, await_data) = (flag(&mut d, "tailable")?, flag(&mut d, "awaitData")?);
    let max_await = take_millis(&mut d, "maxAwaitTimeMS")?;
    let (mut o, max_time): (FindOptions, _) = options_from(d)?;
    o.max_time = max_time;
    o.cursor_type = match (tailable, await_data) {
        (false, false) => None,
        (true, false) => Some(CursorType::Tailable),
        (true, true) => Some(CursorType::TailableAwait),
        // The server refuses it; the Python layer sends such a query as the raw command instead.
        (false, true) => return Err(invalid("awaitData needs tailable")),
    };
    // The driver sends it as the getMores' maxTimeMS, as pymongo sends max_await_time_ms.
    o.max_await_time = max_await;
    Ok(o)
}

/// Whether a cursor op's spec opens a tailable cursor, whose empty batches do not end it.
pub fn is_tailable(op: CursorOp, spec: &RawDocument) -> bool {
    match op {
        CursorOp::Find => spec.get_document("options").is_ok_and(|o| o.get_bool("tailable").unwrap_or(false)),
        CursorOp::Command => command_cursor::is_tailable(spec),
        _ => false,
    }
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

pub fn to_raw(doc: Document) -> Result<RawDocumentBuf> {
    RawDocumentBuf::from_document(&doc).map_err(|e| invalid(e.to_string()))
}

/// Awaits a driver action, inside the caller's session if there is one.
macro_rules! run {
    ($action:expr, $session:ident) => {{
        let action = $action;
        match $session.as_deref_mut() {
            Some(s) => action.session(s).await,
            None => action.await,
        }
    }};
}

/// Runs a one-reply operation. `docs` are the documents of an insert, each as pymongo encoded it.
pub async fn execute(
    db: &Database,
    op: Op,
    spec: &RawDocument,
    docs: Vec<RawDocumentBuf>,
    mut session: Option<&mut ClientSession>,
) -> Result<Option<RawDocumentBuf>> {
    // Bound here, not per use: driver actions borrow the collection until they are awaited.
    let named: Option<Collection<RawDocumentBuf>> = spec.get_str("collection").ok().map(|n| db.collection(n));
    let coll = || named.as_ref().ok_or_else(|| invalid("collection: a collection name is required"));
    let reply = match op {
        Op::InsertOne => {
            let (o, _) = options::<InsertOneOptions>(spec)?;
            let doc = docs.into_iter().next().ok_or_else(|| invalid("insert_one needs a document"))?;
            run!(coll()?.insert_one(doc).with_options(o), session)?;
            RawDocumentBuf::new()
        }
        Op::InsertMany => {
            let o = insert_many_options(spec)?;
            if docs.is_empty() {
                return Err(invalid("documents must be a non-empty list"));
            }
            run!(coll()?.insert_many(docs).with_options(o), session)?;
            RawDocumentBuf::new()
        }
        Op::FindOne => {
            let (mut o, mt) = options::<FindOneOptions>(spec)?;
            o.max_time = mt;
            o.selection_criteria = Some(selection_criteria(spec)?);
            return run!(coll()?.find_one(doc_field(spec, "filter")?).with_options(o), session);
        }
        Op::UpdateOne | Op::UpdateMany => {
            let (o, _) = options::<UpdateOptions>(spec)?;
            let (c, filter, update) = (coll()?, doc_field(spec, "filter")?, update_modifications(spec)?);
            let r = if op == Op::UpdateOne {
                run!(c.update_one(filter, update).with_options(o), session)?
            } else {
                run!(c.update_many(filter, update).with_options(o), session)?
            };
            update_reply(r)
        }
        Op::ReplaceOne => {
            let (o, _) = options::<ReplaceOptions>(spec)?;
            let replacement = raw_doc_field(spec, "replacement")?;
            update_reply(run!(
                coll()?.replace_one(doc_field(spec, "filter")?, replacement).with_options(o),
                session
            )?)
        }
        Op::DeleteOne | Op::DeleteMany => {
            let (o, _) = options::<DeleteOptions>(spec)?;
            let (c, filter) = (coll()?, doc_field(spec, "filter")?);
            let r = if op == Op::DeleteOne {
                run!(c.delete_one(filter).with_options(o), session)?
            } else {
                run!(c.delete_many(filter).with_options(o), session)?
            };
            rawdoc! { "n": r.deleted_count as i64 }
        }
        Op::CountDocuments => {
            let (mut o, mt) = options::<CountOptions>(spec)?;
            o.max_time = mt;
            o.selection_criteria = Some(selection_criteria(spec)?);
            let n = run!(coll()?.count_documents(doc_field(spec, "filter")?).with_options(o), session)?;
            rawdoc! { "n": n as i64 }
        }
        Op::EstimatedDocumentCount => {
            let (mut o, mt) = options::<EstimatedDocumentCountOptions>(spec)?;
            o.max_time = mt;
            o.selection_criteria = Some(selection_criteria(spec)?);
            let n = coll()?.estimated_document_count().with_options(o).await?;
            rawdoc! { "n": n as i64 }
        }
        Op::Distinct => {
            let (mut o, mt) = options::<DistinctOptions>(spec)?;
            o.max_time = mt;
            o.selection_criteria = Some(selection_criteria(spec)?);
            let key = str_field(spec, "key")?;
            let values = run!(coll()?.distinct(key, doc_field(spec, "filter")?).with_options(o), session)?;
            let mut arr = RawArrayBuf::new();
            for v in values {
                arr.push(bson::RawBson::try_from(v).map_err(|e| invalid(e.to_string()))?);
            }
            rawdoc! { "values": arr }
        }
        Op::FindOneAndUpdate => {
            let (mut o, mt) = options::<FindOneAndUpdateOptions>(spec)?;
            o.max_time = mt;
            o.return_document = return_document(spec);
            let c = coll()?;
            value_reply(run!(
                c.find_one_and_update(doc_field(spec, "filter")?, update_modifications(spec)?)
                    .with_options(o),
                session
            )?)
        }
        Op::FindOneAndReplace => {
            let (mut o, mt) = options::<FindOneAndReplaceOptions>(spec)?;
            o.max_time = mt;
            o.return_document = return_document(spec);
            let replacement = raw_doc_field(spec, "replacement")?;
            value_reply(run!(
                coll()?.find_one_and_replace(doc_field(spec, "filter")?, replacement).with_options(o),
                session
            )?)
        }
        Op::FindOneAndDelete => {
            let (mut o, mt) = options::<FindOneAndDeleteOptions>(spec)?;
            o.max_time = mt;
            value_reply(run!(
                coll()?.find_one_and_delete(doc_field(spec, "filter")?).with_options(o),
                session
            )?)
        }
        Op::CreateIndexes => {
            let models = pipeline_field(spec, "indexes")?
                .into_iter()
                .map(|d| bson::from_document::<IndexModel>(d).map_err(|e| invalid(format!("index: {e}"))))
                .collect::<Result<Vec<_>>>()?;
            let r = run!(coll()?.create_indexes(models), session)?;
            let mut names = RawArrayBuf::new();
            for n in r.index_names {
                names.push(n);
            }
            rawdoc! { "names": names }
        }
        Op::DropIndex => {
            run!(coll()?.drop_index(str_field(spec, "name")?), session)?;
            RawDocumentBuf::new()
        }
        Op::DropIndexes => {
            run!(coll()?.drop_indexes(), session)?;
            RawDocumentBuf::new()
        }
        Op::DropCollection => {
            run!(coll()?.drop(), session)?;
            RawDocumentBuf::new()
        }
        Op::CreateCollection => {
            let (o, _) = options::<CreateCollectionOptions>(spec)?;
            run!(db.create_collection(str_field(spec, "name")?).with_options(o), session)?;
            RawDocumentBuf::new()
        }
        Op::ListCollectionNames => {
            let names = run!(db.list_collection_names().filter(doc_field(spec, "filter")?), session)?;
            let mut arr = RawArrayBuf::new();
            for n in names {
                arr.push(n);
            }
            rawdoc! { "names": arr }
        }
        // `attempt::command` runs commands, and a write the caller asks to retry comes without a session
        // (the driver keeps a session's transaction number to itself: only its typed writes can use it).
        Op::Command | Op::RetryableWrite => {
            return Err(invalid(format!("{op:?} is not run here; a retryable write takes no session")))
        }
        Op::DropDatabase => {
            run!(db.drop(), session)?;
            RawDocumentBuf::new()
        }
    };
    Ok(Some(reply))
}

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
    if let Ok(options) = spec.get_document("options") {
        for entry in options {
            let (key, value) = entry.map_err(|e| invalid(format!("options: {e}")))?;
            match key {
                "bypassDocumentValidation" | "comment" | "writeConcern" => {
                    command.append(key, value.to_raw_bson())
                }
                other => return Err(invalid(format!("insert_one does not take the option {other:?}")).into()),
            }
        }
    }
    let reply = retry::write(db, retry_sessions, command, retry_writes, deadline).await?;
    if reply.contains_key("writeErrors") || reply.contains_key("writeConcernError") {
        return Ok(Some(to_raw(reply)?));
    }
    Ok(Some(RawDocumentBuf::new()))
}

/// A server cursor, opened inside a session or not (the driver gives the two different types).
pub enum Opened {
    Plain(RawBatchCursor),
    InSession(SessionRawBatchCursor),
}

/// Opens a cursor; its first batch arrives with the reply, later ones on demand.
pub async fn open_cursor(
    db: &Database,
    op: CursorOp,
    spec: &RawDocument,
    session: Option<&mut ClientSession>,
) -> Result<Opened> {
    // Both arms of each match build the same action; only the session differs.
    macro_rules! open {
        ($action:expr) => {{
            let action = $action;
            match session {
                Some(s) => Ok(Opened::InSession(action.session(s).batch().await?)),
                None => Ok(Opened::Plain(action.batch().await?)),
            }
        }};
    }
    // Bound here, not per use: driver actions borrow the collection until they are awaited.
    let named: Option<Collection<RawDocumentBuf>> = spec.get_str("collection").ok().map(|n| db.collection(n));
    let coll = || named.as_ref().ok_or_else(|| invalid("collection: a collection name is required"));
    match op {
        CursorOp::Find => {
            let mut o = find_options(spec)?;
            o.selection_criteria = Some(selection_criteria(spec)?);
            open!(coll()?.find(doc_field(spec, "filter")?).with_options(o))
        }
        CursorOp::Aggregate => {
            let (mut o, mt) = options::<AggregateOptions>(spec)?;
            o.max_time = mt;
            o.selection_criteria = Some(selection_criteria(spec)?);
            let pipeline = pipeline_field(spec, "pipeline")?;
            match spec.get_str("collection") {
                Ok(_) => open!(coll()?.aggregate(pipeline).with_options(o)),
                Err(_) => open!(db.aggregate(pipeline).with_options(o)),
            }
        }
        // The driver runs these on the primary, as pymongo does (the Python layer sends no read preference).
        CursorOp::ListIndexes => open!(coll()?.list_indexes()),
        CursorOp::ListCollections => open!(db.list_collections().filter(doc_field(spec, "filter")?)),
        CursorOp::Command => command_cursor::open(db, spec, session, false).await,
    }
}

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
    use mongodb::bson::doc;

    #[test]
    fn parses_every_op_name() {
        for name in ["insert_one", "find_one", "update_many", "command", "drop_database"] {
            assert!(Op::parse(name).is_some(), "{name}");
        }
        assert!(Op::parse("nope").is_none());
        assert!(CursorOp::parse("aggregate").is_some());
        assert!(!Op::Command.on_collection());
        assert!(Op::FindOne.on_collection());
    }

    #[test]
    fn options_deserialize_from_camel_case() {
        let spec = rawdoc! { "options": { "sort": { "a": 1 }, "skip": 2_i32, "limit": 3_i64, "maxTimeMS": 50_i32,
        "hint": "a_1", "batchSize": 10_i32, "allowDiskUse": true, "comment": "c" } };
        let (o, mt) = options::<FindOptions>(&spec).unwrap();
        assert_eq!(mt, Some(Duration::from_millis(50)));
        assert_eq!(o.skip, Some(2));
        assert_eq!(o.limit, Some(3));
        assert_eq!(o.batch_size, Some(10));
        assert_eq!(o.sort, Some(doc! { "a": 1 }));
        assert!(o.hint.is_some());
        assert_eq!(o.allow_disk_use, Some(true));
    }

    #[test]
    fn read_preference_from_spec() {
        use mongodb::options::ReadPreference as Rp;
        let primary = selection_criteria(&rawdoc! {}).unwrap();
        assert!(matches!(primary, SelectionCriteria::ReadPreference(Rp::Primary)));
        let spec = rawdoc! { "readPreference": { "mode": "secondaryPreferred",
        "tagSets": [{ "dc": "ny" }, {}], "maxStalenessSeconds": 120_i32 } };
        match selection_criteria(&spec).unwrap() {
            SelectionCriteria::ReadPreference(Rp::SecondaryPreferred { options: Some(o) }) => {
                assert_eq!(o.tag_sets.as_ref().map(Vec::len), Some(2));
                assert_eq!(o.max_staleness, Some(Duration::from_secs(120)));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            rawdoc! { "readPreference": { "mode": "bogus" } },
            rawdoc! { "readPreference": { "mode": "primary", "tagSets": [{ "dc": "ny" }] } },
            rawdoc! { "readPreference": { "mode": "secondary", "tags": [] } },
            rawdoc! { "readPreference": "secondary" },
        ] {
            assert!(selection_criteria(&bad).is_err(), "{bad:?}");
        }
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
    fn find_options_carry_the_cursor_type_and_await_time() {
        let spec = rawdoc! { "options": { "tailable": true, "awaitData": true, "maxAwaitTimeMS": 250_i32,
        "maxTimeMS": 50_i64, "batchSize": 2_i32 } };
        let o = find_options(&spec).unwrap();
        assert!(matches!(o.cursor_type, Some(CursorType::TailableAwait)));
        assert_eq!(o.max_await_time, Some(Duration::from_millis(250)));
        assert_eq!(o.max_time, Some(Duration::from_millis(50)));
        assert_eq!(o.batch_size, Some(2));
        assert!(is_tailable(CursorOp::Find, &spec));
        assert!(!is_tailable(CursorOp::Aggregate, &spec));
        let o = find_options(&rawdoc! { "options": { "tailable": true } }).unwrap();
        assert!(matches!(o.cursor_type, Some(CursorType::Tailable)));
        assert!(o.max_await_time.is_none());
        let o = find_options(&rawdoc! {}).unwrap();
        assert!(o.cursor_type.is_none());
        assert!(!is_tailable(CursorOp::Find, &rawdoc! { "options": { "tailable": false } }));
        for bad in [
            rawdoc! { "options": { "awaitData": true } },
            rawdoc! { "options": { "tailable": 1_i32 } },
            rawdoc! { "options": { "tailable": true, "maxAwaitTimeMS": -5_i32 } },
        ] {
            assert!(find_options(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_negative_max_time() {
        let spec = rawdoc! { "options": { "maxTimeMS": -1_i32 } };
        assert!(options::<FindOptions>(&spec).is_err());
    }

    #[test]
    fn update_reply_counts_upsert_in_n() {
        let mut r = mongodb::results::UpdateResult::default();
        r.matched_count = 0;
        r.upserted_id = Some(Bson::Int32(7));
        let reply = update_reply(r);
        assert_eq!(reply.get_i64("n").unwrap(), 1);
        assert_eq!(reply.get_i32("upserted").unwrap(), 7);
    }
}
