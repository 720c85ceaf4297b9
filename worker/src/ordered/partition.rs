//! One partition queue of an ordered route, consumed on a channel of its own.
//!
//! The queue has a single active consumer: while another worker holds the
//! partition, this one's consumer waits and receives nothing. Messages come
//! in queue order; a message whose key already has one in hand waits behind
//! it ([`Keys`]), so a key's events are delivered one after the other and
//! other keys' meanwhile. At most the route's `partition_prefetch` messages
//! are held at once: a stuck key whose later events fill that many stalls
//! the partition (the other keys of the partition wait too) until its head
//! event is delivered or dead.
//!
//! When the oldest message held reaches `worker.ordered_hold_limit`, the
//! partition is handed back: no new attempt starts, those under way finish,
//! and the channel closes, which returns every message held to the head of
//! the queue in order; the consumer then takes them again (its in-place
//! attempt counts kept in the [`Memo`]). RabbitMQ's `consumer_timeout`
//! (30 minutes by default) would otherwise close the channel under a
//! message that only waited behind its key.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::{Channel, Consumer};
use sluice_shared::ordering::OrderKey;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::OrderedSettings;
use super::attempts::{self, Memo};
use crate::broker::{Session, unique_name};
use crate::dispatch::Dispatcher;
use crate::message::QueuedMessage;

/// A wait between attempts to take the partition again after its channel failed.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// One partition of one ordered route, and what consuming it needs.
pub struct Partition {
    pub session: Arc<Session>,
    pub dispatcher: Arc<Dispatcher>,
    pub settings: Arc<OrderedSettings>,
    pub route: String,
    pub queue: String,
}

/// Why a channel's consuming ended.
#[derive(Debug)]
enum End {
    Stopped,
    /// A message was held for the hold limit: take the partition again.
    HandBack,
    Lost(String),
}

impl Partition {
    /// Consumes the partition until `stop`, or until the connection is gone
    /// (the supervisor then starts the partitions again on a new session).
    pub async fn run(self, stop: CancellationToken) {
        let memo = Memo::default();
        while !stop.is_cancelled() {
            let channel = match self.session.open_channel().await {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::debug!(queue = %self.queue, error = %error, "no channel for the partition");
                    return;
                }
            };
            let (end, consumer) = self.serve(&channel, &memo, &stop).await;
            if !matches!(end, End::Lost(_)) {
                // Acks sent just before a close can be dropped by a quorum
                // queue (docs/architecture.md, "How a dlq pass reads the dead
                // queue", fact 3): a short pause lets them land.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // Closed with the consumer still alive: dropping lapin's consumer
            // first would cancel it, and a cancelled quorum-queue consumer
            // keeps the messages it holds while the queue makes the next
            // waiting consumer (another worker) active, which would then take
            // the key's later events first. A closed channel gives everything
            // back to the head of the queue, in order, in the same step as it
            // removes the consumer.
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                channel.close(200, "partition handed back".into()),
            )
            .await;
            drop(consumer);
            match end {
                End::Stopped => return,
                End::HandBack => {
                    self.dispatcher
                        .metrics()
                        .record_ordered_handback(&self.route);
                    tracing::warn!(
                        queue = %self.queue,
                        hold_limit = %humantime::format_duration(self.settings.hold_limit),
                        "a message of this partition was held for the hold limit (a stuck key); \
                         handing the partition back and taking it again"
                    );
                }
                End::Lost(reason) => {
                    tracing::warn!(queue = %self.queue, reason = %reason, "partition channel lost; taking it again");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REOPEN_PAUSE) => {}
                    }
                }
            }
        }
    }

    fn prefetch(&self) -> u16 {
        let route = self.dispatcher.routes().named(&self.route);
        let ordered = route.and_then(|route| route.ordered.as_ref());
        ordered.map_or(1, |ordered| ordered.prefetch)
    }

    /// Consumes on `channel` until stopped, handed back or lost; returns
    /// once no attempt is under way, with the consumer, to be dropped only
    /// once the channel is closed.
    async fn serve(
        &self,
        channel: &Channel,
        memo: &Memo,
        stop: &CancellationToken,
    ) -> (End, Option<Consumer>) {
        let tag = unique_name();
        let prefetch = self.prefetch();
        let consumed = self
            .session
            .start_consuming(channel, &self.queue, prefetch, &tag);
        let mut consumer = match consumed.await {
            Ok(consumer) => consumer,
            Err(error) => return (End::Lost(error.to_string()), None),
        };
        let hold_end = stop.child_token();
        let hold_limit = self.settings.hold_limit;
        let mut tick = tokio::time::interval((hold_limit / 10).min(Duration::from_secs(1)));
        let mut keys: Keys<Delivery> = Keys::default();
        // Delivery tag → when it came, of every message held: the first is the oldest.
        let mut held: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut running: JoinSet<(OrderKey, u64)> = JoinSet::new();
        let mut end: Option<End> = None;
        let metrics = self.dispatcher.metrics().clone();
        loop {
            if end.is_some() && running.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(joined) = running.join_next() => {
                    let Ok((key, delivered)) = joined else { continue };
                    held.remove(&delivered);
                    if end.is_none()
                        && let Some(next) = keys.finished(&key)
                    {
                        metrics.add_ordered_waiting(&self.route, -1);
                        self.spawn(&mut running, key, next, memo, &hold_end);
                    }
                }
                () = stop.cancelled(), if end.is_none() => {
                    end = Some(End::Stopped);
                    hold_end.cancel();
                }
                next = consumer.next(), if end.is_none() => match next {
                    Some(Ok(delivery)) => {
                        held.insert(delivery.delivery_tag, Instant::now());
                        let key = super::key_of(&queued(&delivery));
                        match keys.admit(key.clone(), delivery) {
                            Some(delivery) => self.spawn(&mut running, key, delivery, memo, &hold_end),
                            None => metrics.add_ordered_waiting(&self.route, 1),
                        }
                    }
                    Some(Err(error)) => {
                        end = Some(End::Lost(error.to_string()));
                        hold_end.cancel();
                    }
                    None => {
                        end = Some(End::Lost("the broker cancelled the consumer".into()));
                        hold_end.cancel();
                    }
                },
                _ = tick.tick(), if end.is_none() => {
                    if held.first_key_value().is_some_and(|(_, at)| at.elapsed() >= hold_limit) {
                        end = Some(End::HandBack);
                        hold_end.cancel();
                    }
                }
            }
        }
        let left = i64::try_from(keys.waiting()).unwrap_or(i64::MAX);
        metrics.add_ordered_waiting(&self.route, -left);
        (end.unwrap_or(End::Stopped), Some(consumer))
    }

    fn spawn(
        &self,
        running: &mut JoinSet<(OrderKey, u64)>,
        key: OrderKey,
        delivery: Delivery,
        memo: &Memo,
        hold_end: &CancellationToken,
    ) {
        let tag = delivery.delivery_tag;
        let attempt = attempts::InPlace {
            session: Arc::clone(&self.session),
            dispatcher: Arc::clone(&self.dispatcher),
            route: self.route.clone(),
            memo: memo.clone(),
            hold_end: hold_end.clone(),
        };
        running.spawn(async move {
            attempt.deliver(delivery).await;
            (key, tag)
        });
    }
}

