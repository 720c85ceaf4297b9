//! Faults under load, each judged by the ledger
//! ([`sluice_testkit::ledger`]): a dozen providers send and retry all
//! along while a gateway (in a process of its own), a worker and a
//! downstream run; once the fault is over and the system settled, nothing
//! answered 200 may be lost, nothing may be published twice by the gateway,
//! and both binaries serve within 30 s of the fault's end. The figures
//! printed are the ones docs/reliability.md reports.
//!
//! The long ones (over a minute) are `#[ignore]`d and run by `make faults`.

mod downstream;
mod gateway_stop;
mod rabbitmq;
mod redis;
mod soak;
