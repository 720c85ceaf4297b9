//! [`MessageHeaders`]: a message's headers read into types, and written
//! back, by one decoder and one encoder.
//!
//! Reading never fails: a header of Sluice's that holds something it cannot
//! read (a number where text belongs, text that is not a number, an empty
//! string) stays in [`MessageHeaders::other`] exactly as sent, and its name
//! is listed in [`MessageHeaders::unreadable`]; so a copy keeps it, and the
//! reader decides whether it matters (the worker dead-letters a message
//! without a source as malformed; `dlq` shows what it can).

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::headers as name;
use super::{DeadReason, EventType, SourceName};
use crate::trace::TraceContext;

/// Every header Sluice reads or writes, in types; anything else in `other`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageHeaders {
    pub source: Option<SourceName>,
    pub event_type: Option<EventType>,
    /// Delivery attempts that failed so far (`x-sluice-attempt`).
    pub attempt: Option<i64>,
    pub request_id: Option<String>,
    /// The gateway request's publish (`x-sluice-copy`).
    pub copy: Option<String>,
    /// The one route the message is for (`x-sluice-route`).
    pub route: Option<String>,
    /// An ordered route's key digest (`x-sluice-order-key`).
    pub order_key: Option<String>,
    pub trace: Option<TraceContext>,
    /// When the gateway received the event, ms since the Unix epoch.
    pub received_at_ms: Option<i64>,
    pub reason: Option<DeadReason>,
    pub last_error: Option<String>,
    pub last_status: Option<i64>,
    /// Delivery attempts made before the event died (`x-sluice-attempts`).
    pub attempts: Option<i64>,
    pub first_failure_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub replayed: Option<i64>,
    pub replayed_at_ms: Option<i64>,
    pub rerouted: Option<i64>,
    /// RabbitMQ's `x-delivery-count`.
    pub delivery_count: Option<i64>,
    /// RabbitMQ's dead-lettering headers (`x-death`, `x-first-death-*`,
    /// `x-last-death-*`), as sent; [`MessageHeaders::broker_death`] reads them.
    pub broker_deaths: BTreeMap<ShortString, AMQPValue>,
    /// Sluice's headers present but unreadable (their values are in `other`).
    pub unreadable: Vec<&'static str>,
    /// Every other header, as sent.
    pub other: BTreeMap<ShortString, AMQPValue>,
}

/// The newest entry of RabbitMQ's `x-death` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerDeath {
    pub reason: DeadReason,
    /// When, ms since the Unix epoch (AMQP timestamps are whole seconds).
    pub time_ms: Option<i64>,
}

impl MessageHeaders {
    /// The headers of a message's properties (none reads as empty).
    pub fn of(properties: &BasicProperties) -> Self {
        Self::decode(properties.headers().as_ref())
    }

