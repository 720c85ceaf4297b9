//! `POST /webhooks/{source}`: a short pipeline.
//!
//! a slot (`max_requests_in_flight`) → source → client address
//! (`allow_ips`) → signature headers (before any body byte is read) → head
//! size → rate limit → read (bounded in size, time and shared memory) →
//! verify and extract (on a blocking thread for large bodies) → ingest
//! ([`crate::ingest`]: dedup, publish, confirm) → answer ([`crate::error`]
//! for every refusal). Everything that can refuse a request
//! without its body does so before the body is read. The whole request runs
//! against one deadline, request start plus `gateway.ack_budget`. Each
//! request runs in a `webhook` span (`source`, `request_id`, `trace_id`, see
//! [`crate::correlation`]) and ends in one line with its outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sluice_shared::config::{GatewayConfig, LimitsConfig};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::admission;
use crate::body::{declared_length, read_body};
use crate::correlation::Correlation;
use crate::error::{GatewayError, Overload, accepted_response};
use crate::extract::Extracted;
use crate::ingest::{Counts, IngestError, RequestContext, Unavailable};
use crate::log_budget::LogBudget;
use crate::metrics::UNKNOWN_SOURCE;
use crate::signature::{Presented, VerifiedBody};
use crate::source::Source;
use crate::state::AppState;

pub use crate::correlation::REQUEST_ID_HEADER;

pub async fn receive(
    State(state): State<Arc<AppState>>,
    source: Result<Path<String>, PathRejection>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A name that does not decode (invalid UTF-8) names no source.
    let source = source.map(|Path(name)| name).unwrap_or_default();
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
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
    let request = Request {
        name: &source,
        peer,
        headers: &headers,
        started,
        correlation: &correlation,
    };
    let result = handle(&state, request, body).instrument(span.clone()).await;
    state.metrics.in_flight.dec();
    if let Err(GatewayError::Overloaded(cap)) = &result {
        state.metrics.shed.with_label_values(&[cap.label()]).inc();
    }
    let (outcome, mut response) = span.in_scope(|| answer(result, &state.refusal_log));
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
fn answer(
    result: Result<Answer, GatewayError>,
    refusal_log: &LogBudget,
) -> (&'static str, Response) {
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
            log_refusal(&error, refusal_log);
            (error.outcome(), error.into_response())
        }
    }
}

/// What the handler knows of a request besides its body.
struct Request<'a> {
    name: &'a str,
    /// The peer's address (absent only when the router is called without a server).
    peer: Option<IpAddr>,
    headers: &'a HeaderMap,
    started: Instant,
    correlation: &'a Correlation,
}

async fn handle(
    state: &Arc<AppState>,
    request: Request<'_>,
    body: Body,
) -> Result<Answer, GatewayError> {
    let _slot = state
        .limits
        .request_slot(declared_length(request.headers))
        .ok_or(GatewayError::Overloaded(Overload::Requests))?;
    let source = state
        .sources
        .get(request.name)
        .ok_or(GatewayError::UnknownSource)?;
    let presented = admit(state, source, &request)?;
    let deadline = request.started + state.config.ack_budget;
    let read_deadline = (request.started + state.config.body_read_timeout).min(deadline);
    let limit = state.config.body_limit;
    let (bytes, mut held) =
        read_body(request.headers, body, limit, read_deadline, &state.limits).await?;
    let (verified, extracted, message_bytes) =
        verify_and_extract(state, request.name, presented, bytes, deadline).await?;
    // The messages about to be built count against the body budget too, so
    // many fanned-out requests at once stay inside `max_body_memory`.
    if !held.grow(message_bytes) {
        return Err(GatewayError::Overloaded(Overload::BodyMemory));
    }
    if let (Some(limiter), Extracted::Events(events)) = (&source.rate_limit, &extracted) {
        limiter
            .take(events.len())
            .map_err(GatewayError::RateLimited)?;
    }
    let ctx = RequestContext {
        source,
        correlation: request.correlation,
        received: SystemTime::now(),
        deadline,
    };
    let ingestor = &state.ingestor;
    let counts = match extracted {
        Extracted::Events(events) => match source.challenge_answer(&events) {
            Some(value) => return Ok(Answer::Challenge(value)),
            None => ingestor.ingest(&ctx, events).await?,
        },
        Extracted::Unparseable { id } => {
            ingestor
                .dead_letter_unparseable(&ctx, id, &verified)
                .await?
        }
        Extracted::Refused(refusal) => return Err(refusal.into()),
    };
    Ok(Answer::Accepted(counts))
}

