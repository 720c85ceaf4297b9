//! A pass over the dead queue that leaves it exactly as it was, except for
//! what the command acknowledges.
//!
//! How, on RabbitMQ 3.10 quorum queues (checked by hand and by the `dlq` end-to-end tests):
//! - `basic.get` or a consumer, then `basic.nack`/`reject` with requeue,
//!   puts the message at the *tail* of a quorum queue: order is lost;
//! - messages still unacknowledged when their channel (or connection, or the
//!   process) goes away return to the *head*, in their original order, ahead
//!   of anything that arrived meanwhile.
//!
//! So a pass counts the ready messages (the snapshot), consumes exactly that
//! many with a prefetch of the snapshot (everything is held at once; 0, no
//! limit, above 65,535), acknowledges only what the command takes (after it
//! is safe elsewhere), and closes its channel: the rest goes back in order.
//! A crash at any instant closes the channel too, so nothing is ever lost.
//! Returns are processed by the queue a few milliseconds after the close:
//! [`Scan::finish`] waits until the count is back.
//!
//! Two passes at once would see each other's held messages as missing, so
//! every command first takes a lock: an exclusive queue `<prefix>.dead.lock`,
//! which RabbitMQ deletes when the holder's connection ends, even by SIGKILL.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Channel, Connection, Consumer};
use sluice_shared::amqp;
use sluice_shared::config::AmqpConfig;
use sluice_shared::topology::Topology;
use tokio::time::{Instant, timeout};

use super::error::DlqError;
use super::event::DeadEvent;

/// Limit on every broker call of a pass.
const BROKER_LIMIT: Duration = Duration::from_secs(10);
/// A pass that receives nothing for this long fails ([`DlqError::ShortPass`]):
/// someone else (not a `dlq` command, which would need the lock) took some of
/// the snapshot, and a command that went on would do part of its job.
const IDLE_LIMIT: Duration = Duration::from_secs(5);
/// How long a held lock is tried again before the command gives up.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long [`Scan::finish`] waits for the held messages to be counted again.
const RETURN_LIMIT: Duration = Duration::from_secs(10);

/// A connection to the dead queue, holding the `dlq` lock.
pub struct DeadQueue {
    connection: Connection,
    control: Channel,
    topology: Topology,
}

impl DeadQueue {
    /// Connects, checks that the dead queue exists and takes the lock.
    /// Nothing is declared: a wrong `amqp.prefix` is an error, not a new,
    /// empty topology.
    pub async fn open(config: &AmqpConfig) -> Result<Self, DlqError> {
        let name = format!("sluice-dlq-{}", std::process::id());
        let connection = amqp::connect(&config.url, &name, config.connect_timeout).await?;
        let control = bounded("opening a channel", connection.create_channel()).await?;
        let queue = Self {
            connection,
            control,
            topology: Topology::new(config),
        };
        queue.ensure_exists().await?;
        queue.lock().await?;
        Ok(queue)
    }

    /// A passive declare, on a throwaway channel (a missing queue closes it).
    async fn ensure_exists(&self) -> Result<(), DlqError> {
        let channel = bounded("opening a channel", self.connection.create_channel()).await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let name = self.name();
        let declared = channel.queue_declare(
            ShortString::from(name.as_str()),
            passive,
            FieldTable::default(),
        );
        match timeout(BROKER_LIMIT, declared).await {
            Err(_) => Err(DlqError::timeout(
                "looking for the dead queue",
                BROKER_LIMIT,
            )),
            Ok(Err(e)) if soft_error(&e) == Some(AMQPSoftError::NOTFOUND) => {
                Err(DlqError::Missing(name))
            }
            Ok(Err(e)) => Err(DlqError::broker("looking for the dead queue")(e)),
            Ok(Ok(_)) => {
                let done = channel.close(200, ShortString::from("found"));
                bounded("closing a channel", done).await
            }
        }
    }

