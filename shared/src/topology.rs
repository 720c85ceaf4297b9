//! The RabbitMQ topology, declared idempotently by both binaries at start.
//!
//! ```text
//! {p}.events (topic) --<source>.<type>--> {p}.work (quorum, x-delivery-limit)
//!                                             |  worker's router: one copy per matching route
//!                                             v
//!                                  {p}.route.<name> (quorum, x-delivery-limit, one per route)
//!                                             |  worker: retry            \ delivery limit hit
//!                                             v                            v
//!                     {p}.retry.<delay> (quorum, TTL) --expired--> {p}.work
//! worker / gateway: dead --> {p}.dead (topic) --#--> {p}.dead (quorum)
//! gateway: an ordered route's copy --> {p}.route.<name>.<i> (quorum, single active consumer)
//!
//! {p}.events, {p}.dead --unroutable (alternate exchange)--> {p}.unroutable (fanout)
//!                                                  --> {p}.unroutable (quorum)
//! ```
//!
//! The alternate exchange keeps a message that nothing would receive (a
//! binding or queue deleted by hand) instead of returning it: the gateway
//! drains `{p}.unroutable` back into place once it has re-declared the
//! topology (see the gateway's `reroute` module).
//!
//! The route queues are the worker's alone: only a topology built
//! [`Topology::with_routes`] declares them (the gateway's does not), so a
//! route's backlog waits in RabbitMQ, apart from every other route's.
//!
//! Quorum queues because they replicate every event across a cluster and
//! support at-least-once dead-lettering. One retry queue per delay because a
//! message TTL only expires at the head of a queue: mixing delays in one queue
//! would hold short delays behind long ones. An ordered route's partition
//! queues have a single active consumer, so one worker at a time takes a
//! partition and sees its messages in queue order; they have no delivery
//! limit and no dead-letter exchange: the worker retries in place and
//! dead-letters by publishing, and a message that only waited behind its key
//! (each hand-back counts as a delivery) must never die of it.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::{AmqpConfig, RetryDelays, RouteConfig};

/// Names and arguments of every exchange and queue Sluice uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    retry_delays: RetryDelays,
    delivery_limit: u32,
    /// `x-quorum-initial-group-size`, if declared (see [`AmqpConfig::quorum_group_size`]).
    group_size: Option<u32>,
    /// The ordered routes: name and partition count.
    ordered: Vec<(String, u16)>,
    /// The routes whose queues are declared (the worker's config); none
    /// for the gateway.
    routes: Vec<String>,
}

/// One retry tier: the queue that holds an event for `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTier {
    pub delay: Duration,
    pub queue: String,
}

/// Why the topology could not be declared; says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "{kind} `{name}` already exists with other arguments ({source}); queue and exchange \
         arguments cannot change once declared: drain and delete it, or choose another amqp.prefix"
    )]
    Mismatch {
        kind: &'static str,
        name: String,
        source: lapin::Error,
    },
    #[error("declaring {kind} `{name}` failed: {source}")]
    Broker {
        kind: &'static str,
        name: String,
        source: lapin::Error,
    },
}

impl Topology {
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            prefix: config.prefix.clone(),
            retry_delays: config.retry_delays.clone(),
            delivery_limit: config.delivery_limit,
            group_size: config.quorum_group_size(),
            ordered: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The topology with the partition queues of the ordered routes among
    /// `routes`: what the gateway and the worker declare.
    pub fn with_routes(mut self, routes: &[RouteConfig]) -> Self {
        self.ordered = routes
            .iter()
            .filter_map(|route| Some((route.name.clone(), route.ordered.as_ref()?.partitions)))
            .collect();
        self
    }

    /// Partition `index` of ordered route `route`.
    pub fn partition_queue(&self, route: &str, index: u16) -> String {
        format!("{}.route.{route}.{index}", self.prefix)
    }

    /// Every partition queue of ordered route `route` (none for a route
    /// this topology does not know as ordered).
    pub fn partition_queues(&self, route: &str) -> Vec<String> {
        let partitions = self
            .ordered
            .iter()
            .find(|(name, _)| name == route)
            .map_or(0, |(_, partitions)| *partitions);
        (0..partitions)
            .map(|index| self.partition_queue(route, index))
            .collect()
    }

