//! Settling a message: acknowledge it only once its next home has it.
//!
//! Delivered: ack. To retry or to the dead queue: publish a copy with
//! publisher confirms, and ack the original only on a plain `Ack(None)`.
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

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{Acker, BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::failure::DELIVERY_COUNT;
use crate::message::header_integer;

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
    let earlier = properties
        .headers()
        .as_ref()
        .and_then(|table| header_integer(table, DELIVERY_COUNT))
        .unwrap_or(0)
        .clamp(0, 16);
    let factor = 1u32 << u32::try_from(earlier).unwrap_or(16);
    REQUEUE_FIRST.saturating_mul(factor).min(REQUEUE_MAX)
}

/// Why a message could not be settled; the broker will redeliver it.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("the copy could not be sent: {0}")]
    Send(#[source] lapin::Error),
    #[error("no answer from RabbitMQ within {0:?}")]
    Timeout(Duration),
    #[error("the copy was not confirmed: {0}")]
    Confirm(#[source] lapin::Error),
    #[error("RabbitMQ refused the copy (nack)")]
    Nacked,
    #[error("the copy was unroutable and came back: is the {0} declared and bound?")]
    Returned(String),
    #[error("`{0}` is too long for an AMQP routing key")]
    Name(String),
    #[error("the publish channel is not in confirm mode")]
    NotConfirmed,
    #[error("the ack failed: {0}")]
    Ack(#[source] lapin::Error),
    #[error("the delivery's channel is closed")]
    ChannelGone,
}

/// Where a copy goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// A retry tier's queue, through the default exchange.
    RetryQueue(&'a str),
    /// The dead exchange, with this routing key.
    Dead(&'a ShortString),
}

/// Publishes copies with confirms on one channel, and settles originals.
pub struct Settler {
    channel: Channel,
    /// Serialises the send step: one publish's frames at a time on the channel.
    send_turn: Mutex<()>,
    dead_exchange: ShortString,
    /// Cancelled when the publish channel is found closed, so the consumer
    /// reconnects instead of nacking every message from now on.
    lost: CancellationToken,
}

impl Settler {
    /// `channel` must be in confirm mode.
    pub fn new(
        channel: Channel,
        dead_exchange: &str,
    ) -> Result<Self, lapin::types::ShortStringError> {
        Ok(Self {
            channel,
            send_turn: Mutex::new(()),
            dead_exchange: ShortString::try_new(dead_exchange)?,
            lost: CancellationToken::new(),
        })
    }

    /// Cancelled once this settler's channel is gone.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The publish channel, to close it at shutdown.
    pub fn channel(&self) -> &Channel {
        &self.channel
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
        match self.publish_confirmed(destination, body, properties).await {
            Ok(()) => self.ack(acker).await,
            Err(e) => {
                self.requeue(acker, requeue_after).await;
                Err(e)
            }
        }
    }

    async fn publish_confirmed(
        &self,
        destination: Destination<'_>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), SettleError> {
        let (exchange, routing_key, target) = self.address(destination)?;
        // Mandatory: an unroutable copy (a tier queue deleted by hand) comes
        // back as a return instead of vanishing, and the original stays.
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let confirm = {
            let _turn = self.send_turn.lock().await;
            let send = self
                .channel
                .basic_publish(exchange, routing_key, options, body, properties);
            timeout(BROKER_LIMIT, send)
                .await
                .map_err(|_| SettleError::Timeout(BROKER_LIMIT))?
                .map_err(|e| self.broken(SettleError::Send(e)))?
        };
        match timeout(BROKER_LIMIT, confirm).await {
            Err(_) => Err(SettleError::Timeout(BROKER_LIMIT)),
            Ok(Err(e)) => Err(self.broken(SettleError::Confirm(e))),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(SettleError::Returned(target)),
            Ok(Ok(Confirmation::Nack(_))) => Err(SettleError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => Err(SettleError::NotConfirmed),
        }
    }

    /// Exchange, routing key and a name for errors, of a destination.
    fn address(
        &self,
        destination: Destination<'_>,
    ) -> Result<(ShortString, ShortString, String), SettleError> {
        Ok(match destination {
            Destination::RetryQueue(queue) => (
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

    /// Signals a dead channel to the consumer, then passes the error on.
    fn broken(&self, error: SettleError) -> SettleError {
        if !self.channel.status().connected() {
            self.lost.cancel();
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    fn delivered_before(count: Option<i64>) -> BasicProperties {
        let mut table = FieldTable::default();
        if let Some(count) = count {
            table.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(count));
        }
        BasicProperties::default().with_headers(table)
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
