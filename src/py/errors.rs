//! Driver and core errors as instances of pymongo's exception classes, so applications' existing
//! `except pymongo.errors.X` clauses keep working.

use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::manager::CoreError;
use crate::core::ops::InvalidSpec;

fn class<'py>(py: Python<'py>, module: &str, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import(module)?.getattr(name)
}

fn errors_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    class(py, "pymongo.errors", name)
}

/// A BSON document as the Python dict pymongo would have produced.
fn to_dict<'py>(py: Python<'py>, d: &Document) -> PyResult<Bound<'py, PyAny>> {
    let bytes =
        mongodb::bson::to_vec(d).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    class(py, "bson", "decode")?.call1((PyBytes::new(py, &bytes),))
}

fn make<'py, A>(py: Python<'py>, cls: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    match errors_class(py, cls).and_then(|c| c.call1(args)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

fn make_failure(py: Python<'_>, cls: &str, message: String, code: i32, details: Document) -> PyErr {
    match to_dict(py, &details) {
        Ok(d) => make(py, cls, (message, code, d)),
        Err(e) => e,
    }
}

/// `details` with the error's labels under `errorLabels`, as pymongo's: a server reply keeps its own
/// (in the server's order); a document the driver's error was rebuilt into gets the driver's.
fn with_labels(mut details: Document, e: &Error) -> Document {
    let mut labels: Vec<&String> = e.labels().iter().collect();
    labels.sort();
    if !labels.is_empty() && !details.contains_key("errorLabels") {
        details
            .insert("errorLabels", labels.into_iter().map(|l| Bson::String(l.clone())).collect::<Vec<_>>());
    }
    details
}

/// pymongo's "not primary" codes (NotWritablePrimary, NotPrimaryNoSecondaryOk, ...).
fn is_not_primary(code: i32) -> bool {
    matches!(code, 10107 | 13435 | 13436 | 11600 | 11602 | 189 | 91)
}

fn server_reply(e: &Error) -> Option<Document> {
    e.server_response().and_then(|raw| Document::try_from(raw.as_ref()).ok())
}

fn last_write_error(e: &Error) -> Option<Document> {
    let reply = server_reply(e)?;
    let errors = reply.get_array("writeErrors").ok()?;
    match errors.last()? {
        Bson::Document(d) => Some(d.clone()),
        _ => None,
    }
}

/// The driver's words for a maxStalenessSeconds below its minimum (90 s, and heartbeat frequency + 10 s).
const MAX_STALENESS: &str = "invalid max_staleness value: ";

fn is_duplicate_key(code: i32) -> bool {
    matches!(code, 11000 | 11001 | 12582)
}

pub fn core_error(py: Python<'_>, e: CoreError, scrub: &dyn Fn(&str) -> String) -> PyErr {
    match e {
        CoreError::Closed | CoreError::Stopped => make(py, "InvalidOperation", (e.to_string(),)),
        CoreError::InvalidName(m) => make(py, "InvalidName", (m,)),
        CoreError::Misuse(m) => make(py, "InvalidOperation", (m,)),
        CoreError::Configuration(m) => make(py, "ConfigurationError", (scrub(&m),)),
        CoreError::Driver(e) => driver_error(py, &e, scrub),
        CoreError::Labelled(l) => labelled(py, driver_error_class(py, &l.error, scrub), l.labels.iter()),
        CoreError::WaitQueueTimeout { .. } | CoreError::BudgetTimeout { .. } => {
            make(py, "WaitQueueTimeoutError", (e.to_string(),))
        }
        CoreError::Authentication(m) => {
            let m = scrub(&m);
            let details = doc! { "ok": 0.0, "errmsg": &m, "code": 18, "codeName": "AuthenticationFailed" };
            make_failure(py, "OperationFailure", m, 18, details)
        }
    }
}

/// The driver error as a pymongo exception carrying the driver's error labels (so that
/// `has_error_label("TransientTransactionError")` works, as `with_transaction` needs).
pub fn driver_error(py: Python<'_>, e: &Error, scrub: &dyn Fn(&str) -> String) -> PyErr {
    labelled(py, driver_error_class(py, e, scrub), e.labels().iter())
}

/// `err` with `labels` added (pymongo's `_error_labels`; errors that are not PyMongoErrors take none).
fn labelled<'a>(py: Python<'_>, err: PyErr, labels: impl Iterator<Item = &'a String>) -> PyErr {
    let value = err.value(py);
    if value.hasattr("_add_error_label").unwrap_or(false) {
        for label in labels {
            let _ = value.call_method1("_add_error_label", (label.as_str(),));
        }
    }
    err
}

