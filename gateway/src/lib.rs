//! The Sluice gateway: verify, deduplicate, publish with confirms, acknowledge.
//!
//! A request flows through these modules in order:
//! - [`webhook`]: the HTTP handler, the deadline ([`body`]: the body's
//!   limits; [`handshake`]: Meta's GET);
//! - [`correlation`]: the request id and trace context each event carries;
//! - [`source`] and [`signature`]: which provider, and is it really them;
//! - [`extract`]: one body becomes events with ids and types;
//! - [`ingest`]: the core, no HTTP: [`dedup`] in Redis, then [`publisher`]
//!   with confirms (a publish unconfirmed at the ack budget is decided later:
//!   [`unconfirmed`]);
//! - [`error`]: every non-200 answer, in one place.
//!
//! The handlers share a [`state::AppState`]. [`reroute`] puts back messages
//! that found no queue (a binding deleted). [`app`] builds and runs it all
//! (imports go one way: `app` → `webhook` → `state`/`ingest`, never back);
//! [`metrics`] is what it reports (and [`dedup`] keeps
//! `sluice_gateway_redis_up` current between requests).

pub mod admission;
pub mod app;
pub mod body;
pub mod correlation;
pub mod dedup;
pub mod dedup_key;
pub mod error;
pub mod extract;
pub mod handshake;
pub mod ingest;
pub mod limits;
pub mod listener;
pub mod log_budget;
pub mod metrics;
pub mod ordered;
pub mod publisher;
pub mod redis_dial;
pub mod redis_link;
pub mod reroute;
pub mod signature;
pub mod source;
pub mod state;
pub mod unconfirmed;
pub mod webhook;

pub use app::{Gateway, StartError};
