//! A message taken off the work queue, and the Sluice event read from it.
//!
//! The gateway puts everything the worker needs to route and count an event
//! in the message's properties and headers (docs/architecture.md, "Messages on RabbitMQ"), so the body, the
//! CloudEvents envelope, is never parsed: it is delivered byte for byte.
//! A message that lacks an id or a source or type header is not a Sluice
//! message; [`SluiceEvent::read`] says what is missing and the worker
//! dead-letters it as `malformed` instead of failing on it.

use lapin::BasicProperties;
use lapin::types::ShortString;
use sluice_shared::message::{EventId, EventType, MessageHeaders, SourceName, headers};
use sluice_shared::trace::TraceContext;

/// A message as it came off the queue, minus its acknowledgement handle.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub routing_key: ShortString,
    pub properties: BasicProperties,
    /// The CloudEvents envelope, JSON.
    pub body: Vec<u8>,
}

/// What the worker knows about an event from its message's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SluiceEvent {
    /// The event id (`message_id`), also the `webhook-id` downstream.
    pub id: EventId,
    pub source: SourceName,
    pub event_type: EventType,
    /// Delivery attempts that failed before this one.
    pub failed_before: u32,
    /// The gateway's request id, carried into logs and `x-request-id`.
    pub request_id: Option<String>,
    /// The publish the message came from (`x-sluice-copy`; see [`crate::copies`]).
    pub copy: Option<String>,
    /// The one route this message is for (`x-sluice-route`), if it names one;
    /// a message without it is matched against every route.
    pub route: Option<String>,
    /// The gateway's trace context; each attempt sends a child of it.
    pub trace: Option<TraceContext>,
    /// When the gateway received the event (ms since the Unix epoch).
    pub received_at_ms: Option<i64>,
}

