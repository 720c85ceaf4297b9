//! How a dead-letter-queue operation fails, and what the operator does about it.
//!
//! Every variant's message says what to do next. [`DlqError::exit_code`]
//! keeps the command's exit status honest (64 for a usage error, 1 for the
//! broker or the file system), and [`DlqError::status`] and
//! [`DlqError::code`] are its HTTP status and JSON `error` on the admin port. A failure never loses a message: whatever a command had
//! not acknowledged goes back to the dead queue, in its place, when its
//! channel closes.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use sluice_shared::amqp::ConnectError;
use sluice_shared::config::EXIT_BAD_CONFIG;

use super::filter::FilterError;

/// Why a `dlq` operation stopped.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A filter or flag that cannot be used (exit 64, HTTP 400).
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// A flag or parameter that cannot be used (exit 64, HTTP 400).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// The dead queue does not exist (exit 64, HTTP 503).
    #[error(
        "the dead queue `{0}` does not exist: check amqp.prefix (the worker and gateway declare \
         it when they start)"
    )]
    Missing(String),
    /// Another `dlq` command (CLI or HTTP) is working on this dead queue (HTTP 409).
    #[error(
        "another dlq command is working on this dead queue (it holds the lock queue `{0}`); \
         wait for it to finish and run this one again"
    )]
    Locked(String),
    #[error(
        "RabbitMQ failed while {doing}: {source}; nothing unacknowledged is lost, run the command again"
    )]
    Broker {
        doing: &'static str,
        source: lapin::Error,
    },
    #[error(
        "RabbitMQ did not answer within {limit:?} while {doing}; nothing unacknowledged is lost, run the command again"
    )]
    Timeout {
        doing: &'static str,
        limit: Duration,
    },
    #[error(
        "the dead queue's channel closed while {0}; whatever was not acknowledged is back \
         in the queue, in order: run the command again"
    )]
    ChannelClosed(&'static str),
    /// A purge confirmation that cannot be used (exit 64, HTTP 400).
    #[error("{0}")]
    Confirmation(String),
    /// The pass received fewer messages than the dead queue counted when it
    /// started: something else consumes the dead queue (exit 1, HTTP 503).
    #[error(
        "the pass received {received} of the {snapshot} messages the dead queue counted, then \
         nothing for {idle:?}: something other than a dlq command is consuming the dead queue \
         (see its consumers in RabbitMQ); nothing was changed, stop that consumer and run \
         the command again"
    )]
    ShortPass {
        received: u32,
        snapshot: u32,
        idle: Duration,
    },
    /// The dead queue has a consumer that holds messages a count cannot see:
    /// a command killed a moment ago whose messages are not back yet, or
    /// something other than a dlq command (exit 1, HTTP 503).
    #[error(
        "the dead queue still has {consumers} consumer(s) after {waited:?}: the messages they \
         hold cannot be counted, so no pass starts; nothing was changed. A dlq command killed a \
         moment ago gives its messages back within seconds: run the command again; otherwise \
         stop whatever consumes the dead queue (see its consumers in RabbitMQ)"
    )]
    Consumers { consumers: u32, waited: Duration },
    /// The export file cannot be created (exit 64, HTTP 400).
    #[error("cannot create {path}: {problem}")]
    OutFile { path: PathBuf, problem: String },
    /// Writing or syncing the export file failed; nothing was removed.
    #[error("writing {path} failed: {source}; nothing was removed from the dead queue")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<ConnectError> for DlqError {
    fn from(error: ConnectError) -> Self {
        Self::Connect(Box::new(error))
    }
}

impl DlqError {
    pub(crate) fn broker(doing: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Broker { doing, source }
    }

    pub(crate) fn timeout(doing: &'static str, limit: Duration) -> Self {
        Self::Timeout { doing, limit }
    }

    /// The process exit status: 64 for usage, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Filter(_)
            | Self::Usage(_)
            | Self::Confirmation(_)
            | Self::OutFile { .. }
            | Self::Missing(_) => EXIT_BAD_CONFIG,
            _ => 1,
        }
    }

    /// The HTTP status of this error on the admin port.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Filter(_) | Self::Usage(_) | Self::Confirmation(_) | Self::OutFile { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Locked(_) => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` of its JSON answer on the admin port (`message` is the text).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Filter(_) => "invalid_filter",
            Self::Usage(_) | Self::OutFile { .. } => "invalid_request",
            Self::Confirmation(_) => "invalid_confirmation",
            Self::Missing(_) => "no_dead_queue",
            Self::Locked(_) => "locked",
            Self::ShortPass { .. } | Self::Consumers { .. } => "incomplete_pass",
            Self::Connect(_)
            | Self::Broker { .. }
            | Self::Timeout { .. }
            | Self::ChannelClosed(_) => "broker_unavailable",
            Self::Write { .. } => "write_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_stops_short_fails_and_says_nothing_changed() {
        let short = DlqError::ShortPass {
            received: 3,
            snapshot: 10,
            idle: Duration::from_secs(5),
        };
        assert_eq!(short.exit_code(), 1);
        assert_eq!(short.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(short.code(), "incomplete_pass");
        let text = short.to_string();
        assert!(text.contains("3 of the 10"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
    }

    #[test]
    fn a_queue_with_a_consumer_is_not_counted_and_says_what_to_do() {
        let held = DlqError::Consumers {
            consumers: 1,
            waited: Duration::from_secs(10),
        };
        assert_eq!(held.exit_code(), 1);
        assert_eq!(held.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(held.code(), "incomplete_pass");
        let text = held.to_string();
        assert!(text.contains("nothing was changed"), "{text}");
        assert!(text.contains("run the command again"), "{text}");
    }

    #[test]
    fn usage_errors_are_64_and_400() {
        for error in [
            DlqError::Usage("x".into()),
            DlqError::Confirmation("x".into()),
        ] {
            assert_eq!(error.exit_code(), 64);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        }
    }
}