    /// The dead queue's name.
    pub fn name(&self) -> String {
        self.topology.dead_queue()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The lock: an exclusive, auto-deleted queue only one connection can
    /// hold. A lock still held is tried again for [`LOCK_WAIT`]: a command
    /// killed a moment ago may not have been noticed by the broker yet.
    async fn lock(&self) -> Result<(), DlqError> {
        let lock = format!("{}.lock", self.topology.dead_queue());
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match self.try_lock(&lock).await {
                Err(DlqError::Locked(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    async fn try_lock(&self, lock: &str) -> Result<(), DlqError> {
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        // On a throwaway channel: RabbitMQ closes the channel that asks for a held lock.
        let channel = bounded("opening a channel", self.connection.create_channel()).await?;
        let declared =
            channel.queue_declare(ShortString::from(lock), options, FieldTable::default());
        match timeout(BROKER_LIMIT, declared).await {
            Err(_) => Err(DlqError::timeout("taking the dlq lock", BROKER_LIMIT)),
            Ok(Err(e)) if is_locked(&e) => Err(DlqError::Locked(lock.to_owned())),
            Ok(Err(e)) => Err(DlqError::broker("taking the dlq lock")(e)),
            Ok(Ok(_)) => {
                // The lock belongs to the connection; the channel can go now
                // (closed, not dropped: a close still in flight when the
                // connection closes makes lapin log an error).
                let done = channel.close(200, ShortString::from("locked"));
                bounded("closing the lock's channel", done).await
            }
        }
    }

    /// Ready messages in the dead queue.
    pub async fn count(&self) -> Result<u32, DlqError> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let name = self.name();
        let declared = self.control.queue_declare(
            ShortString::from(name.as_str()),
            passive,
            FieldTable::default(),
        );
        Ok(bounded("counting the dead queue", declared)
            .await?
            .message_count())
    }

    /// A new channel, e.g. in confirm mode for a replay's copies.
    pub async fn confirm_channel(&self) -> Result<Channel, DlqError> {
        bounded(
            "opening a confirm channel",
            amqp::confirm_channel(&self.connection),
        )
        .await
    }

    /// Starts a pass over the messages ready now.
    pub async fn scan(&self) -> Result<Scan, DlqError> {
        let snapshot = self.count().await?;
        let channel = bounded("opening a channel", self.connection.create_channel()).await?;
        // Every message of the pass is held at once: the prefetch must not stop
        // the flow before the end. 0 means no limit (a snapshot above u16).
        let prefetch = u16::try_from(snapshot).unwrap_or(0);
        bounded(
            "setting the prefetch",
            channel.basic_qos(prefetch, BasicQosOptions { global: false }),
        )
        .await?;
        let consumer = if snapshot == 0 {
            None
        } else {
            let name = self.name();
            let consume = channel.basic_consume(
                ShortString::from(name.as_str()),
                ShortString::from("sluice-dlq"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            );
            Some(bounded("consuming the dead queue", consume).await?)
        };
        Ok(Scan {
            channel,
            consumer,
            snapshot,
            received: 0,
            acked: 0,
        })
    }

    /// Closes the connection, which also releases the lock.
    pub async fn close(self) {
        if self.connection.status().connected() {
            let _ = timeout(
                BROKER_LIMIT,
                self.connection.close(200, ShortString::from("dlq done")),
            )
            .await;
        }
    }
}

/// One pass: yields the snapshot's messages in queue order.
pub struct Scan {
    channel: Channel,
    consumer: Option<Consumer>,
    snapshot: u32,
    received: u32,
    acked: u32,
}

/// A message of the pass, with what acknowledges it.
pub struct Held {
    pub event: DeadEvent,
    pub acker: Acker,
}

impl Scan {
    /// Messages ready when the pass started.
    pub fn snapshot(&self) -> u32 {
        self.snapshot
    }

    /// Messages received so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// The next message, or `None` once the snapshot is read. A snapshot
    /// that stops coming is an error, never a short pass taken for a whole one.
    pub async fn next(&mut self) -> Result<Option<Held>, DlqError> {
        if self.received >= self.snapshot {
            return Ok(None);
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(None);
        };
        let delivery = match timeout(IDLE_LIMIT, consumer.next()).await {
            Err(_) => {
                return Err(DlqError::ShortPass {
                    received: self.received,
                    snapshot: self.snapshot,
                    idle: IDLE_LIMIT,
                });
            }
            Ok(None) => return Err(DlqError::ChannelClosed("reading the dead queue")),
            Ok(Some(delivery)) => delivery.map_err(DlqError::broker("reading the dead queue"))?,
        };
        self.received += 1;
        let event = DeadEvent::read(
            u64::from(self.received),
            delivery.routing_key.as_str(),
            delivery.properties,
            delivery.data,
        );
        Ok(Some(Held {
            event,
            acker: delivery.acker,
        }))
    }

    /// Removes a message from the dead queue for good.
    pub async fn ack(&mut self, acker: &Acker) -> Result<(), DlqError> {
        let acked = bounded(
            "acknowledging a dead message",
            acker.ack(BasicAckOptions::default()),
        )
        .await?;
        if !acked {
            return Err(DlqError::ChannelClosed("acknowledging a dead message"));
        }
        self.acked += 1;
        Ok(())
    }

    /// Messages acknowledged (removed) by this pass.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// Gives back everything not acknowledged (to the head, in order) and
    /// waits until the queue counts it again.
    pub async fn finish(self, queue: &DeadQueue) -> Result<(), DlqError> {
        let expected = self.snapshot.saturating_sub(self.acked);
        if self.channel.status().connected() {
            let close = self.channel.close(200, ShortString::from("dlq pass done"));
            bounded("closing the pass's channel", close).await?;
        }
        let deadline = Instant::now() + RETURN_LIMIT;
        while queue.count().await? < expected {
            if Instant::now() >= deadline {
                tracing::warn!(
                    expected,
                    "the dead queue did not count every held message again yet"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// A broker call within [`BROKER_LIMIT`].
async fn bounded<T>(
    doing: &'static str,
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, DlqError> {
    timeout(BROKER_LIMIT, call)
        .await
        .map_err(|_| DlqError::timeout(doing, BROKER_LIMIT))?
        .map_err(DlqError::broker(doing))
}

fn is_locked(error: &lapin::Error) -> bool {
    soft_error(error) == Some(AMQPSoftError::RESOURCELOCKED)
}

/// The AMQP soft error (a channel-level refusal) behind `error`, if any.
fn soft_error(error: &lapin::Error) -> Option<AMQPSoftError> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => match e.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}
