//! Settling a message: acknowledge it only once its next home has it.
//!
//! Delivered: ack. To retry or to the dead queue, routed (one copy per
//! matching route, into each route's queue), or held back in its route's
//! queue while the route's breaker is open: publish the copies with
//! publisher confirms, and ack the original only once every copy got a
//! plain `Ack(None)`.
//! Anything else (a nack, a returned message, an error, a timeout) nacks the
//! original with requeue, so the message is handled again, never lost; a
//! message that can never be settled reaches the work queue's
//! `x-delivery-limit` and RabbitMQ dead-letters it. The requeue waits first
//! ([`requeue_delay`]: 1 s, doubling with each earlier delivery, at most
//! 30 s): whatever stopped the copy (a tier queue deleted by hand, a broker
//! refusing publishes) rarely clears in milliseconds, and each round
//! delivers the event downstream again. A SIGKILL between the
//! confirm and the ack means a redelivery (a duplicate copy in a retry tier
//! at worst), never a loss.
//!
//! Copies go out through the shared confirmed-publish path
//! ([`sluice_shared::publish`]): each on a confirm channel lent to it alone,
//! so a returned copy is never taken for another task's, on a connection
//! of its own. RabbitMQ blocks a connection that publishes during a
//! resource alarm, and with it every ack sent on it: were copies published
//! on the consuming connection, the worker could not ack (and so drain) the
//! backlog that raised the alarm.

use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::ShortString;
use lapin::{Acker, BasicProperties};
use sluice_shared::message::MessageHeaders;
use sluice_shared::publish::{ConfirmChannels, Outgoing, PublishError};
use sluice_shared::topology::Topology;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Limit on sending a publish, on its confirm and on an ack: past it the
/// broker is treated as unreachable (a publish can hang when the server
/// closes the connection) and the message is left for redelivery.
const BROKER_LIMIT: Duration = Duration::from_secs(10);

/// The first wait before a message that could not be settled is requeued.
const REQUEUE_FIRST: Duration = Duration::from_secs(1);
/// The longest such wait.
const REQUEUE_MAX: Duration = Duration::from_secs(30);

/// How long to hold a message before requeueing it: [`REQUEUE_FIRST`],
/// doubled for each earlier delivery of it (the quorum queue's
/// `x-delivery-count`), at most [`REQUEUE_MAX`].
pub fn requeue_delay(properties: &BasicProperties) -> Duration {
    let earlier = MessageHeaders::of(properties)
        .delivery_count
        .unwrap_or(0)
        .clamp(0, 16);
    let factor = 1u32 << u32::try_from(earlier).unwrap_or(16);
    REQUEUE_FIRST.saturating_mul(factor).min(REQUEUE_MAX)
}

/// Why a message could not be settled; the broker will redeliver it.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("no answer from RabbitMQ within {0:?}")]
    Timeout(Duration),
    #[error("the copy to the {target} was not stored: {source}")]
    Copy {
        target: String,
        source: PublishError,
    },
    #[error("`{0}` is too long for an AMQP routing key")]
    Name(String),
    #[error("the ack failed: {0}")]
    Ack(#[source] lapin::Error),
    #[error("the delivery's channel is closed")]
    ChannelGone,
}

