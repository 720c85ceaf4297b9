//! The copy a replay sends back to the events exchange.
//!
//! The copy is the dead message with its failure story taken off (reason,
//! last error and status, attempts, failure times, RabbitMQ's `x-death` and
//! `x-delivery-count`), its attempt counter at 0 so the worker gives it every
//! retry tier again, and a replay mark: `x-sluice-replayed` (how many times,
//! so an event that keeps coming back is visible) and
//! `x-sluice-replayed-at-ms`. It is published persistent and mandatory to
//! `<prefix>.events` with routing key `<source>.<type>`, like the gateway's
//! original, through the shared confirmed-publish path
//! ([`sluice_shared::publish`]), and counts as sent only on a plain confirm.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use sluice_shared::envelope::headers;

use super::event::{DELIVERY_COUNT, DeadEvent, X_DEATH};

/// AMQP delivery mode 2: written to disk.
const PERSISTENT: u8 = 2;

/// Headers that describe a death; a replayed event starts afresh without them.
const DEATH_HEADERS: [&str; 13] = [
    headers::REASON,
    headers::LAST_ERROR,
    headers::LAST_STATUS,
    headers::ATTEMPTS,
    headers::FIRST_FAILURE_MS,
    headers::LAST_FAILURE_MS,
    X_DEATH,
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// The routing key and properties of `event`'s replayed copy, or `None`
/// when it cannot be replayed (see [`DeadEvent::not_replayable`]).
pub fn replay_copy(event: &DeadEvent, now_ms: i64) -> Option<(String, BasicProperties)> {
    if event.not_replayable().is_some() {
        return None;
    }
    let (id, source, event_type) = (
        event.id.as_ref()?,
        event.source.as_ref()?,
        event.event_type.as_ref()?,
    );
    let mut table = event
        .properties
        .headers()
        .as_ref()
        .map(|t| t.inner().clone())
        .unwrap_or_default();
    // DELIVERY_COUNT too: a copy is a new message.
    for name in DEATH_HEADERS.iter().chain([&DELIVERY_COUNT]) {
        table.remove(*name);
    }
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    table.insert(headers::SOURCE.into(), text(source));
    table.insert(headers::TYPE.into(), text(event_type));
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(0));
    table.insert(
        headers::REPLAYED.into(),
        AMQPValue::LongLongInt(event.replayed.saturating_add(1)),
    );
    table.insert(
        headers::REPLAYED_AT_MS.into(),
        AMQPValue::LongLongInt(now_ms),
    );
    let properties = event
        .properties
        .clone()
        .with_message_id(ShortString::from(id.as_str()))
        .with_delivery_mode(PERSISTENT)
        .with_headers(FieldTable::from(table));
    Some((format!("{source}.{event_type}"), properties))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{header_integer, header_text};

    fn dead(replayed: Option<i64>) -> DeadEvent {
        let mut table = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(LongString::from(v));
        table.insert(headers::SOURCE.into(), text("crm"));
        table.insert(headers::TYPE.into(), text("contact.updated"));
        table.insert(headers::REQUEST_ID.into(), text("req-9"));
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(3));
        table.insert(headers::REASON.into(), text("attempts_exhausted"));
        table.insert(headers::LAST_STATUS.into(), AMQPValue::LongLongInt(503));
        table.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
        if let Some(n) = replayed {
            table.insert(headers::REPLAYED.into(), AMQPValue::LongLongInt(n));
        }
        let properties = BasicProperties::default()
            .with_message_id("evt-1".into())
            .with_headers(table);
        let body =
            br#"{"specversion":"1.0","id":"evt-1","source":"sluice/crm","type":"contact.updated"}"#;
        DeadEvent::read(1, "sluice.work", properties, body.to_vec())
    }

    #[test]
    fn a_replayed_copy_starts_afresh_with_a_mark() {
        let (key, properties) = replay_copy(&dead(None), 42).unwrap();
        assert_eq!(key, "crm.contact.updated");
        let table = properties.headers().clone().unwrap();
        assert_eq!(header_integer(&table, headers::ATTEMPT), Some(0));
        assert_eq!(header_integer(&table, headers::REPLAYED), Some(1));
        assert_eq!(header_integer(&table, headers::REPLAYED_AT_MS), Some(42));
        assert_eq!(
            header_text(&table, headers::REQUEST_ID).as_deref(),
            Some("req-9")
        );
        for gone in [headers::REASON, headers::LAST_STATUS, DELIVERY_COUNT] {
            assert!(!table.inner().contains_key(gone), "{gone} is removed");
        }
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.as_str()),
            Some("evt-1")
        );
    }

    #[test]
    fn a_second_replay_counts_two() {
        let (_, properties) = replay_copy(&dead(Some(1)), 42).unwrap();
        let table = properties.headers().clone().unwrap();
        assert_eq!(header_integer(&table, headers::REPLAYED), Some(2));
    }

    #[test]
    fn a_raw_message_has_no_copy() {
        let raw = DeadEvent::read(1, "k", BasicProperties::default(), b"nope".to_vec());
        assert!(replay_copy(&raw, 42).is_none());
    }
}
