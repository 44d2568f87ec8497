//! `socketTimeoutMS`: the Rust driver refuses the option ("the Rust driver does not support
//! socketTimeoutMS"), so the core takes it out of the connection string and applies it itself, as a
//! deadline on each attempt of an operation. pymongo applies it to each socket read; a command's
//! attempt is one request and one reply, so an attempt that outlives it fails the same way: with a
//! network timeout (pymongo's `NetworkTimeout`), and its connection is closed, not reused (the driver
//! closes a connection whose command was dropped unfinished).

use std::future::IntoFuture;
use std::time::Duration;

use mongodb::bson::RawDocument;
use mongodb::error::{Error, ErrorKind, Result};

use super::labels::{self, Context, Labelled};
use super::ops::{CursorOp, Op};

/// Runs `op`, failing it with a network timeout if it takes longer than `limit`.
pub async fn within<T, F>(limit: Option<Duration>, op: F) -> Result<T>
where
    F: IntoFuture<Output = Result<T>>,
{
    match limit {
        None => op.await,
        Some(limit) => match tokio::time::timeout(limit, op.into_future()).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(limit)),
        },
    }
}

/// `within`, with the labels pymongo gives a network timeout in `context`.
pub async fn bounded<T, F>(
    limit: Option<Duration>,
    context: Context,
    op: F,
) -> std::result::Result<T, Labelled>
where
    F: IntoFuture<Output = Result<T>>,
{
    match limit {
        None => op.await.map_err(Labelled::from),
        Some(limit) => match tokio::time::timeout(limit, op.into_future()).await {
            Ok(r) => r.map_err(Labelled::from),
            Err(_) => Err(labels::network_failure(timed_out(limit), context)),
        },
    }
}

/// `bounded` for a read the driver runs itself, run once more (`again`) if `retry` and the first attempt
/// was cut short: pymongo retries a read that timed out once, and a read changes nothing.
pub async fn bounded_read<T, F, G>(
    limit: Option<Duration>,
    retry: bool,
    first: F,
    again: impl FnOnce() -> G,
) -> std::result::Result<T, Labelled>
where
    F: IntoFuture<Output = Result<T>>,
    G: IntoFuture<Output = Result<T>>,
{
    match bounded(limit, Context::Other, first).await {
        Err(e) if retry && cut_short(&e) => bounded(limit, Context::Other, again()).await,
        r => r,
    }
}

/// The reads pymongo retries (retryReads): one-reply reads, and cursors that do not write (an aggregate
/// ending in `$out` or `$merge` is a write).
pub fn is_retryable_read(op: Op) -> bool {
    matches!(
        op,
        Op::FindOne
            | Op::CountDocuments
            | Op::EstimatedDocumentCount
            | Op::Distinct
            | Op::ListCollectionNames
    )
}

pub fn is_retryable_cursor(op: CursorOp, spec: &RawDocument) -> bool {
    let writes = || {
        let last = spec.get_array("pipeline").ok().and_then(|p| p.into_iter().last()?.ok());
        let stage = last.and_then(|s| s.as_document().and_then(|d| d.into_iter().next()?.ok()));
        stage.is_some_and(|(name, _)| name == "$out" || name == "$merge")
    };
    match op {
        CursorOp::Aggregate => !writes(),
        CursorOp::Command => super::ops::command_cursor::is_retryable(spec),
        _ => true,
    }
}

const TIMED_OUT: &str = "timed out (configured timeouts: socketTimeoutMS: ";

/// The error of an attempt cut short, worded as pymongo words it.
pub fn timed_out(limit: Duration) -> Error {
    let message = format!("{TIMED_OUT}{:.1}ms)", limit.as_secs_f64() * 1000.0);
    Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, message))
}

/// Whether the error is this module's, not the driver's.
pub fn cut_short(e: &Labelled) -> bool {
    is_timed_out(&e.error)
}

/// `cut_short` for an unlabelled error.
pub fn is_timed_out(e: &Error) -> bool {
    matches!(&*e.kind, ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut
        && io.to_string().starts_with(TIMED_OUT))
}