    /// What the worker declares for its `routes`: the ordered routes'
    /// partitions, and a queue for each other route.
    pub fn with_worker_routes(self, routes: &[RouteConfig]) -> Self {
        let unordered = routes.iter().filter(|route| route.ordered.is_none());
        self.with_routes(routes)
            .with_route_queues(unordered.map(|route| route.name.as_str()))
    }

    /// The same topology with a queue for each of `routes` (names of the
    /// routes the worker's router feeds: not the ordered ones, which the
    /// gateway feeds through their partitions).
    pub fn with_route_queues<'a>(mut self, routes: impl IntoIterator<Item = &'a str>) -> Self {
        self.routes = routes.into_iter().map(str::to_owned).collect();
        self
    }

    /// The queue a route's events wait in for their delivery attempt.
    pub fn route_queue(&self, route: &str) -> String {
        format!("{}.route.{route}", self.prefix)
    }

    /// Every route queue this topology declares, with its route's name.
    pub fn route_queues(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .map(|route| (route.clone(), self.route_queue(route)))
            .collect()
    }

    /// The exchange the gateway publishes events to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The queue the worker consumes.
    pub fn work_queue(&self) -> String {
        format!("{}.work", self.prefix)
    }

    /// The exchange dead events are published to (same name as its queue).
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The queue dead events wait in for an SRE.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The alternate exchange of the events and dead exchanges, and the
    /// queue behind it (same name): where a message nothing would receive
    /// waits to be put back.
    pub fn unroutable(&self) -> String {
        format!("{}.unroutable", self.prefix)
    }

    /// The retry tiers, shortest first as configured.
    pub fn retry_tiers(&self) -> Vec<RetryTier> {
        self.retry_delays
            .iter()
            .map(|&delay| RetryTier {
                delay,
                queue: format!("{}.retry.{}", self.prefix, delay_label(delay)),
            })
            .collect()
    }

    /// Every queue, for tools that count or purge them.
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues = vec![self.work_queue(), self.dead_queue(), self.unroutable()];
        queues.extend(self.retry_tiers().into_iter().map(|t| t.queue));
        for (route, _) in &self.ordered {
            queues.extend(self.partition_queues(route));
        }
        queues.extend(self.route_queues().into_iter().map(|(_, queue)| queue));
        queues
    }

    /// Deletes every queue, messages included, and both exchanges: for the
    /// tests and benchmarks that made a topology of their own.
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in self.all_queues() {
            let options = QueueDeleteOptions::default();
            channel.queue_delete(queue.as_str().into(), options).await?;
        }
        for exchange in [
            self.events_exchange(),
            self.dead_exchange(),
            self.unroutable(),
        ] {
            let options = ExchangeDeleteOptions::default();
            channel
                .exchange_delete(exchange.as_str().into(), options)
                .await?;
        }
        Ok(())
    }

    /// Declares everything on a channel of its own; a no-op when it already
    /// exists as declared. An events or dead exchange declared by an earlier
    /// version, without the alternate exchange, is kept as it is, with a
    /// warning that says how to add one.
    pub async fn declare(&self, connection: &Connection) -> Result<(), TopologyError> {
        let channel = open_channel(connection).await?;
        let unroutable = self.unroutable();
        declare_exchange(
            &channel,
            &unroutable,
            ExchangeKind::Fanout,
            FieldTable::default(),
        )
        .await?;
        // reject-publish: a full queue nacks (the gateway answers 503)
        // rather than dropping its oldest message.
        let mut args = quorum_base(self.group_size);
        args.insert("x-overflow".into(), long_string("reject-publish"));
        declare_queue(&channel, &unroutable, args).await?;
        self.bind(&channel, &unroutable, &unroutable).await?;
        let mut exchanges = FieldTable::default();
        exchanges.insert("alternate-exchange".into(), long_string(&unroutable));
        let mut channel = channel;
        for name in [self.events_exchange(), self.dead_exchange()] {
            let declared =
                declare_exchange(&channel, &name, ExchangeKind::Topic, exchanges.clone()).await;
            if let Err(TopologyError::Mismatch { .. }) = declared {
                tracing::warn!(
                    exchange = %name,
                    "this exchange predates Sluice's alternate exchange, so a message nothing \
                     would receive is refused (503) instead of kept in {unroutable}; to keep \
                     such messages, run `rabbitmqctl set_policy --apply-to exchanges \
                     {name}-alternate '^{name}$' '{{\"alternate-exchange\":\"{unroutable}\"}}'`"
                );
                // The refused declare closed the channel.
                channel = open_channel(connection).await?;
                continue;
            }
            declared?;
        }
        let channel = self.declare_queues(connection, channel).await?;
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    /// The queues and their bindings (the exchanges exist). Returns the
    /// channel to go on with: a refused declare closes the one it was on.
    async fn declare_queues(
        &self,
        connection: &Connection,
        channel: Channel,
    ) -> Result<Channel, TopologyError> {
        let work = self.work_queue();
        declare_queue(&channel, &work, self.consumed_queue_args()).await?;
        self.bind(&channel, &work, &self.events_exchange()).await?;
        // No binding: the worker's router puts copies in through the default exchange.
        for (_, queue) in self.route_queues() {
            declare_queue(&channel, &queue, self.consumed_queue_args()).await?;
        }

        for tier in self.retry_tiers() {
            let mut args = quorum_args(self.group_size);
            let ttl = u32::try_from(tier.delay.as_millis()).unwrap_or(u32::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
            // Expired messages go back to the work queue through the default exchange.
            args.insert("x-dead-letter-exchange".into(), long_string(""));
            args.insert("x-dead-letter-routing-key".into(), long_string(&work));
            declare_queue(&channel, &tier.queue, args).await?;
        }

        let dead = self.dead_queue();
        // reject-publish: under a length limit (a policy's, say) a full dead
        // queue refuses new dead events (the worker requeues with backoff,
        // the work queue keeps what it dead-letters at-least-once) instead of
        // dropping its oldest ones, as the default `drop-head` would.
        let mut args = quorum_base(self.group_size);
        args.insert("x-overflow".into(), long_string("reject-publish"));
        let mut channel = channel;
        if let Err(TopologyError::Mismatch { .. }) = declare_queue(&channel, &dead, args).await {
            tracing::warn!(
                queue = %dead,
                "this dead queue predates `x-overflow: reject-publish`, so a length limit on \
                 it (a policy's) would drop the oldest dead events; it is kept as it is. To \
                 keep them, add `\"overflow\": \"reject-publish\"` to any policy that limits \
                 it (operations guide, \"Capping the dead queue\"), or drain it with `dlq \
                 export`, delete it and restart"
            );
            channel = open_channel(connection).await?;
        }
        self.bind(&channel, &dead, &self.dead_exchange()).await?;

        for (route, _) in &self.ordered {
            for queue in self.partition_queues(route) {
                let mut args = quorum_base(self.group_size);
                // One worker at a time takes the partition, in queue order;
                // another takes over when its channel goes.
                args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
                // Reached through the default exchange, so no binding.
                declare_queue(&channel, &queue, args).await?;
            }
        }
        Ok(channel)
    }

    /// The arguments of a queue the worker consumes (the work queue and
    /// every route queue): a delivery limit, and dead-lettering to the dead
    /// exchange at-least-once.
    fn consumed_queue_args(&self) -> FieldTable {
        let mut args = quorum_args(self.group_size);
        // Without a limit (3.10 has no default) a message that kills workers loops forever.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongUInt(self.delivery_limit),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_exchange()),
        );
        args
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
    ) -> Result<(), TopologyError> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify("binding of queue", queue, e))
    }
}

