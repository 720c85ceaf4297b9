//! The CloudEvents 1.0 envelope every event travels in, and the AMQP header
//! names that ride beside it.
//!
//! The body on the queue is the envelope as JSON; the headers repeat what the
//! worker must read without parsing the body (source, type, attempt, request
//! id, trace context, time received) and, on the dead queue, why the event died.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// `content_type` of every message Sluice publishes.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// AMQP header names. `x-sluice-` keeps them apart from RabbitMQ's own `x-death`.
pub mod headers {
    /// The source's configured name.
    pub const SOURCE: &str = "x-sluice-source";
    /// The normalised event type.
    pub const TYPE: &str = "x-sluice-type";
    /// Delivery attempts that have failed so far (0 on first publish).
    pub const ATTEMPT: &str = "x-sluice-attempt";
    /// The request id, carried into the worker's logs and deliveries.
    pub const REQUEST_ID: &str = "x-sluice-request-id";
    /// The W3C trace context of the gateway's publish (see [`crate::trace`]);
    /// the worker sends a child of it downstream.
    pub const TRACEPARENT: &str = crate::trace::TRACEPARENT;
    /// When the gateway received the event, milliseconds since the Unix epoch.
    pub const RECEIVED_AT_MS: &str = "x-sluice-received-at-ms";
    /// Dead queue: why the event is there (`rejected`, `attempts_exhausted`, `unparseable`, `no_route`).
    pub const REASON: &str = "x-sluice-reason";
    /// Dead queue: the last delivery error, as text.
    pub const LAST_ERROR: &str = "x-sluice-last-error";
    /// Dead queue: the last HTTP status downstream answered, if any.
    pub const LAST_STATUS: &str = "x-sluice-last-status";
    /// Dead queue: delivery attempts made.
    pub const ATTEMPTS: &str = "x-sluice-attempts";
    /// Dead queue: first failure, milliseconds since the Unix epoch.
    pub const FIRST_FAILURE_MS: &str = "x-sluice-first-failure-ms";
    /// Dead queue: last failure, milliseconds since the Unix epoch.
    pub const LAST_FAILURE_MS: &str = "x-sluice-last-failure-ms";
    /// Replayed from the dead queue: how many times (1 on the first replay).
    pub const REPLAYED: &str = "x-sluice-replayed";
    /// Replayed from the dead queue: when, milliseconds since the Unix epoch.
    pub const REPLAYED_AT_MS: &str = "x-sluice-replayed-at-ms";
}

/// A CloudEvents 1.0 structured-mode event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// The provider's event id (or the body's SHA-256 when it has none).
    pub id: String,
    /// `sluice/<source name>`.
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the gateway received the request, RFC 3339.
    pub time: String,
    pub datacontenttype: String,
    /// The event's JSON data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Bytes that are not JSON (an unparseable body), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

impl Envelope {
    /// An event whose data is JSON.
    pub fn json(
        source: &str,
        id: &str,
        event_type: &str,
        received: SystemTime,
        data: serde_json::Value,
    ) -> Self {
        Self {
            specversion: "1.0".into(),
            id: id.into(),
            source: format!("sluice/{source}"),
            event_type: event_type.into(),
            time: humantime::format_rfc3339_millis(received).to_string(),
            datacontenttype: "application/json".into(),
            data: Some(data),
            data_base64: None,
        }
    }

    /// An event whose data are opaque bytes, kept exactly as received.
    pub fn raw(
        source: &str,
        id: &str,
        event_type: &str,
        received: SystemTime,
        bytes: &[u8],
    ) -> Self {
        Self {
            datacontenttype: "application/octet-stream".into(),
            data: None,
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ..Self::json(source, id, event_type, received, serde_json::Value::Null)
        }
    }

    /// The JSON bytes that travel on the queue.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising this struct cannot fail: every field is a string or a Value.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_json_envelope_is_cloudevents_shaped() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let envelope = Envelope::json(
            "whatzme",
            "id-1",
            "messages.upsert",
            at,
            serde_json::json!({"a": 1}),
        );
        let value: serde_json::Value = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["source"], "sluice/whatzme");
        assert_eq!(value["type"], "messages.upsert");
        assert_eq!(value["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["data"]["a"], 1);
        assert!(value.get("data_base64").is_none());
    }

    #[test]
    fn raw_bytes_survive_as_base64() {
        let envelope = Envelope::raw("s", "i", "unparseable", UNIX_EPOCH, b"\xff{not json");
        let back: Envelope = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(back.data_base64.unwrap())
            .unwrap();
        assert_eq!(bytes, b"\xff{not json");
        assert_eq!(back.datacontenttype, "application/octet-stream");
    }
}
