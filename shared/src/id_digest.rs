//! Event ids in logs: a keyed digest, never the id itself.
//!
//! A provider's event id can hold personal data: a WhatsApp `wamid` is the
//! base64 of a protobuf that contains the user's phone number. So no log
//! line of either binary carries an event id; it carries the id's
//! [`IdDigest`] instead (field `event_id_digest`): HMAC-SHA256 of the id
//! under `telemetry.id_digest_key`, cut to 128 bits. The gateway and the
//! worker share the key through the config, so one event has one digest in
//! both; `sluice-worker id-digest <id>` computes it from a real id (from a
//! provider's dashboard, a receiver's `webhook-id` or the dead queue) to
//! find the event's lines.
//!
//! Keyed, because a plain hash of a low-entropy id (a phone number used as
//! an id) could be reversed by trying every number. Without a configured key
//! each process draws a random one at start: the logs still hold no id, but
//! digests differ between processes and restarts and cannot be recomputed.
//!
//! The key belongs to the logging set-up: [`crate::telemetry::init`]
//! installs it for the whole process, like the subscriber itself, and every
//! log site calls [`of`].

use std::fmt;
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer};
use sha2::Sha256;

use crate::secret::{Secret, SecretRef};

/// Bytes of the HMAC kept: 128 bits, so two events of one day's logs never share a digest.
const DIGEST_BYTES: usize = 16;

/// `telemetry.id_digest_key`: written as a secret reference (`env:NAME`,
/// `file:/path`), read when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdDigestKey(Secret);

impl IdDigestKey {
    pub fn new(secret: Secret) -> Self {
        Self(secret)
    }
}

impl<'de> Deserialize<'de> for IdDigestKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = SecretRef::deserialize(deserializer)?;
        let secret = reference.resolve().map_err(serde::de::Error::custom)?;
        Ok(Self(secret))
    }
}

/// Turns event ids into the digests logs carry.
#[derive(Clone)]
pub struct IdDigester {
    mac: Hmac<Sha256>,
    /// Whether the key came from the config (else it is this process's own).
    configured: bool,
}

impl IdDigester {
    /// Digests under the configured key, or a random one when there is none.
    pub fn from_config(key: Option<&IdDigestKey>) -> Self {
        match key {
            Some(IdDigestKey(secret)) => Self::keyed(secret.expose().as_bytes()),
            None => Self::random(),
        }
    }

    /// Digests under `key`.
    pub fn keyed(key: &[u8]) -> Self {
        Self {
            mac: mac(key),
            configured: true,
        }
    }

    /// Digests under a key drawn for this process alone.
    pub fn random() -> Self {
        let mut key = Vec::with_capacity(32);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            mac: mac(&key),
            configured: false,
        }
    }

    /// Whether the key came from `telemetry.id_digest_key`.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    pub fn digest(&self, id: &str) -> IdDigest {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut digest = [0; DIGEST_BYTES];
        digest.copy_from_slice(&full[..DIGEST_BYTES]);
        IdDigest(digest)
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

impl fmt::Debug for IdDigester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdDigester")
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

/// What a log line says instead of an event id: 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdDigest([u8; DIGEST_BYTES]);

impl fmt::Display for IdDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The process's digester: the one [`install`]ed, else a random one.
static PROCESS: OnceLock<IdDigester> = OnceLock::new();

/// Makes `digester` the process's; the first call wins, like the subscriber's.
pub fn install(digester: IdDigester) {
    let _ = PROCESS.set(digester);
}

/// The process's digester.
pub fn process() -> &'static IdDigester {
    PROCESS.get_or_init(IdDigester::random)
}

/// The digest a log line carries for the event id `id`.
pub fn of(id: &str) -> IdDigest {
    process().digest(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_32_hex_digits_stable_under_one_key_and_different_under_another() {
        let wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
        let one = IdDigester::keyed(b"key-one");
        let text = one.digest(wamid).to_string();
        assert_eq!(text.len(), 32);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            one.digest(wamid),
            IdDigester::keyed(b"key-one").digest(wamid)
        );
        assert_ne!(
            one.digest(wamid),
            IdDigester::keyed(b"key-two").digest(wamid)
        );
        assert_ne!(one.digest(wamid), one.digest("wamid.other"));
        assert!(!text.contains("16503879439"));
    }

    #[test]
    fn the_digest_is_the_hmac_sha256_of_the_id_cut_to_128_bits() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let digest = IdDigester::keyed(b"Jefe").digest("what do ya want for nothing?");
        assert_eq!(digest.to_string(), "5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn without_a_key_each_digester_draws_its_own() {
        let (a, b) = (IdDigester::random(), IdDigester::random());
        assert!(!a.is_configured());
        assert_ne!(a.digest("x"), b.digest("x"));
        assert!(IdDigester::from_config(None).digest("x") != a.digest("x"));
    }

    #[test]
    fn the_key_is_read_from_its_reference_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "log-key\n").unwrap();
        let text = format!("\"file:{}\"", path.display());
        let key: IdDigestKey = serde_json::from_str(&text).unwrap();
        assert!(!format!("{key:?}").contains("log-key"));
        let digester = IdDigester::from_config(Some(&key));
        assert!(digester.is_configured());
        assert_eq!(
            digester.digest("x"),
            IdDigester::keyed(b"log-key").digest("x")
        );
    }
}
