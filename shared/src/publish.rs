//! Publishing with confirms: the one path every publisher takes (the
//! gateway's events, the worker's retry and dead copies, `dlq replay`).
//!
//! A message counts as stored only on a plain `Ack` for a message that was
//! routed. Everything else is an error that says why: a nack, a returned
//! (unroutable) mandatory message, a broken channel, no answer in time, a
//! channel that is not in confirm mode.
//!
//! **Returns are paired by content, never by lapin.** lapin hands a
//! `basic.return` to whichever confirm its next ack frame completes first, and
//! an `ack multiple=true` completes several in hash-map order: on a channel
//! that carries several publishers' messages, a returned message can resolve
//! as a plain `Ack` while another publisher's routed message is reported
//! returned. So a [`ConfirmChannels`] lends each group of messages a channel
//! of its own and awaits every confirm of the group before it reads any: a
//! return always precedes the ack of its message, so by then every return of
//! the group sits on one of the group's confirms, and on no other group's.
//! Each returned message is matched to the group's messages by routing key
//! and message id; a return that matches none fails the whole group. A
//! channel goes back to the pool only when every confirm of its group came
//! back: one with a confirm still owed could hand a late return to the next
//! group.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::amqp::confirm_channel;

/// The most messages one channel carries of a group; a larger group is
/// split, each chunk on a channel of its own.
const CHUNK: usize = 256;

/// One message to publish, mandatory (an unroutable one comes back instead
/// of vanishing) and with a confirm.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Why a message is not known to be stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("opening a confirm channel failed: {0}")]
    Channel(#[source] lapin::Error),
    #[error("sending failed: {0}")]
    Send(#[source] lapin::Error),
    #[error("no answer from RabbitMQ within {0:?}")]
    Timeout(Duration),
    #[error("the confirm failed: {0}")]
    Confirm(#[source] lapin::Error),
    #[error(
        "RabbitMQ refused the message (nack): a queue at its length limit, or a quorum \
         queue whose leader just moved; nothing was stored, send it again"
    )]
    Nacked,
    #[error(
        "RabbitMQ could not route the message (exchange `{exchange}`, routing key \
         `{routing_key}`): is the topology declared and bound?"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("the channel is not in confirm mode")]
    NotConfirmed,
}

impl PublishError {
    /// Whether the channel or connection broke, so a reconnect is due
    /// (a nack or a return leaves both usable).
    pub fn is_broken_link(&self) -> bool {
        matches!(
            self,
            Self::Channel(_) | Self::Send(_) | Self::Confirm(_) | Self::Timeout(_)
        )
    }

    /// Whether RabbitMQ may have stored the message all the same: it was
    /// sent (or partly sent) and no answer came. Only a nack, a return or a
    /// channel that could not open say for sure that it was not stored.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Send(_) | Self::Confirm(_) | Self::Timeout(_) | Self::NotConfirmed
        )
    }
}

/// Confirm channels on one connection, each lent to one group at a time.
pub struct ConfirmChannels {
    connection: Connection,
    idle: Mutex<Vec<Channel>>,
    /// Bounds the channels lent at once (and so the messages awaiting a
    /// confirm, and the frames lapin may hold through a blocked connection).
    lendable: Semaphore,
}