/// Every check that needs no body, cheapest first; returns the presented signature.
fn admit(
    state: &AppState,
    source: &Source,
    request: &Request<'_>,
) -> Result<Presented, GatewayError> {
    if !client_allowed(state, source, request.peer, request.headers) {
        return Err(GatewayError::ForbiddenAddress);
    }
    let presented = source.check_headers(request.headers)?;
    check_head_size(request.headers, &state.config.limits)?;
    if let Some(limiter) = &source.rate_limit {
        limiter.check().map_err(GatewayError::RateLimited)?;
    }
    Ok(presented)
}

/// Whether the client (the peer, or whom a trusted proxy names) may reach
/// `source`; without a peer (the router called directly) there is no address to refuse.
pub fn client_allowed(
    state: &AppState,
    source: &Source,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> bool {
    peer.is_none_or(|peer| {
        let client = admission::client_ip(peer, headers, &state.config.trusted_proxies.0);
        admission::allowed(client, &source.allow_ips)
    })
}

/// `max_headers` and `max_header_bytes`, as a JSON 431.
fn check_head_size(headers: &HeaderMap, limits: &LimitsConfig) -> Result<(), GatewayError> {
    if headers.len() > limits.max_headers {
        return Err(GatewayError::HeadersTooLarge(format!(
            "more than {} header fields",
            limits.max_headers
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge(format!(
            "more than {} bytes of headers",
            limits.max_header_bytes
        )));
    }
    Ok(())
}

/// Verifies the body and extracts its events (with the bytes their messages
/// will take): inline for small bodies, on a
/// blocking thread (one per core at most) for large ones, so a 4 MiB body
/// never stalls the requests sharing the serving thread.
async fn verify_and_extract(
    state: &Arc<AppState>,
    name: &str,
    presented: Presented,
    bytes: Bytes,
    deadline: Instant,
) -> Result<(VerifiedBody, Extracted, usize), GatewayError> {
    let small = bytes.len() < state.config.limits.offload_body_bytes;
    let work = {
        let state = state.clone();
        let name = name.to_owned();
        move || {
            let source = state
                .sources
                .get(&name)
                .ok_or(GatewayError::UnknownSource)?;
            let verified = source.verify_body(presented, bytes)?;
            let (extracted, message_bytes) = source.extract_sized(&verified);
            Ok((verified, extracted, message_bytes))
        }
    };
    if small {
        return work();
    }
    let budget = || out_of_budget(&state.config);
    let turn = timeout_at(deadline, state.limits.heavy_turn())
        .await
        .map_err(|_| budget())?;
    let done = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    });
    match timeout_at(deadline, done).await {
        Ok(Ok(result)) => result,
        Ok(Err(panicked)) => {
            tracing::error!(error = %panicked, "verifying or extracting a body panicked");
            Err(budget())
        }
        Err(_) => Err(budget()),
    }
}

/// A 200 answer.
enum Answer {
    /// Events made durable (or found duplicate, or kept as unparseable).
    Accepted(Counts),
    /// A verification challenge's value, echoed as text.
    Challenge(String),
}

/// A raw text answer (a challenge echo), never sniffed as HTML.
pub fn text_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// Client mistakes are routine (info); failing to make events durable is ours (warn).
/// At most 20 lines a second ([`crate::log_budget`]); `skipped` says how
/// many refusals since the last line went unlogged (the metrics count them all).
fn log_refusal(error: &GatewayError, budget: &LogBudget) {
    let Some(skipped) = budget.allow() else {
        return;
    };
    match error {
        GatewayError::Ingest(IngestError::Unavailable { cause, .. }) => {
            tracing::warn!(error = %cause, skipped, "answered 503")
        }
        GatewayError::Overloaded(cap) => {
            tracing::info!(cap = cap.label(), skipped, "shed: answered 503")
        }
        GatewayError::Ingest(IngestError::InFlight(counts)) => {
            tracing::info!(
                in_flight = counts.in_flight,
                skipped,
                "answered 503: events in flight elsewhere"
            )
        }
        other => tracing::info!(outcome = other.outcome(), reason = %other, skipped, "refused"),
    }
}

/// The 503 of a request whose verifying or extracting outlasted the ack budget.
fn out_of_budget(config: &GatewayConfig) -> GatewayError {
    GatewayError::Ingest(IngestError::Unavailable {
        cause: Unavailable::Budget(config.ack_budget),
        retry_after: config.retry_after,
    })
}

/// 404 for any other path, as JSON like every other answer.
pub async fn not_found() -> GatewayError {
    GatewayError::NoRoute
}

/// 405 for another method on a webhook path.
pub async fn method_not_allowed() -> GatewayError {
    GatewayError::MethodNotAllowed
}
