//! Putting back what found no queue.
//!
//! The events and dead exchanges have `{prefix}.unroutable` as their
//! alternate exchange, so a message that no binding routes (a binding or a
//! queue deleted by hand, a retry of the runbook's `delete_queue`) is kept
//! there, confirmed, instead of being returned or dropped. Every gateway
//! consumes that queue. A message found there means routing is broken, so
//! the gateway:
//! 1. counts routing as broken (`/readyz` 503, `sluice_gateway_routing_broken`)
//!    until no message has found no queue for `publisher::ROUTING_SETTLE`;
//! 2. declares the topology again (at most once a second), which restores a
//!    deleted binding or queue;
//! 3. publishes each message again where it belongs, through the shared
//!    confirmed-publish path: to the dead exchange if it carries a
//!    dead-letter reason, else to the events exchange, with its routing key,
//!    properties and body, and `x-sluice-rerouted` counting the tries. Once
//!    confirmed the original is acknowledged; otherwise it is requeued.
//!
//! A message that comes back again waits first (250 ms, doubling with each
//! try, at most 30 s), so a topology that cannot be repaired (a declare
//! refused) makes a slow loop, never a spinning one. A publish that came
//! back to the gateway itself (no alternate exchange: an exchange declared
//! by an earlier version) also triggers step 2.

use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sluice_shared::message::{MessageHeaders, headers};
use sluice_shared::publish::Outgoing;
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;
use crate::publisher::ConfirmedPublisher;

/// Messages put back together (and the consumer's prefetch).
const BATCH: usize = 256;
/// Limit on each publish and confirm.
const PUBLISH_LIMIT: Duration = Duration::from_secs(10);
/// The least time between two declarations of the topology.
const DECLARE_EVERY: Duration = Duration::from_secs(1);
/// The wait before a second try, doubled for each further one.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Consumes the unroutable queue until `shutdown`, reconnecting with the
/// publisher's connection.
pub async fn run(
    publisher: ConfirmedPublisher,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) {
    let mut rerouter = Rerouter {
        publisher,
        metrics,
        declared_at: None,
    };
    while !shutdown.is_cancelled() {
        match rerouter.consume().await {
            Ok(consumer) => rerouter.drain(consumer, &shutdown).await,
            Err(e) => tracing::debug!(error = %e, "cannot consume the unroutable queue yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct Rerouter {
    publisher: ConfirmedPublisher,
    metrics: GatewayMetrics,
    declared_at: Option<Instant>,
}

impl Rerouter {
    async fn consume(&self) -> Result<Consumer, String> {
        let channel = self.publisher.channel().await.map_err(|e| e.to_string())?;
        let prefetch = u16::try_from(BATCH).unwrap_or(u16::MAX);
        let qos = channel.basic_qos(prefetch, BasicQosOptions { global: false });
        qos.await.map_err(|e| e.to_string())?;
        let queue = self.publisher.topology().unroutable();
        let consume = channel.basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        consume.await.map_err(|e| e.to_string())
    }

    /// Puts messages back as they come, until the consumer ends.
    async fn drain(&mut self, mut consumer: Consumer, shutdown: &CancellationToken) {
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.publisher.unroutable_returned() => {
                    self.redeclare().await;
                    continue;
                }
                next = consumer.next() => next,
            };
            let Some(Ok(first)) = first else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    _ => break,
                }
            }
            self.put_back(batch, shutdown).await;
        }
    }

    async fn put_back(&mut self, batch: Vec<Delivery>, shutdown: &CancellationToken) {
        self.publisher.mark_unroutable();
        self.redeclare().await;
        let tries = batch
            .iter()
            .map(|d| tries(&MessageHeaders::of(&d.properties)));
        let wait = retry_wait(tries.max().unwrap_or(0));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let group: Vec<Outgoing> = batch.iter().map(|d| self.home(d)).collect();
        let outcomes = match self.publisher.publish_group(group, PUBLISH_LIMIT).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(error = %e, messages = batch.len(), "cannot put unroutable messages back yet");
                Vec::new()
            }
        };
        let mut put_back = 0usize;
        for (index, delivery) in batch.iter().enumerate() {
            let stored = matches!(outcomes.get(index), Some(Ok(())));
            let acked = match stored {
                true => delivery.acker.ack(BasicAckOptions::default()).await,
                false => {
                    let requeue = BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    };
                    delivery.acker.nack(requeue).await
                }
            };
            if let Err(e) = acked {
                tracing::debug!(error = %e, "settling an unroutable message failed; RabbitMQ redelivers it");
            }
            put_back += usize::from(stored);
        }
        let left = batch.len() - put_back;
        self.count("put_back", put_back);
        self.count("left", left);
        tracing::warn!(
            put_back,
            left,
            "messages that found no queue were put back after re-declaring the topology"
        );
    }

    fn count(&self, outcome: &str, n: usize) {
        let counter = self.metrics.rerouted.with_label_values(&[outcome]);
        counter.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// The message to publish for `delivery`: where it belongs, one try more.
    fn home(&self, delivery: &Delivery) -> Outgoing {
        let topology = self.publisher.topology();
        let mut headers = MessageHeaders::of(&delivery.properties);
        // A dead copy carries a reason, even one this version cannot read.
        let dead = headers.reason.is_some() || headers.unreadable.contains(&headers::REASON);
        let exchange = match dead {
            true => topology.dead_exchange(),
            false => topology.events_exchange(),
        };
        headers.rerouted = Some(tries(&headers).saturating_add(1));
        Outgoing {
            exchange: exchange.into(),
            routing_key: delivery.routing_key.clone(),
            body: delivery.data.clone(),
            properties: delivery.properties.clone().with_headers(headers.encode()),
        }
    }

    async fn redeclare(&mut self) {
        if self
            .declared_at
            .is_some_and(|at| at.elapsed() < DECLARE_EVERY)
        {
            return;
        }
        self.declared_at = Some(Instant::now());
        match self.publisher.redeclare().await {
            Ok(()) => tracing::warn!("a message found no queue: the topology is declared again"),
            Err(e) => {
                tracing::error!(error = %e, "a message found no queue and declaring the topology failed: fix the topology (docs/operations.md, \"Unroutable messages\")")
            }
        }
    }
}

/// Earlier tries to put a message back (`x-sluice-rerouted`).
fn tries(headers: &MessageHeaders) -> i64 {
    headers.rerouted.unwrap_or(0)
}

/// No wait the first time; then 250 ms doubling with each try, at most 30 s.
fn retry_wait(tries: i64) -> Duration {
    if tries <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(tries - 1).unwrap_or(u32::MAX).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_back_again_waits_longer_each_time_up_to_thirty_seconds() {
        let waits: Vec<u64> = [0, 1, 2, 3, 8, 60, -1]
            .into_iter()
            .map(|n| retry_wait(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [0, 250, 500, 1000, 30_000, 30_000, 0]);
    }

    #[test]
    fn tries_are_read_from_the_rerouted_header() {
        let mut headers = MessageHeaders::default();
        assert_eq!(tries(&headers), 0);
        headers.rerouted = Some(3);
        let read = MessageHeaders::decode(Some(&headers.encode()));
        assert_eq!(tries(&read), 3);
    }
}
