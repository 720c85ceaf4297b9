//! The Standard Webhooks signature: HMAC-SHA256 over `id.timestamp.body`,
//! keyed with the base64 secret after `whsec_`, sent as `v1,<base64>`.
//!
//! The worker signs every delivery with it; receivers verify with any
//! Standard Webhooks library.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// A signing key decoded from a `whsec_<base64>` secret.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

/// A secret that is not `whsec_` followed by base64.
#[derive(Debug, thiserror::Error)]
#[error(
    "a Standard Webhooks secret is \"whsec_\" followed by base64 (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)"
)]
pub struct BadSecret;

impl SigningKey {
    pub fn from_secret(secret: &Secret) -> Result<Self, BadSecret> {
        let encoded = secret.expose().strip_prefix("whsec_").ok_or(BadSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
        if key.is_empty() {
            return Err(BadSecret);
        }
        Ok(Self(key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The raw HMAC-SHA256 tag of this message.
    pub fn tag(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        self.mac(id, timestamp, body).finalize().into_bytes().into()
    }

    /// The `webhook-signature` header value for this message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.tag(id, timestamp, body)))
    }

    /// Whether any `v1,` signature in a space-separated header value matches.
    /// The MAC is computed once, and compared with every entry in constant
    /// time, so the work does not grow with the number of entries.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.tag(id, timestamp, body);
        header
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .fold(false, |found, tag| found | tags_equal(&expected, &tag))
    }
}

/// Compares a computed tag with a presented one in constant time; a tag of
/// another length never matches.
pub fn tags_equal(expected: &[u8; 32], presented: &[u8]) -> bool {
    bool::from(expected.as_slice().ct_eq(presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> SigningKey {
        SigningKey::from_secret(&Secret::new(secret)).unwrap()
    }

    #[test]
    fn signing_reproduces_the_published_vector() {
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_tampered_signature_fails_and_any_listed_match_passes() {
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert!(!key.verify(
            id,
            ts,
            body,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
        ));
        let both = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(key.verify(id, ts, body, both));
    }

    #[test]
    fn a_secret_without_whsec_is_refused() {
        assert!(SigningKey::from_secret(&Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_err());
    }
}
