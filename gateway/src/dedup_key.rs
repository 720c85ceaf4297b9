//! The Redis keys of one event: `{prefix}:{source}:{digest}`, the digest
//! being the first 128 bits of the SHA-256 of the event's id, in hex, so
//! Redis never holds the id (see [`crate::dedup`] for why unkeyed).
//!
//! In a Redis Cluster the digest's first byte is also a hash tag,
//! `{prefix}:{source}:{3f}1c5a…`: a key's slot is then one of 256, chosen
//! evenly by the digest, so a request's claim is at most 256 scripts (one
//! per slot) whatever its size, where untagged keys would make a
//! 1,000-event batch about 970 scripts. 256 slots still spread the keys
//! evenly over any cluster of up to 256 primaries.

use sluice_shared::event_key::{event_key, slot_tagged_event_key};

/// The Redis keys of one event of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupKey {
    /// `{prefix}:{source}:{digest of the id}`: the one written.
    key: String,
    /// `{prefix}:{source}:{id}`: the old form, only read.
    old_form: String,
}

impl DedupKey {
    pub fn new(prefix: &str, source: &str, id: &str) -> Self {
        Self {
            key: event_key(prefix, source, id),
            old_form: format!("{prefix}:{source}:{id}"),
        }
    }

    /// The key of cluster mode: the digest's first byte (two hex digits)
    /// between braces, Redis Cluster's hash tag.
    pub fn slot_tagged(prefix: &str, source: &str, id: &str) -> Self {
        Self {
            key: slot_tagged_event_key(prefix, source, id),
            old_form: format!("{prefix}:{source}:{id}"),
        }
    }

    /// The key written for the event.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The key an older gateway wrote for the event, with the id in it.
    pub fn old_form(&self) -> &str {
        &self.old_form
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_key_holds_a_digest_of_the_id_and_the_old_form_the_id_itself() {
        let wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
        let key = DedupKey::new("sluice:dedup", "whatsapp", wamid);
        let digest = key.as_str().strip_prefix("sluice:dedup:whatsapp:").unwrap();
        assert_eq!(digest, &hex::encode(Sha256::digest(wamid))[..32]);
        assert!(!key.as_str().contains("wamid") && !key.as_str().contains("MTY1"));
        assert_eq!(key.old_form(), format!("sluice:dedup:whatsapp:{wamid}"));
        assert_ne!(key, DedupKey::new("sluice:dedup", "other", wamid));
        assert_eq!(
            key,
            DedupKey::new("sluice:dedup", "whatsapp", wamid),
            "the same on every replica"
        );
    }

    #[test]
    fn a_cluster_key_tags_the_digest_s_first_byte() {
        let plain = DedupKey::new("p", "s", "id-1");
        let tagged = DedupKey::slot_tagged("p", "s", "id-1");
        let digest = plain.as_str().strip_prefix("p:s:").unwrap();
        let expected = format!("p:s:{{{}}}{}", &digest[..2], &digest[2..]);
        assert_eq!(tagged.as_str(), expected);
        let slots: std::collections::HashSet<_> = (0..5000)
            .map(|n| DedupKey::slot_tagged("p", "s", &n.to_string()))
            .map(|key| redis::cluster_routing::Slot::for_key(key.as_str()))
            .collect();
        assert_eq!(slots.len(), 256, "one slot per tag, all in use");
    }
}
