//! Ordered routes: deliver the events of one key one after the other, in
//! the order their partition queue holds them (the order the gateway
//! accepted them in), while other keys flow.
//!
//! The gateway publishes each event an ordered route takes to one of the
//! route's partition queues, `{prefix}.route.<name>.<i>`, picked by its key
//! ([`sluice_shared::ordering`]). Each worker consumes every partition of
//! every ordered route; the queues have a single active consumer, so one
//! worker at a time takes a partition, in queue order, and another takes
//! over when its channel goes (the messages it held return to the head of
//! the queue, in order).
//!
//! Within a partition ([`partition`]) messages of different keys are
//! delivered at once, those of one key strictly one after the other: a
//! message whose key has an earlier one still in hand waits, unacked. A
//! failing event is retried in place ([`attempts`]): held unacked, with the
//! waits of `amqp.retry_delays` between attempts, counted like any other
//! delivery; when its attempts run out it is dead-lettered and its key moves
//! on. What one stuck key can hold back is bounded by the route's
//! `partition_prefetch`; past `worker.ordered_hold_limit` of holding a
//! message, the partition is handed back and taken again, so RabbitMQ's
//! `consumer_timeout` never closes its channel.

mod attempts;
mod partition;

use std::sync::Arc;
use std::time::Duration;

use sluice_shared::message::MessageHeaders;
use sluice_shared::ordering::OrderKey;
use sluice_shared::topology::Topology;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::Session;
use crate::dispatch::Dispatcher;
use crate::message::QueuedMessage;
use crate::routes::Route;

/// What every partition consumer shares.
pub struct OrderedSettings {
    /// `worker.ordered_hold_limit`.
    pub hold_limit: Duration,
}

/// The partition consumers of one session.
pub struct OrderedConsumers {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl OrderedConsumers {
    /// Starts one consumer per partition of every ordered route, on
    /// `session`'s connection, until `stop` (or the connection goes).
    pub fn start(
        session: &Arc<Session>,
        dispatcher: &Arc<Dispatcher>,
        settings: &Arc<OrderedSettings>,
        stop: CancellationToken,
    ) -> Self {
        let mut tasks = JoinSet::new();
        let topology = session.settler().topology().clone();
        for route in dispatcher.routes().ordered() {
            dispatcher.metrics().register_ordered_route(&route.name);
            for queue in topology.partition_queues(&route.name) {
                let partition = partition::Partition {
                    session: Arc::clone(session),
                    dispatcher: Arc::clone(dispatcher),
                    settings: Arc::clone(settings),
                    route: route.name.clone(),
                    queue,
                };
                tasks.spawn(partition.run(stop.clone()));
            }
        }
        Self { tasks, stop }
    }

    /// Stops every partition consumer: attempts under way finish (each
    /// within its route's timeout), messages not settled go back to their
    /// queue in order when the channel closes. Waits at most `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("ordered partitions did not stop within the grace; abandoning them");
            self.tasks.shutdown().await;
        }
    }
}

/// The key a partition message is ordered by: its digest header, else
/// (a message published by hand) its event id.
pub(crate) fn key_of(message: &QueuedMessage) -> OrderKey {
    let headers = MessageHeaders::of(&message.properties);
    match headers.order_key {
        Some(digest) => OrderKey::from_header(&digest),
        None => {
            let id = message.properties.message_id().as_ref();
            OrderKey::from_header(id.map_or("", |id| id.as_str()))
        }
    }
}

/// The partition queue of `route` that `message`'s key picks.
pub(crate) fn partition_of(topology: &Topology, route: &Route, message: &QueuedMessage) -> String {
    let partitions = route.ordered.as_ref().map_or(1, |o| o.partitions);
    let key = key_of(message);
    topology.partition_queue(&route.name, key.partition(partitions))
}