/// Takes `socketTimeoutMS` out of a connection string: the URI without it, and the timeout (None when
/// absent or 0, which means no timeout, as in pymongo). The last occurrence wins, as in the driver's
/// parsing of other options.
pub fn take_socket_timeout(uri: &str) -> std::result::Result<(String, Option<Duration>), String> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_owned(), None));
    };
    let mut timeout = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !key.eq_ignore_ascii_case("sockettimeoutms") {
            kept.push(pair);
            continue;
        }
        let ms: f64 = value.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0).ok_or_else(|| {
            format!("socketTimeoutMS must be a non-negative number of milliseconds, not {value:?}")
        })?;
        timeout = (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    let uri = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((uri, timeout))
}

#[cfg(test)]
mod tests {
    use mongodb::bson::rawdoc;
    use mongodb::error::RETRYABLE_WRITE_ERROR;

    use super::*;

    #[test]
    fn socket_timeout_is_taken_out_of_the_uri() {
        let (uri, t) =
            take_socket_timeout("mongodb://h:1/db?replicaSet=rs&socketTimeoutMS=1500&w=1").unwrap();
        assert_eq!(uri, "mongodb://h:1/db?replicaSet=rs&w=1");
        assert_eq!(t, Some(Duration::from_millis(1500)));
        let (uri, t) = take_socket_timeout("mongodb://h:1/?sockettimeoutms=0").unwrap();
        assert_eq!((uri.as_str(), t), ("mongodb://h:1/", None));
        let (uri, t) = take_socket_timeout("mongodb://h:1/?SOCKETTIMEOUTMS=2.5").unwrap();
        assert_eq!((uri.as_str(), t), ("mongodb://h:1/", Some(Duration::from_micros(2500))));
        assert_eq!(take_socket_timeout("mongodb://h:1/").unwrap(), ("mongodb://h:1/".to_owned(), None));
        for bad in ["mongodb://h/?socketTimeoutMS=-1", "mongodb://h/?socketTimeoutMS=abc"] {
            assert!(take_socket_timeout(bad).unwrap_err().contains("socketTimeoutMS"), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_attempt_past_its_deadline_is_a_labelled_network_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        };
        let e = bounded(Some(Duration::from_millis(10)), Context::RetryableWrite, slow).await.unwrap_err();
        assert!(matches!(&*e.error.kind, ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut));
        assert!(e.has(RETRYABLE_WRITE_ERROR));
        assert!(e.error.to_string().contains("socketTimeoutMS: 10.0ms"));
        let quick = async { Ok(7) };
        assert_eq!(within(Some(Duration::from_secs(5)), quick).await.unwrap(), 7);
        assert_eq!(within(None, async { Ok(8) }).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_read_cut_short_runs_once_more() {
        let limit = Some(Duration::from_millis(10));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(1)
        };
        assert_eq!(bounded_read(limit, true, slow, || async { Ok(2) }).await.unwrap(), 2);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(1)
        };
        assert!(cut_short(&bounded_read(limit, false, slow, || async { Ok(2) }).await.unwrap_err()));
        // A driver error is not the deadline's: no second run.
        let failed = async { Err(Error::custom("refused")) };
        assert!(bounded_read(limit, true, failed, || async { Ok(2) }).await.is_err());
    }

    #[test]
    fn reads_that_write_are_not_retried() {
        assert!(is_retryable_read(Op::FindOne) && !is_retryable_read(Op::UpdateOne));
        let plain = rawdoc! { "pipeline": [{ "$match": {} }] };
        let out = rawdoc! { "pipeline": [{ "$match": {} }, { "$out": "o" }] };
        assert!(is_retryable_cursor(CursorOp::Aggregate, &plain));
        // A command cursor says itself (pymongo retries its find and aggregate, not cursor_command).
        assert!(!is_retryable_cursor(CursorOp::Command, &rawdoc! { "command": { "find": "c" } }));
        let retryable = rawdoc! { "command": { "find": "c" }, "retryable": true };
        assert!(is_retryable_cursor(CursorOp::Command, &retryable));
        assert!(!is_retryable_cursor(CursorOp::Aggregate, &out));
        assert!(is_retryable_cursor(CursorOp::Find, &out));
    }
}
