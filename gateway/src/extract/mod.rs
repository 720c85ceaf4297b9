//! Turning a verified body into events.
//!
//! Each source has an extractor that turns one request into 1..n events,
//! each with an id, a type and data: [`json::JsonExtractor`] (id and type
//! from JSON pointers), [`whatsapp::WhatsAppExtractor`] (one event per
//! message and status of a Meta batch). An event without an id is identified
//! by the SHA-256 of its body, so an identical retry still deduplicates. A
//! body that is not JSON (invalid UTF-8, truncated, nested past serde_json's
//! depth limit of 128) is [`Extracted::Unparseable`]: it is kept in the dead
//! queue, never thrown away.
//!
//! Fan-out is bounded: an extractor counts a body's events before it builds
//! any, and refuses more than `gateway.max_events_per_request`; the data each
//! event carries is serialised once per change and shared ([`data`]), and
//! [`crate::source::Source::extract`] refuses a request whose messages would
//! add up to more than [`sluice_shared::config::GatewayConfig::max_fan_out_bytes`].

pub mod data;
#[cfg(test)]
mod fuzz;
pub mod json;
pub mod whatsapp;

use crate::signature::VerifiedBody;

pub use data::EventData;

pub use sluice_shared::message::{EventId, EventType};

/// One event out of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub event_type: EventType,
    /// The JSON the envelope's `data` holds, serialised.
    pub data: EventData,
}

impl Event {
    /// The length of the message body it is published as (its envelope), known before it is written.
    pub fn envelope_len(&self, source: &str) -> usize {
        sluice_shared::envelope::json_len(
            source,
            self.id.as_str(),
            self.event_type.as_str(),
            self.data.len(),
        )
    }
}

/// What a body turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    Events(Vec<Event>),
    /// Authenticated but not parseable: goes to the dead queue as `unparseable`.
    Unparseable {
        id: EventId,
    },
    /// Authenticated, but it would fan out into more than the gateway takes
    /// from one request (413); nothing is published.
    Refused(FanOutError),
}

/// Why a request's events are refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanOutError {
    /// More events than `gateway.max_events_per_request`; counted before any is built.
    #[error(
        "the body holds {events} events and at most {limit} are accepted in one request: send them in smaller batches"
    )]
    TooManyEvents { events: usize, limit: usize },
    /// The messages would exceed `gateway.max_fan_out_bytes()` in all: each
    /// carries the context of its item, so a large context times many items
    /// would be too much to hold.
    #[error(
        "the body's {events} events would be published as {bytes} bytes and at most {limit} are accepted from one request: send fewer items per request or a smaller shared context"
    )]
    TooManyBytes {
        events: usize,
        bytes: usize,
        limit: usize,
    },
}

/// A source's extractor.
#[derive(Debug, Clone)]
pub enum Extractor {
    Json(json::JsonExtractor),
    WhatsApp(whatsapp::WhatsAppExtractor),
    /// The `json` extractor, with the id the Standard Webhooks signature covered.
    StandardWebhooks(json::JsonExtractor),
}

impl Extractor {
    /// The body's events, or a refusal when there would be more than `max_events`.
    pub fn extract(&self, body: &VerifiedBody, max_events: usize) -> Extracted {
        match self {
            Self::Json(json) => json.extract(body, max_events),
            Self::WhatsApp(whatsapp) => whatsapp.extract(body, max_events),
            Self::StandardWebhooks(json) => {
                let mut extracted = json.extract(body, max_events);
                if let (Extracted::Events(events), Some(id)) = (&mut extracted, body.webhook_id()) {
                    for event in events {
                        event.id = EventId::from_provider(id);
                    }
                }
                extracted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_extractor_takes_the_signed_webhook_id_and_the_type() {
        let extractor = Extractor::StandardWebhooks(json::JsonExtractor {
            type_pointer: Some("/type".into()),
            ..json::JsonExtractor::default()
        });
        let body = br#"{"type":"invoice.paid","data":{"id":"in_1"}}"#.to_vec();
        let verified = crate::signature::tests_support::verified_with_id(body, "msg_2");
        let Extracted::Events(events) = extractor.extract(&verified, 10) else {
            panic!("JSON");
        };
        assert_eq!(
            (events[0].id.as_str(), events[0].event_type.as_str()),
            ("msg_2", "invoice.paid")
        );
    }
}