    /// Reads a header table; never fails (see the module's docs).
    pub fn decode(table: Option<&FieldTable>) -> Self {
        let mut other = table.map(|t| t.inner().clone()).unwrap_or_default();
        let mut unreadable = Vec::new();
        let mut take = |header: &'static str, read: fn(&AMQPValue) -> bool| {
            let value = other.get(header)?;
            if read(value) {
                other.remove(header)
            } else {
                unreadable.push(header);
                None
            }
        };
        let readable_text = |v: &AMQPValue| text(v).is_some_and(|t| !t.is_empty());
        let readable_integer = |v: &AMQPValue| integer(v).is_some();
        let readable_trace =
            |v: &AMQPValue| text(v).and_then(|t| TraceContext::parse(&t)).is_some();
        let text_of = |v: Option<AMQPValue>| v.as_ref().and_then(text);
        let integer_of = |v: Option<AMQPValue>| v.as_ref().and_then(integer);
        let mut headers = Self {
            source: text_of(take(name::SOURCE, readable_text))
                .map(|s| SourceName::as_published(&s)),
            event_type: text_of(take(name::TYPE, readable_text))
                .map(|t| EventType::as_published(&t)),
            attempt: integer_of(take(name::ATTEMPT, readable_integer)),
            request_id: text_of(take(name::REQUEST_ID, readable_text)),
            copy: text_of(take(name::COPY, readable_text)),
            route: text_of(take(name::ROUTE, readable_text)),
            order_key: text_of(take(name::ORDER_KEY, readable_text)),
            trace: text_of(take(name::TRACEPARENT, readable_trace))
                .and_then(|t| TraceContext::parse(&t)),
            received_at_ms: integer_of(take(name::RECEIVED_AT_MS, readable_integer)),
            reason: text_of(take(name::REASON, readable_text)).map(|r| DeadReason::from_header(&r)),
            last_error: text_of(take(name::LAST_ERROR, |v| text(v).is_some())),
            last_status: integer_of(take(name::LAST_STATUS, readable_integer)),
            attempts: integer_of(take(name::ATTEMPTS, readable_integer)),
            first_failure_ms: integer_of(take(name::FIRST_FAILURE_MS, readable_integer)),
            last_failure_ms: integer_of(take(name::LAST_FAILURE_MS, readable_integer)),
            replayed: integer_of(take(name::REPLAYED, readable_integer)),
            replayed_at_ms: integer_of(take(name::REPLAYED_AT_MS, readable_integer)),
            rerouted: integer_of(take(name::REROUTED, readable_integer)),
            delivery_count: integer_of(take(name::DELIVERY_COUNT, readable_integer)),
            ..Self::default()
        };
        headers.unreadable = unreadable;
        for header in std::iter::once(name::X_DEATH).chain(name::BROKER_DEATH_SUMMARY) {
            if let Some((key, value)) = other.remove_entry(header) {
                headers.broker_deaths.insert(key, value);
            }
        }
        headers.other = other;
        headers
    }

    /// The header table: `other` and the broker's records as they were,
    /// then every field that is set (a field set overrides an unreadable
    /// value of the same name).
    pub fn encode(self) -> FieldTable {
        let mut table = self.other;
        table.extend(self.broker_deaths);
        let mut put = |header: &'static str, value: Option<AMQPValue>| {
            if let Some(value) = value {
                table.insert(header.into(), value);
            }
        };
        let text = |value: String| AMQPValue::LongString(LongString::from(value));
        let number = AMQPValue::LongLongInt;
        put(name::SOURCE, self.source.map(|s| text(s.into())));
        put(name::TYPE, self.event_type.map(|t| text(t.into())));
        put(name::ATTEMPT, self.attempt.map(number));
        put(name::REQUEST_ID, self.request_id.map(text));
        put(name::COPY, self.copy.map(text));
        put(name::ROUTE, self.route.map(text));
        put(name::ORDER_KEY, self.order_key.map(text));
        put(
            name::TRACEPARENT,
            self.trace.map(|t| text(t.header_value())),
        );
        put(name::RECEIVED_AT_MS, self.received_at_ms.map(number));
        put(
            name::REASON,
            self.reason.map(|r| text(r.as_str().to_owned())),
        );
        put(name::LAST_ERROR, self.last_error.map(text));
        put(name::LAST_STATUS, self.last_status.map(number));
        put(name::ATTEMPTS, self.attempts.map(number));
        put(name::FIRST_FAILURE_MS, self.first_failure_ms.map(number));
        put(name::LAST_FAILURE_MS, self.last_failure_ms.map(number));
        put(name::REPLAYED, self.replayed.map(number));
        put(name::REPLAYED_AT_MS, self.replayed_at_ms.map(number));
        put(name::REROUTED, self.rerouted.map(number));
        put(name::DELIVERY_COUNT, self.delivery_count.map(number));
        FieldTable::from(table)
    }

    /// Why and when RabbitMQ dead-lettered the message, from the newest
    /// `x-death` entry, if it did.
    pub fn broker_death(&self) -> Option<BrokerDeath> {
        let AMQPValue::FieldArray(list) = self.broker_deaths.get(name::X_DEATH)? else {
            return None;
        };
        let AMQPValue::FieldTable(newest) = list.as_slice().first()? else {
            return None;
        };
        let field = |key: &str| newest.inner().get(key);
        Some(BrokerDeath {
            reason: field("reason")
                .and_then(text)
                .map_or(DeadReason::Unknown, |r| DeadReason::from_header(&r)),
            time_ms: field("time")
                .and_then(integer)
                .and_then(|s| s.checked_mul(1000)),
        })
    }

    /// Takes off every trace of a death (the failure story, RabbitMQ's
    /// records and delivery count): what a replayed copy starts without.
    pub fn forget_death(&mut self) {
        self.reason = None;
        self.last_error = None;
        self.last_status = None;
        self.attempts = None;
        self.first_failure_ms = None;
        self.last_failure_ms = None;
        self.delivery_count = None;
        self.broker_deaths.clear();
    }
}

