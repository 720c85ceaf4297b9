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
use lapin::types::ShortString;
use sluice_shared::message::{EventType, MessageHeaders, SourceName, copy_properties};

use super::event::DeadEvent;

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
    let mut headers = MessageHeaders::of(&event.properties);
    headers.forget_death();
    headers.source = Some(SourceName::as_published(source));
    headers.event_type = Some(EventType::as_published(event_type));
    headers.attempt = Some(0);
    headers.replayed = Some(event.replayed.saturating_add(1));
    headers.replayed_at_ms = Some(now_ms);
    let properties =
        copy_properties(&event.properties, headers).with_message_id(ShortString::from(id.as_str()));
    Some((format!("{source}.{event_type}"), properties))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use sluice_shared::message::{PERSISTENT, headers};

    fn dead(replayed: Option<i64>) -> DeadEvent {
        let mut table = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(LongString::from(v));
        table.insert(headers::SOURCE.into(), text("crm"));
        table.insert(headers::TYPE.into(), text("contact.updated"));
        table.insert(headers::REQUEST_ID.into(), text("req-9"));
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(3));
        table.insert(headers::REASON.into(), text("attempts_exhausted"));
        table.insert(headers::LAST_STATUS.into(), AMQPValue::LongLongInt(503));
        table.insert(headers::DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
        table.insert(
            headers::X_DEATH.into(),
            AMQPValue::FieldArray(vec![].into()),
        );
        table.insert("x-last-death-reason".into(), text("expired"));
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
        let copy = MessageHeaders::of(&properties);
        assert_eq!(copy.attempt, Some(0));
        assert_eq!(copy.replayed, Some(1));
        assert_eq!(copy.replayed_at_ms, Some(42));
        assert_eq!(copy.request_id.as_deref(), Some("req-9"));
        let table = properties.headers().clone().unwrap();
        for gone in [
            headers::REASON,
            headers::LAST_STATUS,
            headers::DELIVERY_COUNT,
            headers::X_DEATH,
            "x-last-death-reason",
        ] {
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
        assert_eq!(MessageHeaders::of(&properties).replayed, Some(2));
    }

    #[test]
    fn a_raw_message_has_no_copy() {
        let raw = DeadEvent::read(1, "k", BasicProperties::default(), b"nope".to_vec());
        assert!(replay_copy(&raw, 42).is_none());
    }
}
