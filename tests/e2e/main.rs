//! End-to-end tests: the real gateway and worker against the real Redis and
//! RabbitMQ on this machine, providers and downstream services as real HTTP
//! on loopback. Each test has its own queue prefix and Redis key prefix, so
//! tests never see each other's data. Tests that stop a broker start their own.

mod bad_input;
mod broker_outage;
mod cluster;
mod config_errors;
mod delivery;
mod dlq;
mod fan_out;
mod faults;
mod id_digest;
mod observability;
mod ordered;
mod providers;
mod redis;
mod retries;
mod route_fan_out;
mod route_limits;
mod worker_crash;

/// The gateway of a [`sluice_testkit::gateway_process::GatewayProcess`]: this
/// binary run again with only this test selected serves a gateway.
#[test]
#[ignore = "the gateway process of GatewayProcess; does nothing when run otherwise"]
fn gateway_child_process() {
    sluice_testkit::gateway_process::serve_if_child();
}