/// A short, stable label for a delay: `250ms`, `5s`, `2m`, `1h`.
pub fn delay_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// A quorum queue: replicated, and able to dead-letter at-least-once.
/// `group_size` (`amqp.quorum_initial_group_size`, capped): on how many
/// nodes of a cluster its copies live; left out on one node, as before.
fn quorum_base(group_size: Option<u32>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    if let Some(size) = group_size {
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongUInt(size),
        );
    }
    args
}

/// A quorum queue that dead-letters at-least-once: the broker keeps a message
/// until the dead-letter target confirmed it (needs `reject-publish` overflow).
fn quorum_args(group_size: Option<u32>) -> FieldTable {
    let mut args = quorum_base(group_size);
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args
}

async fn open_channel(connection: &Connection) -> Result<Channel, TopologyError> {
    connection
        .create_channel()
        .await
        .map_err(|source| TopologyError::Broker {
            kind: "channel",
            name: "for the topology".into(),
            source,
        })
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
) -> Result<(), TopologyError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(name.into(), kind, durable, args)
        .await
        .map_err(|e| classify("exchange", name, e))
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
) -> Result<(), TopologyError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(ShortString::from(name), options, args)
        .await
        .map(|_| ())
        .map_err(|e| classify("queue", name, e))
}

fn classify(kind: &'static str, name: &str, source: lapin::Error) -> TopologyError {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let mismatch = matches!(
        source.kind(),
        lapin::ErrorKind::ProtocolError(e) if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    );
    let name = name.to_owned();
    if mismatch {
        TopologyError::Mismatch { kind, name, source }
    } else {
        TopologyError::Broker { kind, name, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_get_short_labels() {
        assert_eq!(delay_label(Duration::from_millis(250)), "250ms");
        assert_eq!(delay_label(Duration::from_secs(25)), "25s");
        assert_eq!(delay_label(Duration::from_secs(120)), "2m");
        assert_eq!(delay_label(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn names_follow_the_prefix() {
        let topology = Topology::new(&AmqpConfig {
            prefix: "t1".into(),
            retry_delays: RetryDelays::new(vec![Duration::from_secs(1), Duration::from_secs(300)])
                .expect("growing"),
            ..AmqpConfig::default()
        });
        assert_eq!(topology.work_queue(), "t1.work");
        assert_eq!(topology.events_exchange(), "t1.events");
        let tiers: Vec<_> = topology
            .retry_tiers()
            .into_iter()
            .map(|t| t.queue)
            .collect();
        assert_eq!(tiers, ["t1.retry.1s", "t1.retry.5m"]);
        assert!(topology.partition_queues("crm").is_empty());
    }

    #[test]
    fn an_ordered_route_has_one_queue_per_partition_and_they_are_listed() {
        let config = crate::config::Config::from_toml(
            "[amqp]\nprefix = \"t2\"\n[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\n\
             ordered_by = \"/k\"\npartitions = 3\n[[routes]]\nname = \"all\"\nmatch = [\"*\"]\nhandler = \"log\"",
        )
        .expect("loads");
        let topology = Topology::new(&config.amqp).with_routes(&config.routes);
        assert_eq!(
            topology.partition_queues("crm"),
            ["t2.route.crm.0", "t2.route.crm.1", "t2.route.crm.2"]
        );
        assert!(topology.partition_queues("all").is_empty());
        assert!(topology.all_queues().contains(&"t2.route.crm.2".to_owned()));
    }

    #[test]
    fn route_queues_are_the_worker_s_and_follow_the_prefix() {
        let config = AmqpConfig {
            prefix: "t1".into(),
            ..AmqpConfig::default()
        };
        let gateway = Topology::new(&config);
        assert!(
            gateway.route_queues().is_empty(),
            "the gateway declares none"
        );
        let worker = Topology::new(&config).with_route_queues(["crm", "audit"]);
        assert_eq!(worker.route_queue("crm"), "t1.route.crm");
        assert_eq!(
            worker.route_queues(),
            [
                ("crm".to_owned(), "t1.route.crm".to_owned()),
                ("audit".to_owned(), "t1.route.audit".to_owned())
            ]
        );
        let all = worker.all_queues();
        assert!(all.contains(&"t1.route.audit".to_owned()), "{all:?}");
        assert!(!gateway.all_queues().iter().any(|q| q.contains(".route.")));
    }
}
