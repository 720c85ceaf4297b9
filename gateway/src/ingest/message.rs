//! The AMQP messages the gateway publishes: an event's CloudEvents envelope
//! or an unparseable body's raw one, with the headers the worker reads.

use std::time::SystemTime;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use sluice_shared::envelope::{CONTENT_TYPE, Envelope, headers, unix_millis};

use crate::correlation::Correlation;
use crate::extract::{Event, EventId};
use crate::publisher::Outgoing;
use crate::signature::VerifiedBody;

/// The message the gateway publishes for one event: the CloudEvents envelope,
/// routing key `<source>.<type>`, persistent, headers for the worker. Public
/// for the benchmarks (`benches/hot_paths.rs`), which time building it.
pub fn event_message(
    exchange: String,
    source: &str,
    correlation: impl Into<Correlation>,
    received: SystemTime,
    event: Event,
) -> Outgoing {
    let event_type = event.event_type.as_str();
    let id = event.id.as_str();
    // The data's pieces are spliced in: a context shared by the request's
    // events was serialised once, and is only copied into each body here.
    let body = Envelope::json_bytes(source, id, event_type, received, event.data.pieces());
    let mut table = common_headers(source, &correlation.into(), received, event_type);
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(0));
    Outgoing {
        exchange: exchange.into(),
        routing_key: format!("{source}.{event_type}").into(),
        body,
        properties: properties(id, received, table),
    }
}

/// The message that keeps an authenticated body that cannot be parsed: its
/// bytes as they came, to the dead exchange as `<source>.unparseable`.
pub(super) fn unparseable_message(
    exchange: String,
    source: &str,
    correlation: &Correlation,
    received: SystemTime,
    id: &EventId,
    body: &VerifiedBody,
) -> Outgoing {
    let envelope = Envelope::raw(source, id.as_str(), "unparseable", received, body.bytes());
    let mut table = common_headers(source, correlation, received, "unparseable");
    let now = AMQPValue::LongLongInt(unix_millis(SystemTime::now()));
    table.insert(headers::REASON.into(), text("unparseable"));
    table.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(0));
    table.insert(headers::FIRST_FAILURE_MS.into(), now.clone());
    table.insert(headers::LAST_FAILURE_MS.into(), now);
    Outgoing {
        exchange: exchange.into(),
        routing_key: format!("{source}.unparseable").into(),
        body: envelope.to_bytes(),
        properties: properties(id.as_str(), received, table),
    }
}

fn common_headers(
    source: &str,
    correlation: &Correlation,
    received: SystemTime,
    event_type: &str,
) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(headers::SOURCE.into(), text(source));
    table.insert(headers::TYPE.into(), text(event_type));
    table.insert(headers::REQUEST_ID.into(), text(&correlation.request_id));
    table.insert(headers::COPY.into(), text(&correlation.copy));
    table.insert(
        headers::TRACEPARENT.into(),
        text(&correlation.trace.header_value()),
    );
    table.insert(
        headers::RECEIVED_AT_MS.into(),
        AMQPValue::LongLongInt(unix_millis(received)),
    );
    table
}

/// Persistent (delivery mode 2) so a broker restart keeps it; the event id as
/// `message_id` so every consumer sees the stable id.
fn properties(id: &str, received: SystemTime, table: FieldTable) -> BasicProperties {
    let seconds = u64::try_from(unix_millis(received) / 1000).unwrap_or(0);
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_content_type(CONTENT_TYPE.into())
        .with_timestamp(seconds)
        .with_headers(table)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}