/// The message of a delivery, for reading its headers.
fn queued(delivery: &Delivery) -> QueuedMessage {
    QueuedMessage {
        routing_key: delivery.routing_key.clone(),
        properties: delivery.properties.clone(),
        body: Vec::new(),
    }
}

/// Which keys have a message in hand, and what waits behind each, in order.
#[derive(Debug)]
struct Keys<T> {
    /// A key present has a message in hand; its list waits behind it.
    waiting: HashMap<OrderKey, VecDeque<T>>,
}

impl<T> Default for Keys<T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
        }
    }
}

impl<T> Keys<T> {
    /// `item` of `key`, just received: given back to start now when its key
    /// has nothing in hand, else kept to wait its turn.
    fn admit(&mut self, key: OrderKey, item: T) -> Option<T> {
        match self.waiting.get_mut(&key) {
            Some(behind) => {
                behind.push_back(item);
                None
            }
            None => {
                self.waiting.insert(key, VecDeque::new());
                Some(item)
            }
        }
    }

    /// `key`'s message in hand is settled (or given up): its next, if any.
    fn finished(&mut self, key: &OrderKey) -> Option<T> {
        let behind = self.waiting.get_mut(key)?;
        let next = behind.pop_front();
        if next.is_none() {
            self.waiting.remove(key);
        }
        next
    }

    /// Messages waiting behind their key.
    fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> OrderKey {
        OrderKey::from_header(name)
    }

    #[test]
    fn a_key_with_a_message_in_hand_queues_the_next_and_others_pass() {
        let mut keys = Keys::default();
        assert_eq!(keys.admit(key("a"), 1), Some(1));
        assert_eq!(keys.admit(key("a"), 2), None);
        assert_eq!(keys.admit(key("b"), 3), Some(3), "another key flows");
        assert_eq!(keys.admit(key("a"), 4), None);
        assert_eq!(keys.waiting(), 2);
        assert_eq!(keys.finished(&key("a")), Some(2), "in the order received");
        assert_eq!(keys.finished(&key("a")), Some(4));
        assert_eq!(keys.finished(&key("a")), None);
        assert_eq!(
            keys.admit(key("a"), 5),
            Some(5),
            "a free key starts at once"
        );
        assert_eq!(keys.finished(&key("b")), None);
        assert_eq!(keys.waiting(), 0);
    }
}
