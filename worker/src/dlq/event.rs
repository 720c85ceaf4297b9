//! A message in the dead queue, read as a [`DeadEvent`]: who sent it, why it
//! died, when, and whether it can be replayed.
//!
//! Most dead messages are Sluice envelopes with the dead headers the worker
//! or gateway added (`x-sluice-reason`, `-last-error`, `-last-status`,
//! `-attempts`, `-first-failure-ms`, `-last-failure-ms`). Two other kinds are
//! read without failing:
//! - messages RabbitMQ dead-lettered itself (the work queue's
//!   `x-delivery-limit`): no `x-sluice-reason`, but an `x-death` list whose
//!   newest entry gives the reason (`delivery_limit`) and the time; source and
//!   type come from the `x-sluice-*` headers still on them;
//! - messages someone else published to the dead exchange: no envelope, no
//!   headers. They are shown and exported raw, and never replayed.

use lapin::BasicProperties;
use sluice_shared::envelope::unix_millis;
use sluice_shared::message::{DeadReason, MessageHeaders};

/// One dead message, as the operator commands see it.
#[derive(Debug, Clone)]
pub struct DeadEvent {
    /// 1 for the head of the dead queue when the pass started.
    pub position: u64,
    /// The event id (`message_id`, else the envelope's `id`).
    pub id: Option<String>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    /// The route it died on (`x-sluice-route`); none for an event no route
    /// took, or one dead-lettered before routes had names on messages.
    pub route: Option<String>,
    /// Why it died; [`DeadReason::Unknown`] when neither `x-sluice-reason`
    /// nor `x-death` says.
    pub reason: DeadReason,
    pub last_error: Option<String>,
    /// The HTTP status downstream last answered, if it answered.
    pub last_status: Option<i64>,
    /// Delivery attempts made before it died.
    pub attempts: Option<i64>,
    pub first_failure_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    /// When the gateway received it (the envelope's `time`).
    pub received_ms: Option<i64>,
    /// Times it was replayed from the dead queue before.
    pub replayed: i64,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    /// The CloudEvents envelope, when the body is one.
    pub envelope: Option<serde_json::Value>,
}

impl DeadEvent {
    /// Reads whatever is in the message; never fails.
    pub fn read(
        position: u64,
        routing_key: &str,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> Self {
        let headers = MessageHeaders::of(&properties);
        let envelope = envelope_of(&body);
        let field = |name: &str| envelope.as_ref()?.get(name)?.as_str().map(str::to_owned);
        let death = headers.broker_death();
        // A broker dead-lettering is more recent than any failure headers a retry copy carried.
        let broker_time = death.filter(|_| headers.reason.is_none());
        Self {
            position,
            id: non_empty(properties.message_id().as_ref().map(|id| id.to_string()))
                .or_else(|| field("id")),
            source: headers.source.map(String::from).or_else(|| {
                field("source").and_then(|s| s.strip_prefix("sluice/").map(str::to_owned))
            }),
            event_type: headers
                .event_type
                .map(String::from)
                .or_else(|| field("type")),
            route: headers.route,
            reason: headers
                .reason
                .or_else(|| death.map(|d| d.reason))
                .unwrap_or(DeadReason::Unknown),
            last_error: headers.last_error,
            last_status: headers.last_status,
            attempts: headers.attempts,
            first_failure_ms: headers.first_failure_ms,
            last_failure_ms: broker_time
                .and_then(|d| d.time_ms)
                .or(headers.last_failure_ms),
            received_ms: field("time").and_then(|t| rfc3339_millis(&t)),
            replayed: headers.replayed.unwrap_or(0),
            routing_key: routing_key.to_owned(),
            properties,
            body,
            envelope,
        }
    }

    /// The time `--since` and `--until` compare: the last failure, else
    /// when it was received, else the message's AMQP timestamp.
    pub fn failed_at_ms(&self) -> Option<i64> {
        self.last_failure_ms.or(self.received_ms).or_else(|| {
            let seconds = i64::try_from((*self.properties.timestamp())?).ok()?;
            seconds.checked_mul(1000)
        })
    }

    /// Whether the body is a Sluice (CloudEvents) envelope.
    pub fn is_envelope(&self) -> bool {
        self.envelope.is_some()
    }

    /// `<source>.<type>`, the routing key a replay publishes with, when both are known.
    pub fn subject(&self) -> Option<String> {
        Some(format!(
            "{}.{}",
            self.source.as_ref()?,
            self.event_type.as_ref()?
        ))
    }

    /// Why it cannot be replayed, if it cannot: the worker needs an id, a
    /// source and a type to route and deliver it.
    pub fn not_replayable(&self) -> Option<&'static str> {
        match (&self.id, &self.source, &self.event_type) {
            _ if !self.is_envelope() => Some("not a Sluice envelope"),
            (None, _, _) => Some("no event id"),
            (_, None, _) | (_, _, None) => Some("no source or type"),
            _ => None,
        }
    }
}

