//! Every way a request to the public router can end other than 200, mapped to
//! a status, a JSON body and a metric outcome in exactly one place (and the
//! 200 of accepted events).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::extract::FanOutError;
use crate::ingest::{Counts, IngestError};
use crate::signature::SignatureError;
use crate::source::HandshakeError;

/// How webhooks are sent: what a request to another path or method is told.
const HOW_TO_SEND: &str = "webhooks are sent as POST /webhooks/{source}";

/// A request that was not (fully) accepted.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 404: no source of that name is configured.
    #[error("no source named in the URL is configured")]
    UnknownSource,
    /// 404 `not_found`: a path other than `/webhooks/{source}`.
    #[error("{HOW_TO_SEND}")]
    NoRoute,
    /// 405 `method_not_allowed`: a method other than POST (or GET) on a webhook path.
    #[error("{HOW_TO_SEND}")]
    MethodNotAllowed,
    /// A GET handshake refused: 405 `method_not_allowed` for a source without
    /// one, else 403 `forbidden` (wrong mode or token, no challenge).
    #[error("{}", handshake_message(.0))]
    Handshake(HandshakeError),
    /// 413: the body is over `gateway.body_limit`.
    #[error("the body is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// 413 `too_many_events`: more events than `gateway.max_events_per_request`;
    /// 413 `fan_out_too_large`: their messages would add up to more than
    /// `gateway.max_fan_out_bytes()`. Nothing is published.
    #[error(transparent)]
    FanOut(#[from] FanOutError),
    /// 408: the client did not send its body within `gateway.body_read_timeout`.
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// 400: the body could not be read (connection cut, bad chunking).
    #[error("the body could not be read")]
    BodyRead,
    /// 401: authentication failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// 503 from the ingest core. In flight elsewhere: `Retry-After: 1`, not
    /// a 4xx (some providers never retry a 4xx, and if the other copy's
    /// publish then fails the event would be lost). Not durable within the
    /// budget: `Retry-After: retry_after`.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// 503 with `Retry-After: 1`: a load cap is reached; shed at once.
    #[error("the gateway is at its limit of {0}; retry in a second")]
    Overloaded(Overload),
    /// 431: the request head is over `max_header_bytes` or `max_headers`.
    #[error("the request headers are too large: {0}")]
    HeadersTooLarge(String),
    /// 403: the client address is not in the source's `allow_ips`.
    #[error("this client address may not post to this source")]
    ForbiddenAddress,
    /// 429: the source's `rate_limit` is used up; retry after the wait.
    #[error("the source's rate limit is reached; retry in {} s", whole_seconds(*.0))]
    RateLimited(Duration),
}

/// Which cap shed a request (the `reason` of `sluice_gateway_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// `max_connections` (answered by the listener, before HTTP is served).
    Connections,
    /// `max_requests_in_flight`.
    Requests,
    /// `max_body_memory`.
    BodyMemory,
}

impl Overload {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Requests => "requests",
            Self::BodyMemory => "body_memory",
        }
    }
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connections => "open connections",
            Self::Requests => "requests in flight",
            Self::BodyMemory => "request bodies held in memory",
        })
    }
}

/// Seconds for `Retry-After`: whole, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// A refused handshake's message: why, and what Meta's handshake looks like.
fn handshake_message(refusal: &HandshakeError) -> String {
    match refusal {
        HandshakeError::NotSupported => format!("{refusal}: {HOW_TO_SEND}"),
        _ => format!(
            "{refusal}: Meta's handshake is GET /webhooks/{{source}}?hub.mode=subscribe\
             &hub.verify_token=<the source's verify_token>&hub.challenge=<text to echo>"
        ),
    }
}