/// Text, whether sent as a long or a (deprecated) short string.
fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer of any width (clients differ: pika sends `l`, Java `I`, lapin
/// what it is given), or digits as text.
pub fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn long(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut table = FieldTable::default();
        for (header, value) in entries {
            table.insert(header.into(), value);
        }
        table
    }

    fn full() -> MessageHeaders {
        MessageHeaders {
            source: Some(SourceName::as_published("crm")),
            event_type: Some(EventType::as_published("contact.updated")),
            attempt: Some(2),
            request_id: Some("req-1".into()),
            copy: Some("c-1".into()),
            route: Some("crm".into()),
            order_key: Some("f9eb7f4aca0f94da849aec1ed3650e83".into()),
            trace: TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            received_at_ms: Some(1_700_000_000_000),
            reason: Some(DeadReason::AttemptsExhausted),
            last_error: Some("HTTP 503".into()),
            last_status: Some(503),
            attempts: Some(7),
            first_failure_ms: Some(1),
            last_failure_ms: Some(2),
            replayed: Some(1),
            replayed_at_ms: Some(3),
            rerouted: Some(4),
            delivery_count: Some(5),
            ..MessageHeaders::default()
        }
    }

    #[test]
    fn every_field_survives_an_encode_and_a_decode() {
        let mut headers = full();
        headers.other.insert("x-custom".into(), long("kept"));
        let table = headers.clone().encode();
        assert_eq!(table.inner()[name::REASON], long("attempts_exhausted"));
        assert_eq!(MessageHeaders::decode(Some(&table)), headers);
    }

    #[test]
    fn other_widths_and_short_strings_read_and_are_written_in_one_form() {
        let sent = table(vec![
            (name::SOURCE, AMQPValue::ShortString("crm".into())),
            (name::ATTEMPT, AMQPValue::LongInt(3)),
            (name::LAST_STATUS, long("404")),
            (name::RECEIVED_AT_MS, AMQPValue::Timestamp(9)),
        ]);
        let headers = MessageHeaders::decode(Some(&sent));
        assert_eq!(headers.source.as_ref().map(SourceName::as_str), Some("crm"));
        assert_eq!(
            (headers.attempt, headers.last_status, headers.received_at_ms),
            (Some(3), Some(404), Some(9))
        );
        assert!(headers.unreadable.is_empty() && headers.other.is_empty());
        let written = headers.encode();
        assert_eq!(written.inner()[name::SOURCE], long("crm"));
        assert_eq!(written.inner()[name::ATTEMPT], AMQPValue::LongLongInt(3));
    }

    #[test]
    fn an_unreadable_header_is_listed_and_kept_as_sent_unless_a_field_replaces_it() {
        let sent = table(vec![
            (name::SOURCE, long("crm")),
            (name::TYPE, AMQPValue::LongLongInt(5)),
            (name::ATTEMPT, AMQPValue::Boolean(true)),
            (name::REQUEST_ID, long("")),
            (name::TRACEPARENT, long("garbage")),
        ]);
        let mut headers = MessageHeaders::decode(Some(&sent));
        assert_eq!(
            headers.unreadable,
            [
                name::TYPE,
                name::ATTEMPT,
                name::REQUEST_ID,
                name::TRACEPARENT
            ]
        );
        assert_eq!(
            (headers.event_type.is_none(), headers.attempt, headers.trace),
            (true, None, None)
        );
        headers.attempt = Some(1);
        let written = headers.encode();
        assert_eq!(written.inner()[name::TYPE], AMQPValue::LongLongInt(5));
        assert_eq!(written.inner()[name::TRACEPARENT], long("garbage"));
        assert_eq!(written.inner()[name::ATTEMPT], AMQPValue::LongLongInt(1));
    }

    #[test]
    fn a_reason_this_version_does_not_know_reads_as_unknown() {
        let sent = table(vec![(name::REASON, long("cosmic_rays"))]);
        assert_eq!(
            MessageHeaders::decode(Some(&sent)).reason,
            Some(DeadReason::Unknown)
        );
        assert_eq!(MessageHeaders::decode(None), MessageHeaders::default());
    }

    #[test]
    fn the_newest_broker_death_gives_reason_and_time_and_forget_death_drops_every_record() {
        let mut newest = FieldTable::default();
        newest.insert("reason".into(), long("delivery_limit"));
        newest.insert("time".into(), AMQPValue::Timestamp(1_700_000_900));
        let mut older = FieldTable::default();
        older.insert("reason".into(), long("expired"));
        let deaths = FieldArray::from(vec![
            AMQPValue::FieldTable(newest),
            AMQPValue::FieldTable(older),
        ]);
        let sent = table(vec![
            (name::X_DEATH, AMQPValue::FieldArray(deaths)),
            ("x-first-death-reason", long("expired")),
            (name::DELIVERY_COUNT, AMQPValue::LongLongInt(20)),
            (name::SOURCE, long("crm")),
        ]);
        let mut headers = MessageHeaders::decode(Some(&sent));
        assert_eq!(
            headers.broker_death(),
            Some(BrokerDeath {
                reason: DeadReason::DeliveryLimit,
                time_ms: Some(1_700_000_900_000)
            })
        );
        headers.forget_death();
        let written = headers.encode();
        let names: Vec<&str> = written.inner().keys().map(ShortString::as_str).collect();
        assert_eq!(names, [name::SOURCE]);
    }
}
