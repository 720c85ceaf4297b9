//! The Sluice worker: deliver events downstream, retry with tiered backoff,
//! dead-letter what keeps failing.
//!
//! A message's way through the modules:
//! - [`supervisor`] keeps a [`broker`] session alive (reconnecting with
//!   [`backoff`]) and [`consumer`] takes messages off the work queue, one
//!   task each, within the prefetch and concurrency limits;
//! - [`dispatch`] reads the event from its [`message`], drops a second copy
//!   of an event ([`copies`]), picks its route from
//!   [`routes`] (matched as `sluice_shared::routing` says) and makes one attempt, through the
//!   [`http_target`] or the log handler;
//! - a failure is a [`delivery_error`], which [`retry`] turns into a retry
//!   tier or the dead queue;
//! - an ordered route's events come from its partition queues instead, fed
//!   by the gateway: [`ordered`] delivers each key's one after the other,
//!   retrying in place;
//! - [`settle`] publishes the copy (its headers from [`copy_headers`]) with
//!   confirms, then acks the original.
//!
//! [`dlq`] holds the operator commands that inspect, export, replay and
//! purge the dead queue (and their HTTP routes); [`routes_cli`] shows each
//! route's breaker, as the worker's [`route_status`] reports it.
//!
//! [`app`] builds and runs it all; [`metrics`] (with [`route_metrics`]),
//! [`queue_depth`] and [`readiness`] are what it reports on the admin port;
//! [`error`] is how it fails.

pub mod app;
pub mod backoff;
pub mod breaker;
pub mod broker;
pub mod consumer;
pub mod copies;
pub mod copy_headers;
pub mod dead_lettering;
pub mod delivery_error;
pub mod dispatch;
pub mod dlq;
pub mod error;
pub mod http_target;
pub mod message;
pub mod metrics;
pub mod ordered;
pub mod queue_depth;
pub mod readiness;
pub mod retry;
pub mod route_gate;
pub mod route_lane;
pub mod route_metrics;
pub mod route_status;
pub mod routes;
pub mod routes_cli;
pub mod settle;
pub mod supervisor;

pub use app::Worker;
pub use error::{StartError, WorkerError};
