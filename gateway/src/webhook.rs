//! `POST /webhooks/{source}`: a short pipeline.
//!
//! read (bounded in size and time) → authenticate → extract → ingest
//! (dedup, publish, confirm) → answer. The whole request runs against one
//! deadline, request start plus `gateway.ack_budget`. Each request runs in a
//! `webhook` span (`source`, `request_id`, `trace_id`, see
//! [`crate::correlation`]) and ends in one line with its outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::correlation::Correlation;
use crate::error::{Counts, GatewayError, accepted_response};
use crate::extract::Extracted;
use crate::ingest::{RequestContext, dead_letter_unparseable, ingest_events};
use crate::metrics::UNKNOWN_SOURCE;
use crate::source::HandshakeError;

pub use crate::correlation::REQUEST_ID_HEADER;

pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let correlation = Correlation::from_headers(&headers);
    // Unknown names are tenant-supplied text: never a metric label.
    let label = if state.sources.get(&source).is_some() {
        source.as_str()
    } else {
        UNKNOWN_SOURCE
    };
    let span = tracing::info_span!(
        "webhook",
        source = label,
        request_id = %correlation.request_id,
        trace_id = %correlation.trace.trace_id(),
    );
    state.metrics.in_flight.inc();
    let result = handle(&state, &source, &headers, body, started, &correlation)
        .instrument(span.clone())
        .await;
    state.metrics.in_flight.dec();
    let (outcome, mut response) = span.in_scope(|| answer(result, state.config.retry_after));
    state
        .metrics
        .requests
        .with_label_values(&[label, outcome])
        .inc();
    state
        .metrics
        .ack_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&correlation.request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The answer and its metric outcome, with the request's last log line.
fn answer(result: Result<Answer, GatewayError>, retry_after: Duration) -> (&'static str, Response) {
    match result {
        Ok(Answer::Accepted(counts)) => {
            tracing::info!(
                accepted = counts.accepted,
                duplicates = counts.duplicates,
                "accepted"
            );
            (counts.outcome(), accepted_response(counts))
        }
        Ok(Answer::Challenge(value)) => {
            tracing::info!("verification challenge answered");
            ("challenge", text_response(value))
        }
        Err(error) => {
            log_refusal(&error);
            (error.outcome(), error.into_response_with(retry_after))
        }
    }
}

async fn handle(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
    correlation: &Correlation,
) -> Result<Answer, GatewayError> {
    let source = state.sources.get(name).ok_or(GatewayError::UnknownSource)?;
    let deadline = started + state.config.ack_budget;
    let read_deadline = (started + state.config.body_read_timeout).min(deadline);
    let bytes = read_body(headers, body, state.config.body_limit, read_deadline).await?;
    let verified = source.authenticate(headers, bytes)?;
    let ctx = RequestContext {
        source,
        correlation,
        received: SystemTime::now(),
        deadline,
    };
    match source.extract(&verified) {
        Extracted::Events(events) => match source.challenge_answer(&events) {
            Some(value) => Ok(Answer::Challenge(value)),
            None => ingest_events(state, &ctx, events)
                .await
                .map(Answer::Accepted),
        },
        Extracted::Unparseable { id } => dead_letter_unparseable(state, &ctx, id, &verified)
            .await
            .map(Answer::Accepted),
    }
}

/// A 200 answer.
enum Answer {
    /// Events made durable (or found duplicate, or kept as unparseable).
    Accepted(Counts),
    /// A verification challenge's value, echoed as text.
    Challenge(String),
}

/// `GET /webhooks/{source}`: Meta's subscription handshake.
pub async fn handshake(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(found) = state.sources.get(&source) else {
        state
            .metrics
            .requests
            .with_label_values(&[UNKNOWN_SOURCE, "unknown_source"])
            .inc();
        return GatewayError::UnknownSource.into_response_with(state.config.retry_after);
    };
    let param = |key: &str| query.get(key).map(String::as_str);
    let result = found.handshake(
        param("hub.mode"),
        param("hub.verify_token"),
        param("hub.challenge"),
    );
    let (outcome, response) = match result {
        Ok(challenge) => ("handshake", text_response(challenge)),
        Err(HandshakeError::NotSupported) => ("bad_request", method_not_allowed().await),
        Err(refusal) => {
            tracing::info!(source = %source, reason = %refusal, "handshake refused");
            let body = serde_json::json!({"error": "forbidden", "message": refusal.to_string()});
            (
                "forbidden",
                (StatusCode::FORBIDDEN, axum::Json(body)).into_response(),
            )
        }
    };
    state
        .metrics
        .requests
        .with_label_values(&[source.as_str(), outcome])
        .inc();
    response
}

/// A raw text answer (a challenge echo), never sniffed as HTML.
fn text_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// Reads the body without ever holding more than `limit` bytes or waiting past `deadline`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::TooLarge { limit });
    }
    let read = async {
        let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0));
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| GatewayError::BodyRead)?;
            if buffer.len() + chunk.len() > limit {
                return Err(GatewayError::TooLarge { limit });
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| GatewayError::BodyTimeout)?
}

/// Client mistakes are routine (info); failing to make events durable is ours (warn).
fn log_refusal(error: &GatewayError) {
    match error {
        GatewayError::Unavailable(cause) => tracing::warn!(error = %cause, "answered 503"),
        GatewayError::InFlight(counts) => {
            tracing::info!(
                in_flight = counts.in_flight,
                "answered 503: events in flight elsewhere"
            )
        }
        other => tracing::info!(outcome = other.outcome(), reason = %other, "refused"),
    }
}

/// 404 for any other path, as JSON like every other answer.
pub async fn not_found() -> Response {
    plain_error(StatusCode::NOT_FOUND, "not_found")
}

/// 405 for another method on a webhook path.
pub async fn method_not_allowed() -> Response {
    plain_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
}

fn plain_error(status: StatusCode, code: &str) -> Response {
    let message = "webhooks are sent as POST /webhooks/{source}";
    (
        status,
        axum::Json(serde_json::json!({"error": code, "message": message})),
    )
        .into_response()
}
