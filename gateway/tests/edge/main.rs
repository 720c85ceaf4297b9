//! The public port against hostile and broken clients, tested on the real
//! `sluice-gateway` binary over raw TCP: every class of bad input
//! ([`classes`]), and the listener's limits and load shedding ([`limits`]).
//! Needs the machine's Redis and RabbitMQ.

mod classes;
mod limits;
mod support;
mod tls;
