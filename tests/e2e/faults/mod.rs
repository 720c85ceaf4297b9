//! Unclean faults: a broker that stops confirming, goes silent or blocks
//! publishers, a Redis that hangs or turns read-only, a delivery task that
//! panics. Each test that disturbs a broker starts its own (see
//! [`sluice_testkit::private`]) or reaches the shared one through a proxy of
//! its own ([`sluice_testkit::proxy`]).

mod blocked;
mod copies;
mod dead_lettering;
mod heartbeat;
mod redis_link;
mod unconfirmed;
mod under_load;
mod unroutable;
mod worker_blocked;
mod worker_hygiene;
