//! The dead-letter queue's operator commands: `sluice-worker dlq stats`,
//! `peek`, `export`, `replay` and `purge`, and the same over HTTP.
//!
//! Every command opens the dead queue ([`queue`]) and makes one pass over it
//! ([`scan`]) that holds what it reads unacknowledged and acknowledges only
//! what it takes ([`acks`]), after it is safe elsewhere: what it leaves goes
//! back to the head of the queue, in order, when the pass ends or the process
//! dies.
//! - [`event`] reads a dead message (a Sluice envelope, a broker
//!   dead-lettering, or anything else, raw); [`filter`] says which ones a
//!   command applies to; [`record`] is a dead event as JSON;
//! - [`stats`], [`peek`], [`export`], [`replay`] (with [`republish`], paced
//!   by a [`rate`]) and [`purge`] (with [`confirm`] for HTTP) are the
//!   operations;
//! - [`cli`] is the `dlq` subcommand, [`output`] its text, [`progress`] its
//!   bar; [`http`] serves the operations on the admin port;
//! - [`error`] is how they fail.

pub mod acks;
pub mod cli;
pub mod confirm;
pub mod error;
pub mod event;
pub mod export;
pub mod filter;
pub mod http;
pub mod output;
pub mod peek;
pub mod progress;
pub mod purge;
pub mod queue;
pub mod rate;
pub mod record;
pub mod replay;
pub mod republish;
pub mod scan;
pub mod stats;

pub use error::DlqError;
