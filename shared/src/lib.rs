//! What the Sluice gateway and worker share.
//!
//! - [`config`]: the one TOML file and its `SLUICE_*` overrides;
//! - [`secret`]: secret references and a value type that never prints;
//! - [`id_digest`]: the keyed digests logs carry instead of event ids;
//! - [`envelope`]: the CloudEvents envelope and AMQP header names;
//! - [`event_key`]: the Redis key of an event (dedup, copy of record);
//! - [`glob`] and [`routing`]: which routes take an event, the same in
//!   the gateway and the worker;
//! - [`ordering`]: an ordered route's key, and the partition it picks;
//! - [`topology`]: exchanges and queues, declared by both binaries;
//! - [`amqp`]: connecting to RabbitMQ within a time limit;
//! - [`publish`]: publishing with confirms, returns paired by content;
//! - [`rate_limit`]: the token bucket of a source's and a route's rate;
//! - [`standard_webhooks`]: the signature the worker puts on deliveries;
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` and the build-info metric;
//! - [`runtime`]: the Tokio runtime each binary runs on;
//! - [`telemetry`]: JSON-line logging;
//! - [`trace`]: the W3C `traceparent` that follows an event to delivery.

pub mod admin;
pub mod amqp;
pub mod config;
pub mod envelope;
pub mod event_key;
pub mod glob;
pub mod id_digest;
pub mod message;
pub mod ordering;
pub mod publish;
pub mod rate_limit;
pub mod routing;
pub mod runtime;
pub mod secret;
pub mod signals;
pub mod standard_webhooks;
pub mod telemetry;
pub mod topology;
pub mod trace;
