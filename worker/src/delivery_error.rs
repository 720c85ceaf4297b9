//! How a delivery attempt fails, decided by type and never by matching text.
//!
//! A [`DeliveryError`] is either worth another attempt later (`Transient`:
//! the receiver is busy, down or slow) or not (`Permanent`: it refused this
//! event and will refuse it again). The error text is a short description
//! (`HTTP 503`, `timed out after 10s`, `connection refused`) that ends up in
//! logs and in the dead queue's headers, so it never carries a response body
//! or the payload.

use std::error::Error as _;
use std::io;
use std::time::Duration;

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// 408, 425, 429, 5xx, a timeout or a connection error: try again later.
    #[error("{error}")]
    Transient {
        status: Option<u16>,
        /// The receiver's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        error: String,
    },
    /// Any other non-2xx answer (3xx included, since redirects are not
    /// followed): retrying cannot help, the event goes to the dead queue.
    #[error("{error}")]
    Permanent { status: Option<u16>, error: String },
}

impl DeliveryError {
    /// The HTTP status the receiver answered, if it answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Transient { status, .. } | Self::Permanent { status, .. } => *status,
        }
    }

    /// The short description, for logs and the dead queue.
    pub fn description(&self) -> &str {
        match self {
            Self::Transient { error, .. } | Self::Permanent { error, .. } => error,
        }
    }
}

/// Whether a status is worth another attempt: the receiver asked for one
/// (408 Request Timeout, 425 Too Early, 429 Too Many Requests) or failed (5xx).
fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// The outcome of an HTTP answer with `status` and a parsed `Retry-After`.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Result<(), DeliveryError> {
    let error = format!("HTTP {status}");
    if (200..300).contains(&status) {
        Ok(())
    } else if is_transient_status(status) {
        Err(DeliveryError::Transient {
            status: Some(status),
            retry_after,
            error,
        })
    } else {
        Err(DeliveryError::Permanent {
            status: Some(status),
            error,
        })
    }
}

/// A `Retry-After` in whole seconds; an HTTP-date (rare from webhook
/// receivers) is ignored and the normal backoff applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The outcome of a request that got no answer at all.
pub fn classify_transport(error: &reqwest::Error, timeout: Duration) -> DeliveryError {
    if error.is_builder() {
        // The request itself cannot be made (e.g. an event id that is not a
        // valid header value): the same event will fail the same way.
        return DeliveryError::Permanent {
            status: None,
            error: "the request could not be built".into(),
        };
    }
    let description = if error.is_timeout() {
        timed_out(timeout)
    } else if let Some(kind) = io_error_kind(error) {
        describe_io(kind, error.is_connect())
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed before an answer".to_owned()
    };
    DeliveryError::Transient {
        status: None,
        retry_after: None,
        error: description,
    }
}

/// `timed out after 10s`.
pub fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
}

/// The kind of the first I/O error in the cause chain, if there is one.
fn io_error_kind(error: &reqwest::Error) -> Option<io::ErrorKind> {
    let mut cause = error.source();
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cause = current.source();
    }
    None
}

fn describe_io(kind: io::ErrorKind, connecting: bool) -> String {
    match kind {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::TimedOut => "connection timed out".into(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => "connection closed".into(),
        _ if connecting => "connection failed".into(),
        _ => "request failed before an answer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_2xx_is_a_success() {
        assert_eq!(classify_status(200, None), Ok(()));
        assert_eq!(classify_status(204, None), Ok(()));
        assert_eq!(classify_status(299, None), Ok(()));
    }

    #[test]
    fn a_503_is_transient_and_keeps_its_retry_after() {
        let err = classify_status(503, Some(Duration::from_secs(30))).unwrap_err();
        assert_eq!(
            err,
            DeliveryError::Transient {
                status: Some(503),
                retry_after: Some(Duration::from_secs(30)),
                error: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn timeouts_too_early_and_rate_limits_are_transient() {
        for status in [408, 425, 429, 500, 502, 504, 599] {
            let err = classify_status(status, None).unwrap_err();
            assert!(matches!(err, DeliveryError::Transient { .. }), "{status}");
            assert_eq!(err.status(), Some(status));
        }
    }

    #[test]
    fn other_4xx_and_redirects_are_permanent() {
        for status in [301, 302, 307, 400, 401, 403, 404, 409, 410, 422] {
            let err = classify_status(status, Some(Duration::from_secs(1))).unwrap_err();
            assert_eq!(
                err,
                DeliveryError::Permanent {
                    status: Some(status),
                    error: format!("HTTP {status}")
                }
            );
        }
    }

    #[test]
    fn retry_after_is_read_as_whole_seconds_only() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None);
    }

    #[test]
    fn a_timeout_reads_as_a_short_sentence() {
        assert_eq!(timed_out(Duration::from_secs(10)), "timed out after 10s");
        assert_eq!(
            timed_out(Duration::from_millis(1500)),
            "timed out after 1s 500ms"
        );
    }

    #[test]
    fn socket_errors_get_short_names() {
        assert_eq!(
            describe_io(io::ErrorKind::ConnectionRefused, true),
            "connection refused"
        );
        assert_eq!(
            describe_io(io::ErrorKind::ConnectionReset, false),
            "connection reset"
        );
        assert_eq!(describe_io(io::ErrorKind::Other, true), "connection failed");
    }
}
