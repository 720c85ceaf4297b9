//! Who a request is, for logs and for everyone downstream: a request id and a
//! W3C trace context.
//!
//! The request id is the caller's `X-Request-Id` when it is short printable
//! ASCII, else the trace id. The trace continues a valid incoming
//! `traceparent` (same trace id and flags, a new span id for the gateway's
//! publish); without one it is derived from the `X-Request-Id`, or random.
//! Both travel in every message's AMQP headers; the worker logs them and
//! sends `x-request-id` and a child `traceparent` with each delivery.

use axum::http::HeaderMap;
use sluice_shared::trace::{TRACEPARENT, TraceContext};

/// The header a request id is taken from and echoed in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest `X-Request-Id` kept as sent; a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A request's identity, carried with each of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlation {
    pub request_id: String,
    /// The gateway's position in the trace: its span is the publish.
    pub trace: TraceContext,
    /// This request's publish (`x-sluice-copy`): random, so a provider that
    /// retries with the same `X-Request-Id` still makes a copy of its own.
    pub copy: String,
}

impl Correlation {
    /// Reads `X-Request-Id` and `traceparent`; invalid values are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let caller_id = header(REQUEST_ID_HEADER).filter(|id| is_usable_request_id(id));
        let incoming = header(TRACEPARENT).and_then(TraceContext::parse);
        let trace = match (incoming, caller_id) {
            (Some(parent), _) => parent.child(),
            (None, Some(id)) => TraceContext::derived_from(id),
            (None, None) => TraceContext::random(),
        };
        let request_id = caller_id.map_or_else(|| trace.trace_id(), str::to_owned);
        Self {
            request_id,
            trace,
            copy: new_copy(),
        }
    }
}

fn new_copy() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn is_usable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_traceparent_is_continued_and_names_the_request() {
        let ids = Correlation::from_headers(&headers(&[(TRACEPARENT, PARENT)]));
        assert_eq!(ids.trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.request_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ids.trace.to_string(), PARENT, "the gateway's own span");
    }

    #[test]
    fn a_request_id_is_kept_beside_a_traceparent() {
        let ids = Correlation::from_headers(&headers(&[
            (REQUEST_ID_HEADER, "req-7"),
            (TRACEPARENT, PARENT),
        ]));
        assert_eq!(ids.request_id, "req-7");
        assert_eq!(ids.trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_request_id_alone_derives_a_stable_trace() {
        let a = Correlation::from_headers(&headers(&[(REQUEST_ID_HEADER, "req-7")]));
        let b = Correlation::from_headers(&headers(&[(REQUEST_ID_HEADER, "req-7")]));
        assert_eq!(a.request_id, "req-7");
        assert_eq!(a.trace.trace_id(), b.trace.trace_id());
    }

    #[test]
    fn without_headers_the_request_id_is_a_new_trace_id() {
        let a = Correlation::from_headers(&HeaderMap::new());
        let b = Correlation::from_headers(&HeaderMap::new());
        assert_eq!(a.request_id, a.trace.trace_id());
        assert_ne!(a.request_id, b.request_id);
    }

    #[test]
    fn unusable_values_are_ignored() {
        let long = "x".repeat(129);
        let ids = Correlation::from_headers(&headers(&[
            (REQUEST_ID_HEADER, &long),
            (TRACEPARENT, "00-zz-00f067aa0ba902b7-01"),
        ]));
        assert_eq!(ids.request_id.len(), 32);
        assert_eq!(ids.request_id, ids.trace.trace_id());
    }
}
