//! The message format on RabbitMQ, in one place: the names an event goes by
//! ([`EventId`], [`SourceName`], [`EventType`]), why one is dead
//! ([`DeadReason`]), the headers beside the body ([`MessageHeaders`], one
//! encoder and one decoder for the gateway, the worker, `dlq` and the
//! tests) and the properties every copy carries.
//!
//! The body is the CloudEvents envelope ([`crate::envelope`]); the headers
//! repeat what the worker must read without parsing it (source, type,
//! attempt, request id, trace context, time received) and, on the dead
//! queue, why the event died. docs/architecture.md, "Messages on RabbitMQ",
//! lists every header.

mod ids;
mod reason;
mod table;

use std::time::SystemTime;

use lapin::BasicProperties;

pub use ids::{EventId, EventType, SourceName};
pub use reason::{DeadReason, UnknownReason};
pub use table::{BrokerDeath, MessageHeaders, integer};

use crate::envelope::{CONTENT_TYPE, unix_millis};

/// AMQP delivery mode 2: the broker writes the message to disk, so a
/// restart keeps it. Every message Sluice publishes is persistent.
pub const PERSISTENT: u8 = 2;

/// Header names. `x-sluice-` keeps Sluice's apart from RabbitMQ's own.
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
    /// Which publish a message came from: one random id per gateway
    /// request, kept by retry and replayed copies. Two messages of one event
    /// with different copies were published twice; the worker delivers the
    /// first it sees (its copy of record) and drops the other.
    pub const COPY: &str = "x-sluice-copy";
    /// The one route this message is for (a route's copy of a fanned-out
    /// event, and its retry, dead and replayed copies): the worker delivers
    /// it to that route only. A message without it is matched against every
    /// route.
    pub const ROUTE: &str = "x-sluice-route";
    /// An ordered route's message: its key's digest
    /// ([`crate::ordering::OrderKey`]), never the key itself. The worker
    /// delivers the messages of one digest one after the other; a dead or
    /// replayed copy keeps it, so a replay finds the key's partition again.
    pub const ORDER_KEY: &str = "x-sluice-order-key";
    /// Dead queue: why the event is there ([`super::DeadReason`]).
    pub const REASON: &str = "x-sluice-reason";
    /// Dead queue: the last delivery error, as text.
    pub const LAST_ERROR: &str = "x-sluice-last-error";
    /// Retry and dead copies: the last HTTP status downstream answered, if any.
    pub const LAST_STATUS: &str = "x-sluice-last-status";
    /// Dead queue: delivery attempts made.
    pub const ATTEMPTS: &str = "x-sluice-attempts";
    /// Retry and dead copies: first failure, milliseconds since the Unix epoch.
    pub const FIRST_FAILURE_MS: &str = "x-sluice-first-failure-ms";
    /// Retry and dead copies: last failure, milliseconds since the Unix epoch.
    pub const LAST_FAILURE_MS: &str = "x-sluice-last-failure-ms";
    /// Replayed from the dead queue: how many times (1 on the first replay).
    pub const REPLAYED: &str = "x-sluice-replayed";
    /// Replayed from the dead queue: when, milliseconds since the Unix epoch.
    pub const REPLAYED_AT_MS: &str = "x-sluice-replayed-at-ms";
    /// Put back from the unroutable queue: how many times (1 the first time).
    pub const REROUTED: &str = "x-sluice-rerouted";

    /// RabbitMQ's: set by a quorum queue on every redelivery. A copy is a
    /// new message and must start from zero, or it would reach
    /// `x-delivery-limit` early.
    pub const DELIVERY_COUNT: &str = "x-delivery-count";
    /// RabbitMQ's dead-lettering record: a list of tables, newest first.
    pub const X_DEATH: &str = "x-death";
    /// RabbitMQ's other dead-lettering headers (3.10 and later).
    pub const BROKER_DEATH_SUMMARY: [&str; 6] = [
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    ];
}

/// The properties of a message the gateway publishes: persistent, the
/// event id as `message_id` (every consumer sees the stable id), the
/// envelope's content type, the time received (whole seconds) and `headers`.
pub fn event_properties(
    id: &EventId,
    received: SystemTime,
    headers: MessageHeaders,
) -> BasicProperties {
    let seconds = u64::try_from(unix_millis(received) / 1000).unwrap_or(0);
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(id.as_str().into())
        .with_content_type(CONTENT_TYPE.into())
        .with_timestamp(seconds)
        .with_headers(headers.encode())
}

/// The properties of a copy of `original` (a retry, dead or replayed copy):
/// the original's properties, persistent, with `headers` instead of its own.
pub fn copy_properties(original: &BasicProperties, headers: MessageHeaders) -> BasicProperties {
    original
        .clone()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers.encode())
}
