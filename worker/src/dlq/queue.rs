//! The dead queue as the `dlq` commands open it: one connection that holds
//! the `dlq` lock, counts the queue, and starts passes over it ([`Scan`]).
//!
//! Two passes at once would see each other's held messages as missing, so
//! every command first takes a lock: an exclusive queue `<prefix>.dead.lock`,
//! which RabbitMQ deletes when the holder's connection ends, even by SIGKILL.
//!
//! The lock goes a moment before the dead queue has taken a killed holder's
//! messages back, and a count in between would be short. The queue answers a
//! count with its consumers too, and a consumer stays counted until the queue
//! has taken back every message it held (RabbitMQ 3.10 removes the consumer
//! and returns its messages in one step). So a pass counts only when the dead
//! queue has no consumer; if one stays, the pass fails
//! ([`DlqError::Consumers`]) instead of counting what it cannot see.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use sluice_shared::amqp;
use sluice_shared::config::AmqpConfig;
use sluice_shared::publish::ConfirmChannels;
use sluice_shared::topology::Topology;
use tokio::sync::OnceCell;
use tokio::time::{Instant, timeout};

use super::error::DlqError;
use super::scan::{Scan, bounded};

/// Limit on every broker call of a pass.
pub const BROKER_LIMIT: Duration = Duration::from_secs(10);
/// How long a held lock is tried again before the command gives up.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long a pass waits for the dead queue to have no consumer (a killed
/// command's messages coming back) before it refuses to count.
pub const RETURN_LIMIT: Duration = Duration::from_secs(10);

/// A connection to the dead queue, holding the `dlq` lock.
pub struct DeadQueue {
    connection: Connection,
    /// A second connection for a replay's copies, opened on first use.
    /// Publishing fast puts a connection under RabbitMQ's flow control,
    /// which also holds back the acknowledgements and consumer starts sent
    /// on it: a pass that published on its own reading connection stalled
    /// after 60,000 of 100,000 events.
    publisher: OnceCell<ConfirmChannels>,
    amqp_nodes: amqp::AmqpNodes,
    connect_timeout: Duration,
    control: Channel,
    topology: Topology,
    /// Messages one consumer of a pass holds (`dlq.scan_batch`).
    batch: u16,
}

/// What the dead queue answers a count with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStat {
    /// Ready messages: neither delivered nor held by a consumer.
    pub ready: u32,
    /// Consumers, including ones cancelled but still holding messages.
    pub consumers: u32,
}

impl DeadQueue {
    /// Connects, checks that the dead queue exists and takes the lock.
    /// Nothing is declared: a wrong `amqp.prefix` is an error, not a new,
    /// empty topology. `batch` is `dlq.scan_batch`.
    pub async fn open(config: &AmqpConfig, batch: u16) -> Result<Self, DlqError> {
        if batch == 0 {
            return Err(DlqError::Usage("dlq.scan_batch must be at least 1".into()));
        }
        let name = format!("sluice-dlq-{}", std::process::id());
        let connection = amqp::connect(&config.nodes, &name, config.connect_timeout).await?;
        let control = bounded("opening a channel", connection.create_channel()).await?;
        let queue = Self {
            connection,
            publisher: OnceCell::new(),
            amqp_nodes: config.nodes.clone(),
            connect_timeout: config.connect_timeout,
            control,
            topology: Topology::new(config),
            batch,
        };
        queue.ensure_exists().await?;
        queue.lock().await?;
        Ok(queue)
    }

    /// A passive declare, on a throwaway channel (a missing queue closes it).
    async fn ensure_exists(&self) -> Result<(), DlqError> {
        let channel = bounded("opening a channel", self.connection.create_channel()).await?;
        let name = self.name();
        let declared = channel.queue_declare(
            ShortString::from(name.as_str()),
            passive(),
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

    /// Ready messages and consumers of the dead queue, in one answer.
    pub async fn stat(&self) -> Result<QueueStat, DlqError> {
        let name = self.name();
        let declared = self.control.queue_declare(
            ShortString::from(name.as_str()),
            passive(),
            FieldTable::default(),
        );
        let queue = bounded("counting the dead queue", declared).await?;
        Ok(QueueStat {
            ready: queue.message_count(),
            consumers: queue.consumer_count(),
        })
    }

    /// Ready messages in the dead queue.
    pub async fn count(&self) -> Result<u32, DlqError> {
        Ok(self.stat().await?.ready)
    }

    /// The ready messages once no consumer holds any: every message in the
    /// dead queue. Fails if a consumer stays for [`RETURN_LIMIT`].
    async fn whole_count(&self) -> Result<u32, DlqError> {
        let deadline = Instant::now() + RETURN_LIMIT;
        loop {
            let stat = self.stat().await?;
            if stat.consumers == 0 {
                return Ok(stat.ready);
            }
            if Instant::now() >= deadline {
                return Err(DlqError::Consumers {
                    consumers: stat.consumers,
                    waited: RETURN_LIMIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The confirm channels of a replay's copies, on the publishing
    /// connection (see [`DeadQueue::publisher`]): one group at a time.
    pub async fn copy_channels(&self) -> Result<&ConfirmChannels, DlqError> {
        let channels = self
            .publisher
            .get_or_try_init(|| async {
                let name = format!("sluice-dlq-{}-publish", std::process::id());
                let connection =
                    amqp::connect(&self.amqp_nodes, &name, self.connect_timeout).await?;
                Ok::<_, DlqError>(ConfirmChannels::new(connection, 1))
            })
            .await?;
        Ok(channels)
    }

    /// Starts a pass over every message in the queue now (the snapshot).
    pub async fn scan(&self) -> Result<Scan, DlqError> {
        let snapshot = self.whole_count().await?;
        let batches = snapshot.div_ceil(u32::from(self.batch));
        let mut channels = Vec::new();
        for _ in 0..batches {
            channels.push(bounded("opening a channel", self.connection.create_channel()).await?);
        }
        Scan::new(self.name(), snapshot, self.batch, channels).await
    }

    /// Closes the connections, which also releases the lock.
    pub async fn close(self) {
        if let Some(publisher) = self.publisher.get().map(ConfirmChannels::connection)
            && publisher.status().connected()
        {
            let _ = timeout(
                BROKER_LIMIT,
                publisher.close(200, ShortString::from("dlq done")),
            )
            .await;
        }
        if self.connection.status().connected() {
            let _ = timeout(
                BROKER_LIMIT,
                self.connection.close(200, ShortString::from("dlq done")),
            )
            .await;
        }
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
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
