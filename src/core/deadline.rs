//! `socketTimeoutMS`: the Rust driver refuses the option ("the Rust driver does not support
//! socketTimeoutMS"), so the core takes it out of the connection string and applies it itself, as a
//! deadline on each attempt of an operation. pymongo applies it to each socket read; a command's
//! attempt is one request and one reply, so an attempt that outlives it fails the same way: with a
//! network timeout (pymongo's `NetworkTimeout`), and its connection is closed, not reused (the driver
//! closes a connection whose command was dropped unfinished).

use std::future::IntoFuture;
use std::time::Duration;

use mongodb::error::{Error, ErrorKind, Result};

use super::labels::{self, Context, Labelled};

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
}