/// Where a copy goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// A queue, through the default exchange: a route's queue or a retry tier.
    Queue(&'a str),
    /// The dead exchange, with this routing key.
    Dead(&'a ShortString),
}

/// Publishes copies with confirms on a connection of its own, and settles originals.
pub struct Settler {
    copies: ConfirmChannels,
    topology: Topology,
    dead_exchange: ShortString,
    /// When the topology was last declared again after a copy came back.
    declared_at: std::sync::Mutex<Option<Instant>>,
    /// Cancelled when the publish connection is found closed, so the
    /// consumer reconnects instead of nacking every message from now on.
    lost: CancellationToken,
}

impl Settler {
    /// `copies` lends one channel per copy on the publish connection.
    pub fn new(
        copies: ConfirmChannels,
        topology: Topology,
    ) -> Result<Self, lapin::types::ShortStringError> {
        Ok(Self {
            copies,
            dead_exchange: ShortString::try_new(topology.dead_exchange())?,
            topology,
            declared_at: std::sync::Mutex::new(None),
            lost: CancellationToken::new(),
        })
    }

    /// The topology copies are published into.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Cancelled once this settler's connection is gone.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Closes the publish connection (the session closes the other).
    pub async fn close(&self) {
        self.copies.close_idle().await;
        let connection = self.copies.connection();
        if connection.status().connected()
            && let Ok(Err(e)) = timeout(
                BROKER_LIMIT,
                connection.close(200, "worker stopping".into()),
            )
            .await
        {
            tracing::debug!(error = %e, "closing the publish connection failed");
        }
    }

    /// Acknowledges a delivered message.
    pub async fn ack(&self, acker: &Acker) -> Result<(), SettleError> {
        match timeout(BROKER_LIMIT, acker.ack(BasicAckOptions::default())).await {
            Err(_) => Err(SettleError::Timeout(BROKER_LIMIT)),
            Ok(Err(e)) => Err(SettleError::Ack(e)),
            Ok(Ok(false)) => Err(SettleError::ChannelGone),
            Ok(Ok(true)) => Ok(()),
        }
    }

    /// Publishes a copy to `destination`; acks the original once confirmed,
    /// else requeues it after `requeue_after`.
    pub async fn move_to(
        &self,
        acker: &Acker,
        destination: Destination<'_>,
        body: &[u8],
        properties: BasicProperties,
        requeue_after: Duration,
    ) -> Result<(), SettleError> {
        self.move_all(acker, body, vec![(destination, properties)], requeue_after)
            .await
    }

    /// Publishes one copy of `body` per entry of `copies`, each to its
    /// destination, together; acks the original once every copy is
    /// confirmed, else requeues it after `requeue_after` (the copies that
    /// were stored stay: the next round publishes them again, a duplicate at
    /// worst).
    pub async fn move_all(
        &self,
        acker: &Acker,
        body: &[u8],
        copies: Vec<(Destination<'_>, BasicProperties)>,
        requeue_after: Duration,
    ) -> Result<(), SettleError> {
        match self.publish_confirmed(body, copies).await {
            Ok(()) => self.ack(acker).await,
            Err(e) => {
                self.requeue(acker, requeue_after).await;
                Err(e)
            }
        }
    }

    /// Publishes the copies and awaits their confirms, settling nothing:
    /// the ordered path acks its message itself, and never requeues it
    /// (a requeued message would go to the tail, behind later events).
    pub async fn publish_confirmed(
        &self,
        body: &[u8],
        copies: Vec<(Destination<'_>, BasicProperties)>,
    ) -> Result<(), SettleError> {
        let wanted = copies.len();
        let mut targets = Vec::with_capacity(wanted);
        let mut outgoing = Vec::with_capacity(wanted);
        for (destination, properties) in copies {
            let (exchange, routing_key, target) = self.address(destination)?;
            targets.push(target);
            outgoing.push(Outgoing {
                exchange,
                routing_key,
                body: body.to_vec(),
                properties,
            });
        }
        let outcome = self.copies.publish(outgoing, Some(BROKER_LIMIT)).await;
        if outcome.len() < wanted {
            return Err(SettleError::Timeout(BROKER_LIMIT));
        }
        let Some((target, source)) = targets
            .into_iter()
            .zip(outcome)
            .find_map(|(target, result)| result.err().map(|e| (target, e)))
        else {
            return Ok(());
        };
        if source.is_broken_link() && !self.copies.connection().status().connected() {
            self.lost.cancel();
        }
        if let PublishError::Unroutable { .. } = source {
            self.redeclare().await;
        }
        Err(SettleError::Copy { target, source })
    }

    /// Declares the topology again (at most once a second) after a copy
    /// came back: it restores a retry tier, route queue or dead queue
    /// deleted by hand, so
    /// the requeued original's next copy is routed.
    async fn redeclare(&self) {
        {
            let mut at = self
                .declared_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *at = Some(Instant::now());
        }
        let declare = self.topology.declare(self.copies.connection());
        match timeout(BROKER_LIMIT, declare).await {
            Ok(Ok(())) => tracing::warn!("a copy found no queue: the topology is declared again"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a copy found no queue and declaring the topology failed")
            }
            Err(_) => tracing::error!("a copy found no queue and declaring the topology timed out"),
        }
    }

    /// Exchange, routing key and a name for errors, of a destination.
    fn address(
        &self,
        destination: Destination<'_>,
    ) -> Result<(ShortString, ShortString, String), SettleError> {
        Ok(match destination {
            Destination::Queue(queue) => (
                // The default exchange routes to the queue named by the key.
                ShortString::default(),
                ShortString::try_new(queue).map_err(|_| SettleError::Name(queue.into()))?,
                format!("queue {queue}"),
            ),
            Destination::Dead(key) => (
                self.dead_exchange.clone(),
                key.clone(),
                format!("exchange {}", self.dead_exchange),
            ),
        })
    }

    /// Puts the original back on the work queue after `delay` (best effort:
    /// if the channel is gone, the broker requeues it anyway when it notices).
    pub async fn requeue(&self, acker: &Acker, delay: Duration) {
        tokio::time::sleep(delay).await;
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        match timeout(BROKER_LIMIT, acker.nack(options)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "requeue failed; the broker will redeliver"),
            Err(_) => tracing::debug!("requeue timed out; the broker will redeliver"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered_before(count: Option<i64>) -> BasicProperties {
        let headers = MessageHeaders {
            delivery_count: count,
            ..MessageHeaders::default()
        };
        BasicProperties::default().with_headers(headers.encode())
    }

    #[test]
    fn a_requeue_waits_a_second_doubling_with_each_delivery_up_to_thirty() {
        let waits: Vec<u64> = [None, Some(1), Some(2), Some(3), Some(4), Some(5), Some(60)]
            .into_iter()
            .map(|count| requeue_delay(&delivered_before(count)).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            requeue_delay(&BasicProperties::default()),
            Duration::from_secs(1)
        );
        assert_eq!(
            requeue_delay(&delivered_before(Some(-3))),
            Duration::from_secs(1)
        );
    }
}