fn driver_error_class(py: Python<'_>, e: &Error, scrub: &dyn Fn(&str) -> String) -> PyErr {
    match e.kind.as_ref() {
        ErrorKind::Command(c) if is_not_primary(c.code) => {
            // pymongo's NotPrimaryError is an AutoReconnect: retrying on the new primary is right.
            let details =
                server_reply(e).unwrap_or_else(|| doc! { "ok": 0.0, "errmsg": &c.message, "code": c.code });
            match to_dict(py, &with_labels(details, e)) {
                Ok(d) => make(py, "NotPrimaryError", (scrub(&c.message), d)),
                Err(err) => err,
            }
        }
        ErrorKind::Command(c) => {
            let cls = match c.code {
                50 => "ExecutionTimeout",
                43 => "CursorNotFound",
                code if is_duplicate_key(code) => "DuplicateKeyError",
                _ => "OperationFailure",
            };
            // The whole server reply, as pymongo's `details`, when the driver kept it.
            let details = server_reply(e).unwrap_or_else(
                || doc! { "ok": 0.0, "errmsg": &c.message, "code": c.code, "codeName": &c.code_name },
            );
            make_failure(py, cls, scrub(&c.message), c.code, with_labels(details, e))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            let cls = if is_duplicate_key(w.code) { "DuplicateKeyError" } else { "WriteError" };
            // pymongo's details are the server's writeErrors entry (with keyPattern and keyValue for a
            // duplicate key, which apps read to tell which unique field collided).
            let details = last_write_error(e).unwrap_or_else(|| {
                let mut d = doc! { "index": 0, "code": w.code, "errmsg": &w.message };
                if let Some(name) = &w.code_name {
                    d.insert("codeName", name);
                }
                if let Some(info) = &w.details {
                    d.insert("errInfo", info.clone());
                }
                d
            });
            make_failure(py, cls, scrub(&w.message), w.code, details)
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            let mut details = doc! { "code": w.code, "codeName": &w.code_name, "errmsg": &w.message };
            if let Some(info) = &w.details {
                details.insert("errInfo", info.clone());
            }
            make_failure(py, "WriteConcernError", scrub(&w.message), w.code, with_labels(details, e))
        }
        ErrorKind::InsertMany(m) => {
            let write_errors: Vec<Bson> = m
                .write_errors
                .iter()
                .flatten()
                .map(|w| {
                    let mut d = doc! { "index": w.index as i64, "code": w.code, "errmsg": &w.message };
                    if let Some(name) = &w.code_name {
                        d.insert("codeName", name);
                    }
                    if let Some(info) = &w.details {
                        d.insert("errInfo", info.clone());
                    }
                    Bson::Document(d)
                })
                .collect();
            let concern: Vec<Bson> = m
                .write_concern_error
                .iter()
                .map(|w| {
                    let mut d = doc! { "code": w.code, "codeName": &w.code_name, "errmsg": &w.message };
                    if let Some(info) = &w.details {
                        d.insert("errInfo", info.clone());
                    }
                    Bson::Document(d)
                })
                .collect();
            let details = doc! {
                "writeErrors": write_errors, "writeConcernErrors": concern,
                // nInserted is filled in by the Python layer, which knows how many documents it sent.
                "nInserted": 0_i64, "nUpserted": 0_i64, "nMatched": 0_i64,
                "nModified": 0_i64, "nRemoved": 0_i64, "upserted": [],
            };
            match to_dict(py, &details) {
                Ok(d) => make(py, "BulkWriteError", (d,)),
                Err(err) => err,
            }
        }
        ErrorKind::ServerSelection { message, .. } => {
            make(py, "ServerSelectionTimeoutError", (scrub(message),))
        }
        ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            make(py, "NetworkTimeout", (scrub(&e.to_string()),))
        }
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            make(py, "AutoReconnect", (scrub(&e.to_string()),))
        }
        ErrorKind::Authentication { message, .. } => make_failure(
            py,
            "OperationFailure",
            scrub(message),
            18,
            doc! { "ok": 0.0, "errmsg": message, "code": 18 },
        ),
        // pymongo raises ConfigurationError, at server selection too, for a maxStalenessSeconds the
        // replica set's heartbeat frequency cannot honour.
        ErrorKind::InvalidArgument { message, .. } if message.starts_with(MAX_STALENESS) => make(
            py,
            "ConfigurationError",
            (format!("maxStalenessSeconds {}", &message[MAX_STALENESS.len()..]),),
        ),
        ErrorKind::InvalidArgument { message, .. } => make(py, "InvalidOperation", (scrub(message),)),
        ErrorKind::BsonSerialization(_) | ErrorKind::BsonDeserialization(_) => {
            match class(py, "bson.errors", "InvalidDocument").and_then(|c| c.call1((e.to_string(),))) {
                Ok(exc) => PyErr::from_value(exc),
                Err(err) => err,
            }
        }
        ErrorKind::Shutdown => {
            make(py, "InvalidOperation", ("this tenant's client was shut down; retry the operation",))
        }
        ErrorKind::DnsResolve { message, .. } | ErrorKind::IncompatibleServer { message, .. } => {
            make(py, "ConfigurationError", (scrub(message),))
        }
        ErrorKind::Transaction { message, .. } => make(py, "InvalidOperation", (scrub(message),)),
        // pymongo's words for a change stream whose pipeline removed the events' `_id`.
        ErrorKind::MissingResumeToken => make(
            py,
            "InvalidOperation",
            ("Cannot provide resume functionality when the resume token is missing.",),
        ),
        ErrorKind::Custom(c) => match c.downcast_ref::<InvalidSpec>() {
            Some(InvalidSpec(m)) => make(py, "InvalidOperation", (scrub(m),)),
            None => make(py, "PyMongoError", (scrub(&e.to_string()),)),
        },
        _ => make(py, "PyMongoError", (scrub(&e.to_string()),)),
    }
}