/// The ingest core's refusals, answered as its error says.
impl GatewayError {
    /// The metric outcome word for this answer.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::NoRoute => "not_found",
            Self::MethodNotAllowed | Self::Handshake(HandshakeError::NotSupported) => {
                "method_not_allowed"
            }
            Self::Handshake(_) => "forbidden",
            Self::TooLarge { .. } => "too_large",
            Self::FanOut(FanOutError::TooManyEvents { .. }) => "too_many_events",
            Self::FanOut(FanOutError::TooManyBytes { .. }) => "fan_out_too_large",
            Self::BodyTimeout => "timeout",
            Self::BodyRead => "bad_request",
            Self::Signature(_) => "invalid_signature",
            Self::Ingest(IngestError::InFlight(_)) => "in_flight",
            Self::Ingest(IngestError::Unavailable { .. }) => "unavailable",
            Self::Overloaded(_) => "overloaded",
            Self::HeadersTooLarge(_) => "headers_too_large",
            Self::ForbiddenAddress => "forbidden",
            Self::RateLimited(_) => "rate_limited",
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UnknownSource => (StatusCode::NOT_FOUND, "unknown_source"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed | Self::Handshake(HandshakeError::NotSupported) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            Self::Handshake(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::FanOut(FanOutError::TooManyEvents { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events")
            }
            Self::FanOut(FanOutError::TooManyBytes { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "fan_out_too_large")
            }
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::BodyRead => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Signature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            Self::Ingest(IngestError::InFlight(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "in_flight")
            }
            Self::Ingest(IngestError::Unavailable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::ForbiddenAddress => (StatusCode::FORBIDDEN, "forbidden_address"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }

    /// The raw HTTP/1.1 answer to a connection shed before hyper serves it:
    /// the status, JSON body and `Retry-After` that [`IntoResponse`] gives a
    /// shed request, written out by hand.
    pub fn shed_connection_answer() -> Vec<u8> {
        let error = Self::Overloaded(Overload::Connections);
        let (status, code) = error.status_and_code();
        let body = json!({"error": code, "message": error.to_string()}).to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// The answer: `{"error": code, "message": what went wrong and what to do}`,
/// with `Retry-After` (seconds) where a retry is the way out.
impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = json!({"error": code, "message": self.to_string()});
        let retry = match &self {
            Self::Ingest(IngestError::InFlight(counts)) => {
                if let (Some(obj), Ok(serde_json::Value::Object(extra))) =
                    (body.as_object_mut(), serde_json::to_value(counts))
                {
                    obj.extend(extra);
                }
                Some(1)
            }
            Self::Ingest(IngestError::Unavailable { retry_after, .. }) => {
                Some(retry_after.as_secs().max(1))
            }
            Self::Overloaded(_) => Some(1),
            Self::RateLimited(wait) => Some(whole_seconds(*wait)),
            _ => None,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// 200 `{"ok":true,"accepted":N,"duplicates":M}` (and `dead_lettered` when kept aside).
pub fn accepted_response(counts: Counts) -> Response {
    let mut body = json!({"ok": true});
    if let (Some(obj), Ok(serde_json::Value::Object(extra))) =
        (body.as_object_mut(), serde_json::to_value(counts))
    {
        obj.extend(extra);
    }
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: GatewayError) -> (u16, serde_json::Value) {
        let response = error.into_response();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_fan_out_too_large_is_a_413_with_its_own_code_and_what_to_do() {
        let events = FanOutError::TooManyEvents {
            events: 5_001,
            limit: 5_000,
        };
        let (status, body) = answer(events.into()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (413, Some("too_many_events"))
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("5001") && message.contains("smaller batches"),
            "{message}"
        );
        let bytes = FanOutError::TooManyBytes {
            events: 200,
            bytes: 4_100_000,
            limit: 262_144,
        };
        let error = GatewayError::from(bytes);
        assert_eq!(error.outcome(), "fan_out_too_large");
        let (status, body) = answer(error).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (413, Some("fan_out_too_large"))
        );
    }

    #[test]
    fn retry_after_rounds_a_wait_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
