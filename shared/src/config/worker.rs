//! `[worker]`: the delivering consumer's address, concurrency and timings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address of the worker's `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Unacknowledged messages the broker may push ahead of the worker;
    /// unset: `concurrency` (see [`WorkerConfig::prefetch`]).
    pub prefetch: Option<u16>,
    /// Deliveries running at once.
    pub concurrency: usize,
    /// How long SIGTERM waits for in-flight deliveries before closing.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often the worker reads the work, retry and dead queue depths for
    /// `sluice_worker_queue_depth` (one passive declare per queue).
    #[serde(with = "humantime_serde")]
    pub queue_depth_interval: Duration,
    /// Threads running deliveries and `dlq` commands: 1 runs everything on
    /// one thread (the fewest wake-ups between threads), 0 one per core.
    pub threads: usize,
    /// The longest a worker holds a message of an ordered route's partition
    /// unacknowledged: past it the worker hands the partition's messages
    /// back (they return to the head of the queue in order) and takes them
    /// again, so RabbitMQ's `consumer_timeout` never closes the channel.
    #[serde(with = "humantime_serde")]
    pub ordered_hold_limit: Duration,
}

impl WorkerConfig {
    /// `prefetch`, or `concurrency` when unset: messages pushed beyond what
    /// runs at once only wait, unacked, inside one worker while others
    /// idle, and count towards RabbitMQ's `consumer_timeout` from the moment
    /// they arrive.
    pub fn prefetch(&self) -> u16 {
        self.prefetch
            .unwrap_or_else(|| u16::try_from(self.concurrency).unwrap_or(u16::MAX))
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            admin_listen: ([127, 0, 0, 1], 9081).into(),
            prefetch: None,
            concurrency: 32,
            shutdown_grace: Duration::from_secs(30),
            queue_depth_interval: Duration::from_secs(5),
            threads: 1,
            ordered_hold_limit: Duration::from_secs(20 * 60),
        }
    }
}

/// Checks `[worker]` beyond its types.
pub(super) fn validate(worker: &WorkerConfig) -> Result<(), ConfigError> {
    if worker.queue_depth_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "worker.queue_depth_interval",
            "must be at least 100ms: each poll asks RabbitMQ about every queue",
        ));
    }
    if worker.ordered_hold_limit < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "worker.ordered_hold_limit",
            "must be at least 1s: each time it runs out, a stuck partition is handed back and taken again",
        ));
    }
    if worker.concurrency == 0 || worker.prefetch == Some(0) {
        return Err(ConfigError::invalid(
            "worker.concurrency / worker.prefetch",
            "must be at least 1",
        ));
    }
    Ok(())
}
