//! One session with RabbitMQ: a connection to consume (and ack) on, one
//! channel per consumer (the router's and each route's), and a second
//! connection to publish copies on.
//!
//! Opening a session declares the topology (idempotent, so every reconnect
//! repairs a queue deleted by hand). Two connections because RabbitMQ blocks
//! a connection that publishes during a memory or disk alarm, acks and all:
//! with copies published on the consuming connection, an alarm raised by a
//! backlog would stop the very acks that drain it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, Consumer};
use sluice_shared::amqp::{self, ConnectError};
use sluice_shared::config::AmqpConfig;
use sluice_shared::topology::{Topology, TopologyError};
use tokio::time::timeout;

use sluice_shared::publish::ConfirmChannels;

use crate::settle::Settler;

/// Why a session could not be opened or started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot open a channel: {0}")]
    Channel(#[source] lapin::Error),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("RabbitMQ did not answer within {0:?} while {1}")]
    Timeout(Duration, &'static str),
    #[error("cannot consume queue `{queue}`: {source}")]
    Consume { queue: String, source: lapin::Error },
    #[error("the dead exchange name is too long for AMQP")]
    Name,
}

impl SessionError {
    /// A queue or exchange exists with other arguments: reconnecting cannot
    /// fix that, an operator must (the message says how).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Self::Topology(TopologyError::Mismatch { .. }))
    }
}

/// How to reach RabbitMQ and what to declare there.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub nodes: amqp::AmqpNodes,
    pub connect_timeout: Duration,
    /// `amqp.heartbeat`: a broker silent for two of them is given up on.
    pub heartbeat: Duration,
    pub topology: Topology,
    /// Shown in the management UI, e.g. `sluice-worker-4711-0` (the
    /// publishing connection adds `-publish`).
    pub connection_name: String,
    /// Copies published at once (`worker.concurrency`: one per task).
    pub copy_channels: usize,
}

impl BrokerSettings {
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            nodes: config.nodes.clone(),
            connect_timeout: config.connect_timeout,
            heartbeat: config.heartbeat,
            topology: Topology::new(config),
            connection_name: unique_name(),
            copy_channels: 32,
        }
    }

    /// The URL with its password hidden, for logs.
    pub fn redacted_url(&self) -> String {
        self.nodes.redacted()
    }

    /// Connects both connections and declares the topology.
    pub async fn open(&self) -> Result<Session, SessionError> {
        let limit = self.connect_timeout;
        let name = &self.connection_name;
        let connection =
            amqp::connect_with_heartbeat(&self.nodes, name, limit, self.heartbeat).await?;
        timeout(limit, self.topology.declare(&connection))
            .await
            .map_err(|_| SessionError::Timeout(limit, "declaring the topology"))??;
        let publish_name = format!("{name}-publish");
        let publishing =
            match amqp::connect_with_heartbeat(&self.nodes, &publish_name, limit, self.heartbeat)
                .await
            {
                Ok(publishing) => publishing,
                Err(e) => {
                    let _ =
                        timeout(limit, connection.close(200, "no publish connection".into())).await;
                    return Err(e.into());
                }
            };
        let copies = ConfirmChannels::new(publishing, self.copy_channels);
        let settler =
            Settler::new(copies, self.topology.clone()).map_err(|_| SessionError::Name)?;
        Ok(Session {
            connection,
            settler,
            limit,
        })
    }
}

/// A live consuming connection and the settler's publishing one.
pub struct Session {
    connection: Connection,
    settler: Settler,
    limit: Duration,
}

impl Session {
    pub fn settler(&self) -> &Settler {
        &self.settler
    }

    /// A channel of its own for one consumer: its prefetch, its cancel and
    /// its acks concern no other consumer.
    pub async fn open_channel(&self) -> Result<Channel, SessionError> {
        timeout(self.limit, self.connection.create_channel())
            .await
            .map_err(|_| SessionError::Timeout(self.limit, "opening a channel"))?
            .map_err(SessionError::Channel)
    }

    /// Starts consuming `queue` on `channel` with at most `prefetch` unacked messages.
    pub async fn start_consuming(
        &self,
        channel: &Channel,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<Consumer, SessionError> {
        let failed = |source| SessionError::Consume {
            queue: queue.to_owned(),
            source,
        };
        // Per consumer (global: false): quorum queues do not support a
        // channel-wide prefetch, and there is one consumer per channel anyway.
        let qos = channel.basic_qos(prefetch, BasicQosOptions { global: false });
        timeout(self.limit, qos)
            .await
            .map_err(|_| SessionError::Timeout(self.limit, "setting the prefetch"))?
            .map_err(failed)?;
        // Manual acks (no_ack: false): a message is acked only once it is
        // delivered or its next home confirmed it. Not exclusive: workers
        // are competing consumers of the work queue, and a partition queue
        // has a single active consumer by its own argument (another worker
        // waits to take over).
        let options = BasicConsumeOptions {
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
        };
        let consume = channel.basic_consume(
            ShortString::from(queue),
            ShortString::from(tag),
            options,
            FieldTable::default(),
        );
        timeout(self.limit, consume)
            .await
            .map_err(|_| SessionError::Timeout(self.limit, "starting the consumer"))?
            .map_err(failed)
    }

    /// Stops the broker pushing messages to consumer `tag` of `channel`;
    /// false if that failed (the channel is then likely gone).
    pub async fn cancel(&self, channel: &Channel, tag: &str) -> bool {
        let cancel = channel.basic_cancel(ShortString::from(tag), BasicCancelOptions::default());
        match timeout(self.limit, cancel).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "basic.cancel failed");
                false
            }
            Err(_) => {
                tracing::warn!("basic.cancel timed out");
                false
            }
        }
    }

    /// Takes one message of `queue`, if it has one (`basic.get`, acked by hand).
    pub async fn get_one(
        &self,
        channel: &Channel,
        queue: &str,
    ) -> Result<Option<Delivery>, SessionError> {
        let get = channel.basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false });
        let got = timeout(self.limit, get)
            .await
            .map_err(|_| SessionError::Timeout(self.limit, "taking a message (basic.get)"))?
            .map_err(|source| SessionError::Consume {
                queue: queue.to_owned(),
                source,
            })?;
        Ok(got.map(|message| message.delivery))
    }

    /// Closes the publishing connection, then the consuming connection and
    /// its channels; unacked messages go back to their queues. Errors are
    /// only logged: the process is leaving anyway.
    pub async fn close(&self) {
        let ok = || ShortString::from("worker stopping");
        self.settler.close().await;
        if self.connection.status().connected()
            && let Ok(Err(e)) = timeout(self.limit, self.connection.close(200, ok())).await
        {
            tracing::debug!(error = %e, "closing the RabbitMQ connection failed");
        }
    }
}

/// `sluice-worker-<pid>-<n>`: unique in the process (tests run several
/// workers in one), readable in the management UI.
pub fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("sluice-worker-{}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid_and_never_repeat() {
        let first = unique_name();
        let second = unique_name();
        assert!(first.starts_with(&format!("sluice-worker-{}-", std::process::id())));
        assert_ne!(first, second);
    }

    #[test]
    fn the_url_in_logs_has_no_password() {
        let settings = BrokerSettings::new(&AmqpConfig::default());
        assert_eq!(
            settings.redacted_url(),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
