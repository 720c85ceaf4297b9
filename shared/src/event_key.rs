//! The Redis key of one event of one source: `{prefix}:{source}:{digest}`,
//! the digest being the first 128 bits of the SHA-256 of the event id, in
//! hex. The gateway's dedup keys and the worker's copy-of-record keys are
//! both made here, so one event has one digest everywhere. Redis never holds
//! the id, which can carry a phone number (a `wamid` does); unkeyed, so the
//! key is the same on every replica and after every restart with no secret
//! to share (docs/privacy.md says what that means for ids that are phone
//! numbers).

use sha2::{Digest, Sha256};

/// Bytes of the id's SHA-256 in a key: 128 bits, so two ids never share one.
const KEY_DIGEST_BYTES: usize = 16;

/// `{prefix}:{source}:{digest of id}`.
pub fn event_key(prefix: &str, source: &str, id: &str) -> String {
    format!("{prefix}:{source}:{}", digest(id))
}

/// The key in a Redis Cluster: the digest's first byte (two hex digits)
/// between braces, the cluster's hash tag, `{prefix}:{source}:{3f}1c5a…`,
/// so a key's slot is one of 256, chosen evenly by the digest.
pub fn slot_tagged_event_key(prefix: &str, source: &str, id: &str) -> String {
    let digest = digest(id);
    let (tag, rest) = digest.split_at(2);
    format!("{prefix}:{source}:{{{tag}}}{rest}")
}

fn digest(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..KEY_DIGEST_BYTES])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_128_bits_of_the_ids_digest_never_the_id() {
        let key = event_key("p", "meta", "wamid.HBgLMTU1NTEyMzQ1Njc");
        assert!(key.starts_with("p:meta:"));
        assert_eq!(key.len(), "p:meta:".len() + 32);
        assert!(!key.contains("wamid"));
        assert_eq!(key, event_key("p", "meta", "wamid.HBgLMTU1NTEyMzQ1Njc"));
        assert_ne!(key, event_key("p", "meta", "wamid.other"));
    }
}
