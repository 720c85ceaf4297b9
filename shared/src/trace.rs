//! W3C Trace Context (`traceparent`), so one event can be followed from the
//! provider's request, through RabbitMQ, to the business's service.
//!
//! Sluice records no spans of its own in a tracing backend: it only carries a
//! trace id. The gateway takes it from a valid incoming `traceparent`, else
//! derives it from the caller's `X-Request-Id` (the same request id always
//! gives the same trace id), else makes a random one. Every hop gets a new
//! span id (the gateway's publish, each delivery attempt of the worker), so a
//! receiver that does trace sees Sluice as the parent of its own span.
//!
//! Format: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase;
//! an all-zero trace or span id is invalid, as is version `ff`.

use std::fmt;

use sha2::{Digest, Sha256};

/// The header name, in HTTP and in the AMQP message headers alike.
pub const TRACEPARENT: &str = "traceparent";

/// Flags for a trace Sluice starts: `01` (sampled), since the point of the
/// header is that the event can be followed; an incoming trace keeps its own.
const SAMPLED: u8 = 0x01;

/// One position in a trace: which trace, which span, and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value; `None` when it is not a valid version-00
    /// header (future versions are read by their first four fields, as the
    /// spec asks).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest_ok = match version {
            "00" => parts.next().is_none(),
            "ff" => false,
            _ => true,
        };
        if !rest_ok || version.len() != 2 || !is_lower_hex(version) {
            return None;
        }
        let trace_id: [u8; 16] = decode(trace)?;
        let span_id: [u8; 8] = decode(span)?;
        let [flags]: [u8; 1] = decode(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace with a random trace id.
    pub fn random() -> Self {
        Self {
            trace_id: non_zero(*uuid::Uuid::new_v4().as_bytes()),
            span_id: new_span_id(),
            flags: SAMPLED,
        }
    }

    /// A trace whose id is derived from `seed` (a request id or an event id):
    /// the same seed always gives the same trace id.
    pub fn derived_from(seed: &str) -> Self {
        let digest = Sha256::digest(seed.as_bytes());
        let mut trace_id = [0; 16];
        trace_id.copy_from_slice(&digest[..16]);
        Self {
            trace_id: non_zero(trace_id),
            span_id: new_span_id(),
            flags: SAMPLED,
        }
    }

    /// The same trace, one hop further: a new span id, the same flags.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The 32 hex digits of the trace id, for logs.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header value.
    pub fn header_value(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

fn new_span_id() -> [u8; 8] {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut span = [0; 8];
    span.copy_from_slice(&bytes[..8]);
    non_zero(span)
}

/// All zeros is the spec's "invalid" value; a random one is never expected,
/// but a derived or random id must still never be it.
fn non_zero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !is_lower_hex(text) {
        return None;
    }
    let mut out = [0; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_reads_and_writes_back() {
        let trace = TraceContext::parse(VALID).unwrap();
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.to_string(), VALID);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_span() {
        let parent = TraceContext::parse(VALID).unwrap();
        let child = parent.child().to_string();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, VALID);
        assert_eq!(child.len(), VALID.len());
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_future_version_is_read_by_its_first_fields() {
        let trace =
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .unwrap();
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_same_request_id_derives_the_same_trace() {
        let a = TraceContext::derived_from("req-1");
        let b = TraceContext::derived_from("req-1");
        assert_eq!(a.trace_id(), b.trace_id());
        assert_ne!(a.trace_id(), TraceContext::derived_from("req-2").trace_id());
        assert!(TraceContext::parse(&a.to_string()).is_some());
    }

    #[test]
    fn random_traces_are_valid_and_differ() {
        let a = TraceContext::random();
        assert!(TraceContext::parse(&a.header_value()).is_some());
        assert_ne!(a.trace_id(), TraceContext::random().trace_id());
    }
}