/// The body as JSON, when it is a CloudEvents envelope (it has `specversion`).
fn envelope_of(body: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("specversion")?.as_str()?;
    Some(value)
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

/// Milliseconds since the Unix epoch of an RFC 3339 time.
pub fn rfc3339_millis(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .map(unix_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
    use std::time::{Duration, UNIX_EPOCH};

    use sluice_shared::envelope::Envelope;
    use sluice_shared::message::headers;

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    fn properties(entries: Vec<(&str, AMQPValue)>, id: Option<&str>) -> BasicProperties {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert(name.into(), value);
        }
        let properties = BasicProperties::default().with_headers(table);
        match id {
            Some(id) => properties.with_message_id(id.into()),
            None => properties,
        }
    }

    fn envelope(id: &str) -> Vec<u8> {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Envelope::json(
            "crm",
            id,
            "contact.updated",
            at,
            serde_json::json!({"a": 1}),
        )
        .to_bytes()
    }

    #[test]
    fn a_worker_dead_letter_reads_its_headers() {
        let props = properties(
            vec![
                (headers::SOURCE, text("crm")),
                (headers::TYPE, text("contact.updated")),
                (headers::REASON, text("rejected")),
                (headers::LAST_ERROR, text("HTTP 400")),
                (headers::LAST_STATUS, AMQPValue::LongLongInt(400)),
                (headers::ATTEMPTS, AMQPValue::LongLongInt(1)),
                (
                    headers::LAST_FAILURE_MS,
                    AMQPValue::LongLongInt(1_700_000_500_000),
                ),
            ],
            Some("evt-1"),
        );
        let event = DeadEvent::read(1, "crm.contact.updated", props, envelope("evt-1"));
        assert_eq!(event.id.as_deref(), Some("evt-1"));
        assert_eq!(event.subject().as_deref(), Some("crm.contact.updated"));
        assert_eq!(event.reason, DeadReason::Rejected);
        assert_eq!(event.last_status, Some(400));
        assert_eq!(event.attempts, Some(1));
        assert_eq!(event.failed_at_ms(), Some(1_700_000_500_000));
        assert_eq!(event.received_ms, Some(1_700_000_000_000));
        assert_eq!(event.not_replayable(), None);
    }

    #[test]
    fn a_broker_dead_letter_takes_reason_and_time_from_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), text("delivery_limit"));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_900));
        death.insert("queue".into(), text("sluice.work"));
        let props = properties(
            vec![
                (headers::SOURCE, text("crm")),
                (headers::TYPE, text("contact.updated")),
                // Left over from an earlier retry: older than the broker's dead-lettering.
                (
                    headers::LAST_FAILURE_MS,
                    AMQPValue::LongLongInt(1_700_000_100_000),
                ),
                (
                    headers::X_DEATH,
                    AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
                ),
            ],
            Some("evt-2"),
        );
        let event = DeadEvent::read(3, "sluice.work", props, envelope("evt-2"));
        assert_eq!(event.reason, DeadReason::DeliveryLimit);
        assert_eq!(event.failed_at_ms(), Some(1_700_000_900_000));
        assert_eq!(event.subject().as_deref(), Some("crm.contact.updated"));
        assert_eq!(event.not_replayable(), None);
    }

    #[test]
    fn a_foreign_message_is_read_raw_and_never_replayed() {
        let event = DeadEvent::read(
            2,
            "whatever",
            BasicProperties::default(),
            b"\xffnot json".to_vec(),
        );
        assert_eq!(event.reason, DeadReason::Unknown);
        assert_eq!(event.id, None);
        assert!(!event.is_envelope());
        assert_eq!(event.not_replayable(), Some("not a Sluice envelope"));
        assert_eq!(event.failed_at_ms(), None);
    }

    #[test]
    fn an_envelope_without_headers_gives_its_id_source_and_type() {
        let event = DeadEvent::read(1, "x", BasicProperties::default(), envelope("evt-3"));
        assert_eq!(event.id.as_deref(), Some("evt-3"));
        assert_eq!(event.source.as_deref(), Some("crm"));
        assert_eq!(event.event_type.as_deref(), Some("contact.updated"));
        assert_eq!(event.failed_at_ms(), Some(1_700_000_000_000));
    }

    #[test]
    fn json_that_is_not_an_envelope_is_raw() {
        let event = DeadEvent::read(1, "x", BasicProperties::default(), b"{\"a\":1}".to_vec());
        assert!(!event.is_envelope());
    }
}