impl ConfirmChannels {
    /// At most `max` groups in flight at once; channels open as needed.
    pub fn new(connection: Connection, max: usize) -> Self {
        Self {
            connection,
            idle: Mutex::new(Vec::new()),
            lendable: Semaphore::new(max.max(1)),
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Publishes `group` on a channel of its own (a group over [`CHUNK`]
    /// messages on several, a chunk each) and awaits every confirm, each
    /// wait bounded by `limit` when one is given (without one, a broken
    /// connection ends the wait). One outcome per message, in order.
    pub async fn publish(
        &self,
        group: Vec<Outgoing>,
        limit: Option<Duration>,
    ) -> Vec<Result<(), PublishError>> {
        if group.len() <= CHUNK {
            return self.publish_chunk(group, limit).await;
        }
        // A large group goes out as chunks on channels of their own, at once:
        // RabbitMQ handles each channel in a process of its own.
        let size = group.len();
        let (chunks, places): (Vec<_>, Vec<_>) = split_in_chunks(group).into_iter().unzip();
        let sends = chunks
            .into_iter()
            .map(|chunk| self.publish_chunk(chunk, limit));
        let mut outcomes = vec![Err(PublishError::NotConfirmed); size];
        for (chunk_outcomes, chunk_places) in join_all(sends).await.into_iter().zip(places) {
            for (outcome, place) in chunk_outcomes.into_iter().zip(chunk_places) {
                outcomes[place] = outcome;
            }
        }
        outcomes
    }

    async fn publish_chunk(
        &self,
        group: Vec<Outgoing>,
        limit: Option<Duration>,
    ) -> Vec<Result<(), PublishError>> {
        let Ok(_lent) = self.lendable.acquire().await else {
            return vec![Err(PublishError::NotConfirmed); group.len()];
        };
        let channel = match self.take_channel().await {
            Ok(channel) => channel,
            Err(e) => return vec![Err(PublishError::Channel(e)); group.len()],
        };
        let (outcomes, reusable) = publish_on(&channel, group, limit).await;
        if reusable {
            self.lock_idle().push(channel);
        } else if channel.status().connected() {
            // A confirm may still come, or the queue refused: the channel
            // must not serve another group.
            let _ = channel
                .close(200, "not every confirm was an ack".into())
                .await;
        }
        outcomes
    }

    /// Closes the idle channels (the connection is the caller's to close).
    pub async fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        for channel in idle {
            let _ = channel.close(200, "closing".into()).await;
        }
    }

    async fn take_channel(&self) -> Result<Channel, lapin::Error> {
        loop {
            let Some(channel) = self.lock_idle().pop() else {
                return confirm_channel(&self.connection).await;
            };
            if channel.status().connected() {
                return Ok(channel);
            }
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends the group, then awaits all its confirms; also says whether the
/// channel may serve another group (every confirm came back). Each message
/// is moved into its frames; only a hash of its routing key and message id
/// is kept, to know it again in a return.
/// A large group's chunks, each with the place of its messages in the
/// group: at most [`CHUNK`] messages each, except that every message to one
/// queue through the default exchange (an ordered route's partition, the
/// work queue) goes to the chunk of the first, in the group's order. Chunks
/// go out on channels of their own, and messages on two channels reach a
/// queue in either order: an ordered route's events of one key must reach
/// its partition in the order the request holds them.
fn split_in_chunks(group: Vec<Outgoing>) -> Vec<(Vec<Outgoing>, Vec<usize>)> {
    let mut chunks: Vec<(Vec<Outgoing>, Vec<usize>)> = Vec::new();
    let mut queue_chunk: std::collections::HashMap<ShortString, usize> = Default::default();
    for (place, message) in group.into_iter().enumerate() {
        let to_queue = message.exchange.as_str().is_empty();
        let chunk = match queue_chunk.get(&message.routing_key) {
            Some(&chunk) if to_queue => chunk,
            _ => {
                if chunks.last().is_none_or(|(chunk, _)| chunk.len() >= CHUNK) {
                    chunks.push((Vec::new(), Vec::new()));
                }
                chunks.len() - 1
            }
        };
        if to_queue {
            queue_chunk.insert(message.routing_key.clone(), chunk);
        }
        chunks[chunk].0.push(message);
        chunks[chunk].1.push(place);
    }
    chunks
}

async fn publish_on(
    channel: &Channel,
    group: Vec<Outgoing>,
    limit: Option<Duration>,
) -> (Vec<Result<(), PublishError>>, bool) {
    let size = group.len();
    let mut identities = Vec::with_capacity(size);
    let mut confirms = Vec::with_capacity(size);
    for message in group {
        identities.push(identity(
            &message.routing_key,
            message.properties.message_id().as_ref(),
        ));
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let send = channel.basic_publish(
            message.exchange,
            message.routing_key,
            options,
            &message.body,
            message.properties,
        );
        match bounded(limit, send).await {
            Ok(confirm) => confirms.push(confirm),
            Err(e) => {
                let failed = Err(e.sent());
                return (vec![failed; size], false);
            }
        }
    }
    let answers = join_all(confirms.into_iter().map(|c| wait(c, limit))).await;
    let reusable = serves_again(&answers);
    (judge(&identities, answers), reusable)
}

/// Whether a channel may serve another group: only when every confirm of
/// its group was an ack. One that timed out may still hand a late return
/// to the next group. One that got a nack may be nacking everything: in
/// RabbitMQ 3.10 a channel sets up its client of a quorum queue at its
/// first publish there, from the queue's record, leader first; a channel
/// whose first publish came after the leader's node died but before the
/// record named the new leader asks the dead node, is refused, and asks
/// it again at every later publish, for as long as the channel lives (it
/// never learns the new leader). A fresh channel reads the record again.
/// (docs/reliability.md, "Clusters".)
fn serves_again(answers: &[Result<Confirmation, Wait>]) -> bool {
    answers
        .iter()
        .all(|a| matches!(a, Ok(Confirmation::Ack(_))))
}

/// What identifies a message of a group in a return: its routing key and
/// message id, hashed (a collision can only fail a stored message, which the
/// caller then treats as not stored: a retry, never a loss).
fn identity(routing_key: &ShortString, message_id: Option<&ShortString>) -> u64 {
    let mut hasher = DefaultHasher::new();
    routing_key.as_str().hash(&mut hasher);
    message_id.map(ShortString::as_str).hash(&mut hasher);
    hasher.finish()
}

/// What waiting for one confirm gave.
enum Wait {
    Timeout(Duration),
    Failed(lapin::Error),
}

impl Wait {
    fn sent(self) -> PublishError {
        match self {
            Self::Timeout(limit) => PublishError::Timeout(limit),
            Self::Failed(e) => PublishError::Send(e),
        }
    }
}

async fn bounded<T>(
    limit: Option<Duration>,
    work: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, Wait> {
    match limit {
        None => work.await.map_err(Wait::Failed),
        Some(limit) => match timeout(limit, work).await {
            Ok(result) => result.map_err(Wait::Failed),
            Err(_) => Err(Wait::Timeout(limit)),
        },
    }
}

async fn wait(confirm: PublisherConfirm, limit: Option<Duration>) -> Result<Confirmation, Wait> {
    bounded(limit, confirm).await
}

/// Each message's outcome, with returns matched by content.
fn judge(group: &[u64], answers: Vec<Result<Confirmation, Wait>>) -> Vec<Result<(), PublishError>> {
    let mut returned = Vec::new();
    let mut outcomes: Vec<Result<(), PublishError>> = answers
        .into_iter()
        .map(|answer| match answer {
            Ok(Confirmation::Ack(message)) => {
                returned.extend(message);
                Ok(())
            }
            Ok(Confirmation::Nack(message)) => {
                returned.extend(message);
                Err(PublishError::Nacked)
            }
            Ok(Confirmation::NotRequested) => Err(PublishError::NotConfirmed),
            Err(Wait::Timeout(limit)) => Err(PublishError::Timeout(limit)),
            Err(Wait::Failed(e)) => Err(PublishError::Confirm(e)),
        })
        .collect();
    for (index, back) in returned_indexes(group, &returned) {
        if outcomes[index].is_ok() {
            outcomes[index] = Err(PublishError::Unroutable {
                exchange: back.delivery.exchange.to_string(),
                routing_key: back.delivery.routing_key.to_string(),
            });
        }
    }
    outcomes
}

/// The group's messages that came back, each with its return: a return
/// marks every message of the same routing key and message id; one that
/// matches none marks all.
fn returned_indexes<'r>(
    group: &[u64],
    returned: &'r [BasicReturnMessage],
) -> Vec<(usize, &'r BasicReturnMessage)> {
    let mut indexes = Vec::new();
    for back in returned {
        let delivery = &back.delivery;
        let wanted = identity(
            &delivery.routing_key,
            delivery.properties.message_id().as_ref(),
        );
        let matches: Vec<usize> = (0..group.len()).filter(|&i| group[i] == wanted).collect();
        match matches.is_empty() {
            true => return (0..group.len()).map(|index| (index, back)).collect(),
            false => indexes.extend(matches.into_iter().map(|index| (index, back))),
        }
    }
    indexes
}

/// The first failure of a group, if any: for callers that answer for the
/// group as a whole.
pub fn first_failure(outcomes: Vec<Result<(), PublishError>>) -> Result<(), PublishError> {
    outcomes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(key: &str, id: &str) -> u64 {
        identity(&key.into(), Some(&id.into()))
    }

    fn message(exchange: &str, key: &str, id: usize) -> Outgoing {
        Outgoing {
            exchange: exchange.into(),
            routing_key: key.into(),
            body: Vec::new(),
            properties: BasicProperties::default().with_message_id(id.to_string().into()),
        }
    }

    #[test]
    fn a_large_group_keeps_each_queues_messages_in_one_chunk_in_order() {
        // 600 events to the exchange, each followed by its copy to one of
        // three partition queues.
        let mut group = Vec::new();
        for n in 0..600 {
            group.push(message("p.events", "src.type", 2 * n));
            group.push(message("", &format!("p.route.crm.{}", n % 3), 2 * n + 1));
        }
        let chunks = split_in_chunks(group);
        let mut seen = vec![false; 1200];
        for (chunk, places) in &chunks {
            assert_eq!(chunk.len(), places.len());
            for (message, &place) in chunk.iter().zip(places) {
                let id = message
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string());
                assert_eq!(
                    id,
                    Some(place.to_string()),
                    "each place is the message's own"
                );
                seen[place] = true;
            }
            assert!(
                places.windows(2).all(|w| w[0] < w[1]),
                "in the group's order"
            );
        }
        assert!(seen.iter().all(|&s| s), "every message is in a chunk");
        for queue in 0..3 {
            let key = format!("p.route.crm.{queue}");
            let holding: Vec<usize> = (0..chunks.len())
                .filter(|&c| chunks[c].0.iter().any(|m| m.routing_key.as_str() == key))
                .collect();
            assert_eq!(holding.len(), 1, "queue {key} is in one chunk: {holding:?}");
        }
        let to_exchange: Vec<usize> = chunks
            .iter()
            .map(|(chunk, _)| {
                chunk
                    .iter()
                    .filter(|m| !m.exchange.as_str().is_empty())
                    .count()
            })
            .collect();
        assert!(to_exchange.iter().all(|&n| n <= CHUNK), "{to_exchange:?}");
    }

    fn back(key: &str, id: Option<&str>) -> BasicReturnMessage {
        let mut message = BasicReturnMessage {
            delivery: lapin::message::Delivery::mock(0, "x".into(), key.into(), false, Vec::new()),
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        };
        let mut properties = BasicProperties::default();
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        message.delivery.properties = properties;
        message
    }

    #[test]
    fn a_return_carried_by_another_confirm_fails_its_own_message_only() {
        let group = [
            outgoing("a.t", "e1"),
            outgoing("b.t", "e2"),
            outgoing("a.t", "e3"),
        ];
        // lapin handed e2's return to e1's confirm: e1 stays stored, e2 fails.
        let answers = vec![
            Ok(Confirmation::Ack(Some(back("b.t", Some("e2"))))),
            Ok(Confirmation::Ack(None)),
            Ok(Confirmation::Ack(None)),
        ];
        let outcomes = judge(&group, answers);
        assert!(outcomes[0].is_ok());
        assert!(matches!(
            &outcomes[1],
            Err(PublishError::Unroutable { routing_key, .. }) if routing_key == "b.t"
        ));
        assert!(outcomes[2].is_ok());
    }

    #[test]
    fn a_return_that_matches_nothing_fails_the_whole_group() {
        let group = [outgoing("a.t", "e1"), outgoing("a.t", "e2")];
        let answers = vec![
            Ok(Confirmation::Ack(None)),
            Ok(Confirmation::Ack(Some(back("a.t", None)))),
        ];
        assert!(judge(&group, answers).iter().all(Result::is_err));
    }

    #[test]
    fn only_a_channel_whose_every_confirm_was_an_ack_serves_again() {
        let ack = || Ok(Confirmation::Ack(None));
        assert!(serves_again(&[ack(), ack()]));
        assert!(serves_again(&[]));
        // A nacked channel may be stuck on a dead quorum leader: never lent again.
        assert!(!serves_again(&[ack(), Ok(Confirmation::Nack(None))]));
        assert!(!serves_again(&[Err(Wait::Timeout(Duration::from_secs(1)))]));
        assert!(!serves_again(&[Ok(Confirmation::NotRequested)]));
    }

    #[test]
    fn nacks_timeouts_and_unconfirmed_channels_are_failures_of_their_own() {
        let group = [outgoing("a", "1"), outgoing("a", "2"), outgoing("a", "3")];
        let answers = vec![
            Ok(Confirmation::Nack(None)),
            Err(Wait::Timeout(Duration::from_secs(1))),
            Ok(Confirmation::NotRequested),
        ];
        let outcomes = judge(&group, answers);
        assert!(matches!(outcomes[0], Err(PublishError::Nacked)));
        assert!(matches!(outcomes[1], Err(PublishError::Timeout(_))));
        assert!(matches!(outcomes[2], Err(PublishError::NotConfirmed)));
        assert!(first_failure(outcomes).is_err());
        assert!(first_failure(vec![Ok(()), Ok(())]).is_ok());
    }
}
