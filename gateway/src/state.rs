//! What every request handler shares ([`AppState`]): the config, the
//! sources, the ingest core and the load caps, assembled without any I/O.

use std::sync::atomic::AtomicBool;

use sluice_shared::config::GatewayConfig;

use crate::dedup::DedupStore;
use crate::ingest::{Ingestor, Policy};
use crate::limits::LoadLimits;
use crate::log_budget::LogBudget;
use crate::metrics::GatewayMetrics;
use crate::publisher::ConfirmedPublisher;
use crate::source::Sources;

/// What every request handler shares.
pub struct AppState {
    pub config: GatewayConfig,
    pub sources: Sources,
    /// Deduplicates and publishes: the only part that talks to Redis and RabbitMQ.
    pub ingestor: Ingestor,
    pub metrics: GatewayMetrics,
    /// The caps on requests in flight, body memory and heavy work.
    pub limits: LoadLimits,
    /// Caps the refusal lines logged a second (a flood would flood the log).
    pub refusal_log: LogBudget,
    /// Set on the stop signal: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
}

impl AppState {
    /// The state of a gateway serving `sources` under `config`. Nothing here
    /// connects: `dedup` dials Redis at its first call, and `publisher` is
    /// connected or not as it was given (a state built with
    /// [`ConfirmedPublisher::unconnected`] answers every publish 503).
    pub fn new(
        config: GatewayConfig,
        sources: Sources,
        dedup: DedupStore,
        publisher: ConfirmedPublisher,
        metrics: GatewayMetrics,
    ) -> Self {
        let policy = Policy::from_config(&config);
        let ingestor = Ingestor::new(dedup, publisher, metrics.clone(), policy);
        let limits = &config.limits;
        let limits = LoadLimits::new(
            limits.max_requests_in_flight,
            limits.max_body_memory,
            limits.offload_body_bytes,
        );
        Self {
            config,
            sources,
            ingestor,
            metrics,
            limits,
            refusal_log: LogBudget::default(),
            draining: AtomicBool::new(false),
        }
    }
}
