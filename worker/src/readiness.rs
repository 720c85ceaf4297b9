//! Whether the worker is doing its job, for `/readyz` and the connected gauge.
//!
//! The worker is ready while it is connected to RabbitMQ, has declared the
//! topology and is consuming; otherwise `/readyz` answers 503 with the reason
//! (not connected yet, lost the connection and why, shutting down). The
//! consume loop sets the state; readers never block it.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_shared::admin::{Check, Readiness};
use tokio::sync::watch;

use crate::metrics::WorkerMetrics;

/// The worker's link to RabbitMQ, as `/readyz` reports it.
#[derive(Clone)]
pub struct BrokerStatus {
    /// Why the worker is not consuming; `None` while it is.
    down: Arc<watch::Sender<Option<String>>>,
    metrics: WorkerMetrics,
}

impl BrokerStatus {
    /// Starts not ready: nothing is consumed until the first connection.
    pub fn new(metrics: WorkerMetrics) -> Self {
        let status = Self {
            down: Arc::new(watch::Sender::new(Some("not connected yet".into()))),
            metrics,
        };
        status.metrics.set_broker_connected(false);
        status
    }

    /// Connected and consuming.
    pub fn set_consuming(&self) {
        self.down.send_replace(None);
        self.metrics.set_broker_connected(true);
    }

    /// Not consuming, for `reason`.
    pub fn set_down(&self, reason: impl Into<String>) {
        self.down.send_replace(Some(reason.into()));
        self.metrics.set_broker_connected(false);
    }

    /// The current state: `Ok` or why not.
    pub fn current(&self) -> Result<(), String> {
        match self.down.borrow().as_ref() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

impl Readiness for BrokerStatus {
    async fn check(&self) -> BTreeMap<&'static str, Check> {
        let current = self.current();
        // Consuming implies a session, and a session is only opened once the
        // topology is declared on it.
        let topology = match current {
            Ok(()) => Ok(()),
            Err(_) => Err("not declared on a live RabbitMQ session".to_owned()),
        };
        BTreeMap::from([("rabbitmq", current.into()), ("topology", topology.into())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_follows_the_consumer() {
        let status = BrokerStatus::new(WorkerMetrics::new(std::iter::empty()).unwrap());
        assert_eq!(
            status.check().await["rabbitmq"],
            Check::Down("not connected yet".into())
        );
        status.set_consuming();
        assert_eq!(status.check().await["rabbitmq"], Check::Ok);
        status.set_down("connection lost");
        assert_eq!(
            status.check().await["rabbitmq"],
            Check::Down("connection lost".into())
        );
    }
}
