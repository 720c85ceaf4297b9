//! Queue depths from the broker, into `sluice_worker_queue_depth{queue}`.
//!
//! Every `worker.queue_depth_interval` the poller asks RabbitMQ how many
//! messages are ready in the work queue, each route's queue (the route's
//! backlog), each retry tier and the dead queue, with a passive
//! `queue.declare` (it creates nothing and changes nothing). The `queue`
//! label is the queue's name without the prefix: `work`, `route.<name>`,
//! `retry.<delay>` (e.g. `retry.5s`), `dead`; bounded by the config.
//!
//! It uses a connection of its own, so a slow or failed poll never touches
//! the consumer's channels, and a passive declare of a missing queue (which
//! makes RabbitMQ close the channel) only costs a reconnect of the poller.
//! While RabbitMQ is unreachable the gauges keep their last value and
//! `sluice_worker_queue_depth_poll_failures_total` counts the failed polls;
//! `sluice_worker_broker_connected` says why. Every worker polls: take
//! `max by (queue)` across workers.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};
use sluice_shared::amqp;
use sluice_shared::topology::{Topology, delay_label};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerSettings;

/// Polls the depths of one topology's queues.
pub struct QueueDepthPoller {
    nodes: amqp::AmqpNodes,
    connection_name: String,
    limit: Duration,
    heartbeat: Duration,
    period: Duration,
    /// `(label, queue name)` of every queue polled.
    queues: Vec<(String, String)>,
    depth: IntGaugeVec,
    failures: IntCounter,
}

/// The poller's link to RabbitMQ, opened on demand.
struct Link {
    connection: Connection,
    channel: Channel,
}

impl QueueDepthPoller {
    /// Registers the metrics; no series exists until the first poll, so a
    /// restarted worker never reports a made-up zero.
    pub fn new(
        settings: &BrokerSettings,
        period: Duration,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let depth = IntGaugeVec::new(
            Opts::new(
                "sluice_worker_queue_depth",
                "Messages ready in a Sluice queue (work, route.<name>, retry.<delay>, dead), as RabbitMQ last reported.",
            ),
            &["queue"],
        )?;
        let failures = IntCounter::new(
            "sluice_worker_queue_depth_poll_failures_total",
            "Queue depth polls that failed (RabbitMQ unreachable or a queue missing).",
        )?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            nodes: settings.nodes.clone(),
            connection_name: format!("{}-depth", settings.connection_name),
            limit: settings.connect_timeout,
            heartbeat: settings.heartbeat,
            period,
            queues: labelled_queues(&settings.topology),
            depth,
            failures,
        })
    }

    /// Polls every period until `stop`, then closes its connection.
    pub async fn run(self, stop: CancellationToken) {
        let mut link = None;
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = ticks.tick() => self.poll(&mut link).await,
            }
        }
        if let Some(link) = link {
            let _ = timeout(
                self.limit,
                link.connection.close(200, "worker stopping".into()),
            )
            .await;
        }
    }

    /// One round over every queue; a failure drops the link for the next round.
    async fn poll(&self, link: &mut Option<Link>) {
        if link
            .as_ref()
            .is_none_or(|l| !l.channel.status().connected())
        {
            *link = self.open().await;
        }
        let Some(open) = link.as_ref() else {
            self.failures.inc();
            return;
        };
        for (label, queue) in &self.queues {
            match self.ready_messages(&open.channel, queue).await {
                Some(count) => self.depth.with_label_values(&[label]).set(i64::from(count)),
                None => {
                    self.failures.inc();
                    tracing::debug!(queue, "could not read the queue depth; reconnecting");
                    if let Some(old) = link.take() {
                        let _ =
                            timeout(self.limit, old.connection.close(200, "poll failed".into()))
                                .await;
                    }
                    return;
                }
            }
        }
    }

    async fn open(&self) -> Option<Link> {
        let name = &self.connection_name;
        let connection =
            amqp::connect_with_heartbeat(&self.nodes, name, self.limit, self.heartbeat)
                .await
                .map_err(|e| tracing::debug!(error = %e, "queue depth poller cannot connect"))
                .ok()?;
        let channel = timeout(self.limit, connection.create_channel())
            .await
            .ok()?
            .ok()?;
        Some(Link {
            connection,
            channel,
        })
    }

    async fn ready_messages(&self, channel: &Channel, queue: &str) -> Option<u32> {
        // Passive: only asks; the queue's arguments are never compared.
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declare =
            channel.queue_declare(ShortString::from(queue), options, FieldTable::default());
        let queue = timeout(self.limit, declare).await.ok()?.ok()?;
        Some(queue.message_count())
    }
}

/// `work`, `route.<name>` for each route, `retry.<delay>` for each tier,
/// `dead`, each with its queue's name.
fn labelled_queues(topology: &Topology) -> Vec<(String, String)> {
    let mut queues = vec![("work".to_owned(), topology.work_queue())];
    queues.extend(
        topology
            .route_queues()
            .into_iter()
            .map(|(route, queue)| (format!("route.{route}"), queue)),
    );
    queues.extend(
        topology
            .retry_tiers()
            .into_iter()
            .map(|tier| (format!("retry.{}", delay_label(tier.delay)), tier.queue)),
    );
    queues.push(("dead".to_owned(), topology.dead_queue()));
    queues
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::{AmqpConfig, RetryDelays};

    #[test]
    fn labels_are_the_queue_names_without_the_prefix() {
        let topology = Topology::new(&AmqpConfig {
            prefix: "t1".into(),
            retry_delays: RetryDelays::new(vec![Duration::from_secs(1), Duration::from_secs(120)])
                .expect("growing"),
            ..AmqpConfig::default()
        })
        .with_route_queues(["crm"]);
        let labels: Vec<_> = labelled_queues(&topology)
            .into_iter()
            .map(|(label, queue)| format!("{label}={queue}"))
            .collect();
        assert_eq!(
            labels,
            [
                "work=t1.work",
                "route.crm=t1.route.crm",
                "retry.1s=t1.retry.1s",
                "retry.2m=t1.retry.2m",
                "dead=t1.dead"
            ]
        );
    }
}
