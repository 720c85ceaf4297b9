//! Ordered routes: the key an event is ordered by, and the partition it picks.
//!
//! A route with `ordered_by` delivers the events of one key (a contact's
//! `wa_id`, a conversation id) one after the other, in the order the gateway
//! accepted them. The gateway reads the key from the event's data with the
//! route's JSON pointers (the first that finds a string or a number), turns
//! it into an [`OrderKey`] and publishes the event to the route's partition
//! queue that the key picks ([`OrderKey::partition`]); the worker delivers a
//! partition's events of one key strictly in queue order (docs/architecture.md,
//! "Ordered routes").
//!
//! The key's digest must be the same in every gateway, every worker and
//! every version, so it is an unkeyed SHA-256 (never Rust's `DefaultHasher`,
//! whose keys are random per process): the partition is its first 64 bits
//! modulo the partition count, and the worker tells keys apart by it (the
//! `x-sluice-order-key` header). The key itself (often a phone number) is
//! never written anywhere but in the event's own data; logs carry the
//! keyed digest of this digest ([`crate::id_digest`]).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Partitions of an ordered route unless `partitions` says otherwise.
pub const DEFAULT_PARTITIONS: u16 = 16;
/// The most partitions a route may have: each is a queue with a consumer.
pub const MAX_PARTITIONS: u16 = 1024;
/// RabbitMQ's default `consumer_timeout`: a message held unacknowledged this
/// long closes its channel.
pub const CONSUMER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Messages of one partition a worker holds at once unless `partition_prefetch` says otherwise.
pub const DEFAULT_PARTITION_PREFETCH: u16 = 32;

/// How an ordered route orders its events, as the config loader checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedBy {
    /// JSON pointers into the event's data, tried in turn; each starts with `/`.
    pub pointers: Vec<String>,
    /// How many partition queues the route has (1 to [`MAX_PARTITIONS`]).
    pub partitions: u16,
    /// Unacknowledged messages a worker holds per partition: what one stuck
    /// key can hold back at most.
    pub prefetch: u16,
}

/// Where an event's ordering key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One of the route's pointers found it.
    Data,
    /// None did: the event is ordered by its own id, so it is ordered
    /// against nothing else (and partitions spread such events evenly).
    EventId,
}

impl OrderedBy {
    /// The event's key: the first pointer that finds a non-empty string or a
    /// number (numbers by their JSON text, so `52155` and `"52155"` are one
    /// key); else the event's own id.
    pub fn key_of(&self, data: &Value, event_id: &str) -> (OrderKey, KeySource) {
        for pointer in &self.pointers {
            let text = match data.pointer(pointer) {
                Some(Value::String(text)) if !text.is_empty() => text.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => continue,
            };
            return (OrderKey::digest("k", &text), KeySource::Data);
        }
        (OrderKey::digest("e", event_id), KeySource::EventId)
    }
}

/// A key's digest: 32 hex digits (the first 128 bits of a SHA-256), the
/// value of `x-sluice-order-key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderKey(String);

impl OrderKey {
    /// `kind` keeps a key value and an event id that are equal apart.
    fn digest(kind: &str, text: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(kind.as_bytes());
        hasher.update(b":");
        hasher.update(text.as_bytes());
        Self(hex::encode(&hasher.finalize()[..16]))
    }

    /// The digest a message's `x-sluice-order-key` carries, as it is.
    pub fn from_header(text: &str) -> Self {
        Self(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition (0 to `partitions - 1`) the key's events go to: the
    /// digest's first 64 bits modulo `partitions`. A header that is not hex
    /// (written by hand) is hashed again, so it still picks a partition.
    pub fn partition(&self, partitions: u16) -> u16 {
        let high = self
            .high()
            .or_else(|| Self::digest("h", &self.0).high())
            .unwrap_or(0);
        let index = high % u64::from(partitions.max(1));
        u16::try_from(index).unwrap_or(0)
    }

    /// The digest's first 64 bits, when it is hex.
    fn high(&self) -> Option<u64> {
        let hex = self.0.get(..16)?;
        u64::from_str_radix(hex, 16).ok()
    }
}

impl std::fmt::Display for OrderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn by(pointers: &[&str], partitions: u16) -> OrderedBy {
        OrderedBy {
            pointers: pointers.iter().map(|p| (*p).to_owned()).collect(),
            partitions,
            prefetch: DEFAULT_PARTITION_PREFETCH,
        }
    }

    #[test]
    fn the_first_pointer_that_finds_a_value_gives_the_key() {
        let ordered = by(
            &["/value/messages/0/from", "/value/statuses/0/recipient_id"],
            16,
        );
        let message = json!({"value": {"messages": [{"from": "5215500000001"}]}});
        let status = json!({"value": {"statuses": [{"recipient_id": "5215500000001"}]}});
        let (a, from_a) = ordered.key_of(&message, "wamid.1");
        let (b, from_b) = ordered.key_of(&status, "wamid.2:sent");
        assert_eq!((from_a, from_b), (KeySource::Data, KeySource::Data));
        assert_eq!(a, b, "a message and a status of one contact share a key");
        assert_eq!(a.as_str().len(), 32);
        assert!(!a.as_str().contains("5215500000001"));
    }

    #[test]
    fn a_number_and_its_text_are_one_key_and_other_values_are_no_key() {
        let ordered = by(&["/k"], 16);
        let (number, _) = ordered.key_of(&json!({"k": 52155}), "e1");
        let (text, _) = ordered.key_of(&json!({"k": "52155"}), "e2");
        assert_eq!(number, text);
        for missing in [
            json!({}),
            json!({"k": ""}),
            json!({"k": null}),
            json!({"k": [1]}),
        ] {
            let (key, source) = ordered.key_of(&missing, "evt-9");
            assert_eq!(source, KeySource::EventId, "{missing}");
            assert_eq!(key, OrderKey::digest("e", "evt-9"));
        }
    }

    #[test]
    fn a_key_value_equal_to_an_event_id_is_another_key() {
        let ordered = by(&["/k"], 16);
        let (keyed, _) = ordered.key_of(&json!({"k": "x"}), "y");
        let (by_id, _) = ordered.key_of(&json!({}), "x");
        assert_ne!(keyed, by_id);
    }

    #[test]
    fn the_partition_is_stable_across_processes_and_versions() {
        // Fixed values (`printf 'k:5215500000001' | sha256sum`): a change
        // here re-partitions every deployed key.
        let key = OrderKey::digest("k", "5215500000001");
        assert_eq!(key.as_str(), "f9eb7f4aca0f94da849aec1ed3650e83");
        assert_eq!(key.partition(16), 10);
        assert_eq!(key.partition(7), 2);
    }

    #[test]
    fn partitions_spread_keys_and_stay_in_range() {
        let mut counts = [0u32; 16];
        for n in 0..1600 {
            let key = OrderKey::digest("k", &format!("52155{n:08}"));
            counts[usize::from(key.partition(16))] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        assert_eq!(OrderKey::digest("k", "x").partition(1), 0);
        let odd = OrderKey::from_header("not hex at all, written by hand");
        assert!(odd.partition(7) < 7);
    }
}
