//! A pass over the dead queue that leaves it exactly as it was, except for
//! what the command acknowledges.
//!
//! How, on RabbitMQ 3.10 quorum queues (see `docs/architecture.md`, "How a
//! dlq pass reads the dead queue", for the evidence):
//! - `basic.get` or a consumer, then `basic.nack`/`reject` with requeue,
//!   puts the message at the *tail* of a quorum queue: order is lost;
//! - messages still unacknowledged when their channel (or connection, or the
//!   process) goes away return to the *head*, in their original order, ahead
//!   of anything that arrived meanwhile;
//! - a consumer holds at most its prefetch, and a prefetch of 0 means 2,000,
//!   not "no limit".
//!
//! So a pass counts every message (the snapshot, see [`super::queue`]) and
//! reads it in batches of `dlq.scan_batch`: one channel and one consumer per
//! batch, with a prefetch of exactly the batch, started when the batch before
//! it is fully delivered and cancelled once its own is (so acknowledging
//! never lets a later message in). It acknowledges only what the command
//! takes, after it is safe elsewhere ([`super::acks`] says how), then closes
//! the batches' channels in order, each once the queue has its messages back,
//! so the rest returns in order. A batch that stops delivering fails the pass
//! ([`DlqError::ShortPass`]): a pass never takes part of the queue for all of it.
//!
//! A crash at any instant closes every channel: nothing is lost, each batch
//! comes back in order, but two batches may come back in either order.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Consumer};
use tokio::time::{Instant, timeout};

use super::acks::{AckFrames, Acks};
use super::error::DlqError;
use super::event::DeadEvent;
use super::queue::{BROKER_LIMIT, DeadQueue, RETURN_LIMIT};

/// A pass that receives nothing for this long fails ([`DlqError::ShortPass`]):
/// someone else (not a `dlq` command, which would need the lock) took some of
/// the snapshot, and a command that went on would do part of its job.
const IDLE_LIMIT: Duration = Duration::from_secs(5);
/// A batch that sent this many single acknowledgements may have some still
/// held back by its channel (RabbitMQ's limit is 32 commands in flight).
const SINGLES_AT_RISK: u64 = 16;
/// How long such a pass waits before closing, so the queue applies them.
const SETTLE_PAUSE: Duration = Duration::from_millis(300);

/// One pass: yields the snapshot's messages in queue order.
pub struct Scan {
    queue: String,
    snapshot: u32,
    batches: Vec<Batch>,
    /// The batch being read.
    current: usize,
    received: u32,
    acked: u32,
}

/// One consumer of a pass, on a channel of its own.
struct Batch {
    channel: Channel,
    /// Messages it is to deliver.
    size: u32,
    consumer: Option<Consumer>,
    /// Its consumer was cancelled: it delivers what was already on its way, then ends.
    cancelled: bool,
    received: u32,
    acks: Acks,
}

/// Where a held message is: its batch and delivery tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    batch: usize,
    tag: u64,
}

/// A message of the pass, with what acknowledges it.
pub struct Held {
    pub event: DeadEvent,
    pub mark: Mark,
}

impl Scan {
    /// A pass over `snapshot` messages, one batch per channel in `channels`.
    pub(super) async fn new(
        queue: String,
        snapshot: u32,
        batch: u16,
        channels: Vec<Channel>,
    ) -> Result<Self, DlqError> {
        let mut batches = Vec::with_capacity(channels.len());
        let mut left = snapshot;
        for channel in channels {
            let size = left.min(u32::from(batch));
            left -= size;
            // Exactly the batch: the consumer stops at its share.
            let prefetch = u16::try_from(size).unwrap_or(batch);
            let qos = channel.basic_qos(prefetch, BasicQosOptions { global: false });
            bounded("setting the prefetch", qos).await?;
            batches.push(Batch {
                channel,
                size,
                consumer: None,
                cancelled: false,
                received: 0,
                acks: Acks::default(),
            });
        }
        Ok(Self {
            queue,
            snapshot,
            batches,
            current: 0,
            received: 0,
            acked: 0,
        })
    }

    /// Messages in the dead queue when the pass started.
    pub fn snapshot(&self) -> u32 {
        self.snapshot
    }