/// Why a message is not a Sluice message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the message has no message_id (the event id)")]
    NoMessageId,
    #[error("the message has no headers")]
    NoHeaders,
    #[error("the message has no {0} header, or it is not text")]
    MissingHeader(&'static str),
    #[error("the {0} header is not an integer")]
    NotAnInteger(&'static str),
    /// Delivering it to every route instead could give routes that already
    /// took the event a second copy.
    #[error("the {0} header is present but is not a route name (non-empty text)")]
    BadRoute(&'static str),
}

impl SluiceEvent {
    /// Reads the event's identity from the message's properties and headers.
    pub fn read(message: &QueuedMessage) -> Result<Self, Malformed> {
        let id = message
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
            .filter(|id| !id.is_empty())
            .ok_or(Malformed::NoMessageId)?;
        if message.properties.headers().is_none() {
            return Err(Malformed::NoHeaders);
        }
        let headers = MessageHeaders::of(&message.properties);
        if headers.unreadable.contains(&headers::ATTEMPT) {
            return Err(Malformed::NotAnInteger(headers::ATTEMPT));
        }
        if headers.unreadable.contains(&headers::ROUTE) {
            return Err(Malformed::BadRoute(headers::ROUTE));
        }
        Ok(Self {
            id: EventId::as_published(id),
            source: headers
                .source
                .ok_or(Malformed::MissingHeader(headers::SOURCE))?,
            event_type: headers
                .event_type
                .ok_or(Malformed::MissingHeader(headers::TYPE))?,
            // A negative count is nonsense: treat it as no failures so far.
            failed_before: u32::try_from(headers.attempt.unwrap_or(0).max(0)).unwrap_or(u32::MAX),
            request_id: headers.request_id,
            copy: headers.copy,
            route: headers.route,
            trace: headers.trace,
            received_at_ms: headers.received_at_ms,
        })
    }

    /// The trace this event belongs to: the gateway's, else one derived from
    /// the request id or, for a message without either, from the event id's
    /// log digest (the trace id is logged; a plain hash of an id that is a
    /// phone number could be reversed).
    pub fn trace_context(&self) -> TraceContext {
        self.trace.unwrap_or_else(|| match &self.request_id {
            Some(request_id) => TraceContext::derived_from(request_id),
            None => TraceContext::derived_from(&self.id.log_digest().to_string()),
        })
    }

    /// `<source>.<type>`: what routes match, and the routing key of its copies.
    pub fn subject(&self) -> String {
        format!("{}.{}", self.source, self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use sluice_shared::id_digest;

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert(name.into(), value);
        }
        table
    }

    fn message(id: Option<&str>, headers: Option<FieldTable>) -> QueuedMessage {
        let mut properties = BasicProperties::default();
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        QueuedMessage {
            routing_key: "demo.thing".into(),
            properties,
            body: b"{}".to_vec(),
        }
    }

    fn sluice_headers(attempt: Option<AMQPValue>) -> FieldTable {
        let mut entries = vec![
            (headers::SOURCE, text("demo")),
            (headers::TYPE, text("thing")),
            (headers::REQUEST_ID, text("req-1")),
        ];
        if let Some(attempt) = attempt {
            entries.push((headers::ATTEMPT, attempt));
        }
        table(entries)
    }

    #[test]
    fn a_gateway_message_reads_as_an_event() {
        let event = SluiceEvent::read(&message(
            Some("evt-1"),
            Some(sluice_headers(Some(AMQPValue::LongLongInt(2)))),
        ))
        .unwrap();
        assert_eq!(
            event,
            SluiceEvent {
                id: EventId::as_published("evt-1"),
                source: SourceName::as_published("demo"),
                event_type: EventType::as_published("thing"),
                failed_before: 2,
                request_id: Some("req-1".into()),
                copy: None,
                route: None,
                trace: None,
                received_at_ms: None,
            }
        );
        assert_eq!(event.subject(), "demo.thing");
    }

    #[test]
    fn a_missing_attempt_header_means_no_failures_yet() {
        let event = SluiceEvent::read(&message(Some("e"), Some(sluice_headers(None)))).unwrap();
        assert_eq!(event.failed_before, 0);
    }

    #[test]
    fn every_integer_width_reads_as_the_attempt() {
        for value in [
            AMQPValue::ShortShortInt(3),
            AMQPValue::ShortShortUInt(3),
            AMQPValue::ShortInt(3),
            AMQPValue::ShortUInt(3),
            AMQPValue::LongInt(3),
            AMQPValue::LongUInt(3),
            AMQPValue::LongLongInt(3),
            AMQPValue::Timestamp(3),
            text("3"),
        ] {
            let event = SluiceEvent::read(&message(
                Some("e"),
                Some(sluice_headers(Some(value.clone()))),
            ))
            .unwrap();
            assert_eq!(event.failed_before, 3, "{value:?}");
        }
    }

    #[test]
    fn a_negative_attempt_counts_as_zero() {
        let headers = sluice_headers(Some(AMQPValue::LongInt(-4)));
        let event = SluiceEvent::read(&message(Some("e"), Some(headers))).unwrap();
        assert_eq!(event.failed_before, 0);
    }

    #[test]
    fn a_non_numeric_attempt_is_malformed() {
        let headers = sluice_headers(Some(AMQPValue::Boolean(true)));
        assert_eq!(
            SluiceEvent::read(&message(Some("e"), Some(headers))),
            Err(Malformed::NotAnInteger(headers::ATTEMPT))
        );
    }

    #[test]
    fn a_route_header_names_the_route_and_an_unreadable_one_is_malformed() {
        let mut named = sluice_headers(None);
        named.insert(headers::ROUTE.into(), text("crm"));
        let event = SluiceEvent::read(&message(Some("e"), Some(named))).unwrap();
        assert_eq!(event.route.as_deref(), Some("crm"));
        for bad in [text(""), AMQPValue::LongLongInt(3)] {
            let mut sent = sluice_headers(None);
            sent.insert(headers::ROUTE.into(), bad);
            assert_eq!(
                SluiceEvent::read(&message(Some("e"), Some(sent))),
                Err(Malformed::BadRoute(headers::ROUTE))
            );
        }
    }

    #[test]
    fn a_message_without_an_id_is_malformed() {
        assert_eq!(
            SluiceEvent::read(&message(None, Some(sluice_headers(None)))),
            Err(Malformed::NoMessageId)
        );
        assert_eq!(
            SluiceEvent::read(&message(Some(""), Some(sluice_headers(None)))),
            Err(Malformed::NoMessageId)
        );
    }

    #[test]
    fn a_message_without_headers_is_malformed() {
        assert_eq!(
            SluiceEvent::read(&message(Some("e"), None)),
            Err(Malformed::NoHeaders)
        );
    }

    #[test]
    fn a_message_without_a_type_is_malformed() {
        let headers = table(vec![(headers::SOURCE, text("demo"))]);
        assert_eq!(
            SluiceEvent::read(&message(Some("e"), Some(headers))),
            Err(Malformed::MissingHeader(headers::TYPE))
        );
    }

    #[test]
    fn short_strings_count_as_text_but_numbers_do_not() {
        let headers = table(vec![
            (headers::SOURCE, AMQPValue::ShortString("demo".into())),
            (headers::TYPE, AMQPValue::LongLongInt(5)),
        ]);
        assert_eq!(
            SluiceEvent::read(&message(Some("e"), Some(headers))),
            Err(Malformed::MissingHeader(headers::TYPE))
        );
    }

    #[test]
    fn the_request_id_is_optional() {
        let headers = table(vec![
            (headers::SOURCE, text("demo")),
            (headers::TYPE, text("thing")),
        ]);
        let event = SluiceEvent::read(&message(Some("e"), Some(headers))).unwrap();
        assert_eq!(event.request_id, None);
    }

    #[test]
    fn the_trace_and_receive_time_are_read_and_a_bad_trace_is_ignored() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = sluice_headers(None);
        headers.insert(headers::TRACEPARENT.into(), text(parent));
        headers.insert(
            headers::RECEIVED_AT_MS.into(),
            AMQPValue::LongLongInt(1_700_000_000_000),
        );
        let event = SluiceEvent::read(&message(Some("e"), Some(headers))).unwrap();
        assert_eq!(event.trace_context().to_string(), parent);
        assert_eq!(event.received_at_ms, Some(1_700_000_000_000));

        let mut headers = sluice_headers(None);
        headers.insert(headers::TRACEPARENT.into(), text("garbage"));
        let event = SluiceEvent::read(&message(Some("e"), Some(headers))).unwrap();
        assert_eq!(event.trace, None);
        assert_eq!(
            event.trace_context().trace_id(),
            TraceContext::derived_from("req-1").trace_id(),
            "without a trace, the request id seeds one"
        );
    }

    #[test]
    fn without_a_trace_or_request_id_the_trace_comes_from_the_ids_digest_not_the_id() {
        let headers = table(vec![
            (headers::SOURCE, text("demo")),
            (headers::TYPE, text("thing")),
        ]);
        let event = SluiceEvent::read(&message(Some("16505551234"), Some(headers))).unwrap();
        let trace = event.trace_context().trace_id();
        assert_ne!(trace, TraceContext::derived_from("16505551234").trace_id());
        let digest = id_digest::of("16505551234").to_string();
        assert_eq!(trace, TraceContext::derived_from(&digest).trace_id());
    }
}
