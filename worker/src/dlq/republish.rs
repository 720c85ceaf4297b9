//! The copy a replay sends back to the events exchange, and the confirmed
//! publish that sends it.
//!
//! The copy is the dead message with its failure story taken off (reason,
//! last error and status, attempts, failure times, RabbitMQ's `x-death` and
//! `x-delivery-count`), its attempt counter at 0 so the worker gives it every
//! retry tier again, and a replay mark: `x-sluice-replayed` (how many times,
//! so an event that keeps coming back is visible) and
//! `x-sluice-replayed-at-ms`. It is published persistent and mandatory to
//! `<prefix>.events` with routing key `<source>.<type>`, like the gateway's
//! original, and counts as sent only on a plain confirm.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use sluice_shared::envelope::headers;
use tokio::time::timeout;

use super::event::{DELIVERY_COUNT, DeadEvent, X_DEATH};

/// AMQP delivery mode 2: written to disk.
const PERSISTENT: u8 = 2;
/// Limit on sending one copy and on its confirm.
const PUBLISH_LIMIT: Duration = Duration::from_secs(10);

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

/// Why a copy was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("sending the copy failed: {0}")]
    Send(#[source] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the copy's confirm failed: {0}")]
    Confirm(#[source] lapin::Error),
    #[error("RabbitMQ refused the copy (nack)")]
    Nacked,
    #[error("the copy was unroutable and came back: is the exchange bound to the work queue?")]
    Returned,
    #[error("the channel is not in confirm mode")]
    NotConfirmed,
    #[error("`{0}` is too long for an AMQP routing key")]
    Name(String),
}

impl PublishError {
    /// Whether the channel is gone, so no later copy can be sent either.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Send(_) | Self::Timeout(_) | Self::Confirm(_) | Self::NotConfirmed
        )
    }
}

/// Publishes copies to one exchange with publisher confirms.
pub struct ConfirmedPublisher {
    channel: Channel,
    exchange: ShortString,
}

impl ConfirmedPublisher {
    /// `channel` must be in confirm mode.
    pub fn new(channel: Channel, exchange: &str) -> Self {
        Self {
            channel,
            exchange: ShortString::from(exchange),
        }
    }

    /// Sends one persistent, mandatory copy; its confirm comes later, from
    /// [`InFlight::confirmed`], so several copies can be on their way at once.
    pub async fn send(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<InFlight, PublishError> {
        let key = ShortString::try_new(routing_key)
            .map_err(|_| PublishError::Name(routing_key.into()))?;
        // Mandatory: a copy nothing would receive comes back instead of vanishing.
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let send =
            self.channel
                .basic_publish(self.exchange.clone(), key, options, body, properties);
        let confirm = timeout(PUBLISH_LIMIT, send)
            .await
            .map_err(|_| PublishError::Timeout(PUBLISH_LIMIT))?
            .map_err(PublishError::Send)?;
        Ok(InFlight(confirm))
    }
}

/// A copy sent, its confirm still to come.
pub struct InFlight(PublisherConfirm);

impl InFlight {
    /// Waits for RabbitMQ's answer: `Ok` only for a plain ack (routed, stored).
    pub async fn confirmed(self) -> Result<(), PublishError> {
        match timeout(PUBLISH_LIMIT, self.0).await {
            Err(_) => Err(PublishError::Timeout(PUBLISH_LIMIT)),
            Ok(Err(e)) => Err(PublishError::Confirm(e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Returned),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::NotConfirmed),
        }
    }
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
