//! The AMQP messages the gateway publishes: an event's CloudEvents envelope
//! or an unparseable body's raw one, with the headers the worker reads
//! (written by [`MessageHeaders`], the one encoder of the message format).

use std::time::SystemTime;

use sluice_shared::envelope::{Envelope, unix_millis};
use sluice_shared::message::{DeadReason, MessageHeaders, SourceName, event_properties};

use crate::correlation::Correlation;
use crate::extract::{Event, EventId, EventType};
use crate::publisher::Outgoing;
use crate::signature::VerifiedBody;

/// The message the gateway publishes for one event: the CloudEvents envelope,
/// routing key `<source>.<type>`, persistent, headers for the worker. Public
/// for the benchmarks (`benches/hot_paths.rs`), which time building it.
pub fn event_message(
    exchange: String,
    source: &SourceName,
    correlation: &Correlation,
    received: SystemTime,
    event: Event,
) -> Outgoing {
    let id = event.id.as_str();
    // The data's pieces are spliced in: a context shared by the request's
    // events was serialised once, and is only copied into each body here.
    let body = Envelope::json_bytes(
        source.as_str(),
        id,
        event.event_type.as_str(),
        received,
        event.data.pieces(),
    );
    let routing_key = format!("{source}.{}", event.event_type);
    let headers = MessageHeaders {
        attempt: Some(0),
        ..event_headers(source, correlation, received, event.event_type)
    };
    Outgoing {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        body,
        properties: event_properties(&event.id, received, headers),
    }
}

/// The message that keeps an authenticated body that cannot be parsed: its
/// bytes as they came, to the dead exchange as `<source>.unparseable`.
pub(super) fn unparseable_message(
    exchange: String,
    source: &SourceName,
    correlation: &Correlation,
    received: SystemTime,
    id: &EventId,
    body: &VerifiedBody,
) -> Outgoing {
    let event_type = EventType::unparseable();
    let envelope = Envelope::raw(
        source.as_str(),
        id.as_str(),
        event_type.as_str(),
        received,
        body.bytes(),
    );
    let routing_key = format!("{source}.{event_type}");
    let now = unix_millis(SystemTime::now());
    let headers = MessageHeaders {
        reason: Some(DeadReason::Unparseable),
        attempts: Some(0),
        first_failure_ms: Some(now),
        last_failure_ms: Some(now),
        ..event_headers(source, correlation, received, event_type)
    };
    Outgoing {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        body: envelope.to_bytes(),
        properties: event_properties(id, received, headers),
    }
}

/// The headers every message of a request's events carries.
fn event_headers(
    source: &SourceName,
    correlation: &Correlation,
    received: SystemTime,
    event_type: EventType,
) -> MessageHeaders {
    MessageHeaders {
        source: Some(source.clone()),
        event_type: Some(event_type),
        request_id: Some(correlation.request_id.clone()),
        copy: Some(correlation.copy.clone()),
        trace: Some(correlation.trace),
        received_at_ms: Some(unix_millis(received)),
        ..MessageHeaders::default()
    }
}
