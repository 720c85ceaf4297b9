//! The real `sluice-gateway` binary, started with a config of each test's own
//! and spoken to over raw TCP, so a test controls every byte a client sends:
//! both runtimes ([`runtimes`]), every class of bad input ([`classes`]), the
//! listener's limits and load shedding ([`limits`]), TLS ([`tls`]) and the
//! stop on SIGTERM ([`shutdown`]).
//! Needs the machine's Redis and RabbitMQ.

mod classes;
mod limits;
mod runtimes;
mod shutdown;
mod support;
mod tls;