    /// Messages received so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Messages acknowledged (removed) by this pass.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// The next message, or `None` once the snapshot is read. A snapshot
    /// that stops coming is an error, never a short pass taken for a whole one.
    ///
    /// A batch's consumer is cancelled once it delivered its share, but an
    /// acknowledgement sent before the cancel took effect frees prefetch room,
    /// and the queue fills it with the messages that follow. Those arrive
    /// before the cancel's answer, so the batch is read until its consumer
    /// ends, then the next batch starts where it left off: the pass keeps
    /// queue order and misses nothing. (Moving on at the share left those
    /// messages held on a finished channel: a replay of 100,000 stopped at
    /// 60,000.)
    pub async fn next(&mut self) -> Result<Option<Held>, DlqError> {
        loop {
            if self.received == self.snapshot {
                return Ok(None);
            }
            let short = DlqError::ShortPass {
                received: self.received,
                snapshot: self.snapshot,
                idle: IDLE_LIMIT,
            };
            let Some(batch) = self.batches.get_mut(self.current) else {
                return Err(short);
            };
            if batch.consumer.is_none() {
                batch.start(&self.queue, self.current).await?;
            }
            let Some(consumer) = batch.consumer.as_mut() else {
                return Err(DlqError::ChannelClosed("reading the dead queue"));
            };
            let delivery = match timeout(IDLE_LIMIT, consumer.next()).await {
                Err(_) => return Err(short),
                // The end of a consumer this pass cancelled: on to the next batch.
                Ok(None) if batch.cancelled => {
                    self.current += 1;
                    continue;
                }
                Ok(None) => return Err(DlqError::ChannelClosed("reading the dead queue")),
                Ok(Some(delivery)) => {
                    delivery.map_err(DlqError::broker("reading the dead queue"))?
                }
            };
            batch.received += 1;
            self.received += 1;
            let mark = Mark {
                batch: self.current,
                tag: delivery.delivery_tag,
            };
            if batch.received == batch.size && !batch.cancelled {
                batch.stop(self.current).await?;
            }
            let event = DeadEvent::read(
                u64::from(self.received),
                delivery.routing_key.as_str(),
                delivery.properties,
                delivery.data,
            );
            return Ok(Some(Held { event, mark }));
        }
    }

    /// Removes messages from the dead queue for good; `marks` in the order
    /// the pass read them.
    pub async fn ack(&mut self, marks: &[Mark]) -> Result<(), DlqError> {
        for run in marks.chunk_by(|a, b| a.batch == b.batch) {
            let index = run[0].batch;
            let batch = self
                .batches
                .get_mut(index)
                .ok_or(DlqError::ChannelClosed("acknowledging a dead message"))?;
            let tags: Vec<u64> = run.iter().map(|m| m.tag).collect();
            let frames = batch.acks.frames(&tags);
            send(&batch.channel, &frames).await?;
            self.acked += run.len() as u32;
        }
        Ok(())
    }

    /// Gives back everything not acknowledged (to the head, in order) and
    /// waits until the queue counts it again.
    pub async fn finish(self, queue: &DeadQueue) -> Result<(), DlqError> {
        if self
            .batches
            .iter()
            .any(|b| b.acks.singles() >= SINGLES_AT_RISK)
        {
            tokio::time::sleep(SETTLE_PAUSE).await;
        }
        let mut open = self.batches.iter().filter(|b| b.consumer.is_some()).count();
        for batch in &self.batches {
            let started = batch.consumer.is_some();
            if batch.channel.status().connected() {
                let close = batch.channel.close(200, ShortString::from("dlq pass done"));
                bounded("closing the pass's channel", close).await?;
            }
            if started {
                open -= 1;
                // The next batch's messages go back only after this one's.
                wait_for_consumers(queue, open as u32).await?;
            }
        }
        let expected = self.snapshot.saturating_sub(self.acked);
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

impl Batch {
    async fn start(&mut self, queue: &str, index: usize) -> Result<(), DlqError> {
        let consume = self.channel.basic_consume(
            ShortString::from(queue),
            tag(index),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        self.consumer = Some(bounded("consuming the dead queue", consume).await?);
        Ok(())
    }

    /// Cancels the consumer, which keeps what it holds: acknowledging then
    /// frees no room for a message beyond the snapshot.
    async fn stop(&mut self, index: usize) -> Result<(), DlqError> {
        let cancel = self
            .channel
            .basic_cancel(tag(index), BasicCancelOptions::default());
        bounded("ending a batch of the pass", cancel).await?;
        self.cancelled = true;
        Ok(())
    }
}

fn tag(index: usize) -> ShortString {
    ShortString::from(format!("sluice-dlq-{index}"))
}

async fn send(channel: &Channel, frames: &AckFrames) -> Result<(), DlqError> {
    const DOING: &str = "acknowledging dead messages";
    if let Some(through) = frames.through {
        let ack = channel.basic_ack(through, BasicAckOptions { multiple: true });
        bounded(DOING, ack).await?;
    }
    for &tag in &frames.singles {
        let ack = channel.basic_ack(tag, BasicAckOptions::default());
        bounded(DOING, ack).await?;
    }
    Ok(())
}

/// Waits until the dead queue counts at most `consumers` consumers: a closed
/// batch's messages are back once its consumer is gone.
async fn wait_for_consumers(queue: &DeadQueue, consumers: u32) -> Result<(), DlqError> {
    let deadline = Instant::now() + RETURN_LIMIT;
    while queue.stat().await?.consumers > consumers {
        if Instant::now() >= deadline {
            tracing::warn!(
                consumers,
                "the dead queue still counts a closed batch's consumer"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// A broker call within [`BROKER_LIMIT`].
pub(super) async fn bounded<T>(
    doing: &'static str,
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, DlqError> {
    timeout(BROKER_LIMIT, call)
        .await
        .map_err(|_| DlqError::timeout(doing, BROKER_LIMIT))?
        .map_err(DlqError::broker(doing))
}
