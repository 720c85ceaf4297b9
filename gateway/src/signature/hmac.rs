//! The `hmac-sha256` scheme (and Meta's `X-Hub-Signature-256`, which is the
//! same with a fixed header and prefix): an HMAC-SHA256 of the raw body in a
//! header, optionally behind a prefix such as `sha256=`, as hex or base64.
//! Every active secret is tried and each comparison is constant time
//! (`verify_slice`).

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sluice_shared::config::DigestEncoding;
use sluice_shared::secret::Secret;

use super::SignatureError;

/// The `hmac-sha256` scheme of one source, with its keys ready.
#[derive(Clone)]
pub struct HmacSignature {
    header: HeaderName,
    prefix: Option<String>,
    encoding: DigestEncoding,
    /// One keyed MAC per active secret, cloned per check so the key schedule
    /// is computed once at start-up, not per request.
    keys: Vec<Hmac<Sha256>>,
}

impl HmacSignature {
    pub fn new(
        header: HeaderName,
        prefix: Option<String>,
        encoding: DigestEncoding,
        secrets: &[Secret],
    ) -> Self {
        let keys = secrets
            .iter()
            .map(|s| {
                <Hmac<Sha256> as KeyInit>::new_from_slice(s.expose().as_bytes())
                    .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
            })
            .collect();
        Self {
            header,
            prefix,
            encoding,
            keys,
        }
    }

    /// Checks the signature header against the raw body.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let value = headers
            .get(&self.header)
            .ok_or_else(|| SignatureError::Missing(self.header.clone()))?;
        let malformed = || SignatureError::Malformed(self.header.clone());
        let text = value.to_str().map_err(|_| malformed())?.trim();
        let digest = match &self.prefix {
            Some(prefix) => text.strip_prefix(prefix.as_str()).ok_or_else(malformed)?,
            None => text,
        };
        let tag = match self.encoding {
            DigestEncoding::Hex => hex::decode(digest).map_err(|_| malformed())?,
            DigestEncoding::Base64 => STANDARD.decode(digest).map_err(|_| malformed())?,
        };
        let matched = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(body);
            mac.verify_slice(&tag).is_ok()
        });
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The hex HMAC-SHA256 of `body`, as senders compute it (tests and tools).
pub fn hex_hmac_sha256(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const BODY: &[u8] = br#"{"event":"messages.upsert"}"#;

    fn scheme(secrets: &[&str]) -> HmacSignature {
        let secrets: Vec<_> = secrets.iter().map(|s| Secret::new(*s)).collect();
        HmacSignature::new(
            HeaderName::from_static("x-signature"),
            Some("sha256=".into()),
            DigestEncoding::Hex,
            &secrets,
        )
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-signature", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_correct_signature_passes() {
        let sig = format!("sha256={}", hex_hmac_sha256("s1", BODY));
        assert!(scheme(&["s1"]).verify(&headers(&sig), BODY).is_ok());
    }

    #[test]
    fn either_secret_passes_during_a_rotation() {
        let sig = format!("sha256={}", hex_hmac_sha256("new", BODY));
        assert!(scheme(&["old", "new"]).verify(&headers(&sig), BODY).is_ok());
    }

    #[test]
    fn a_flipped_body_byte_fails() {
        let sig = format!("sha256={}", hex_hmac_sha256("s1", BODY));
        let mut tampered = BODY.to_vec();
        tampered[3] ^= 1;
        let err = scheme(&["s1"])
            .verify(&headers(&sig), &tampered)
            .unwrap_err();
        assert_eq!(err, SignatureError::Mismatch);
    }

    #[test]
    fn a_missing_header_or_prefix_is_reported_as_such() {
        let none = scheme(&["s1"]).verify(&HeaderMap::new(), BODY);
        assert!(matches!(none, Err(SignatureError::Missing(_))));
        let bare = hex_hmac_sha256("s1", BODY);
        let no_prefix = scheme(&["s1"]).verify(&headers(&bare), BODY);
        assert!(matches!(no_prefix, Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn base64_digests_are_accepted_when_configured() {
        let tag = hex::decode(hex_hmac_sha256("s1", BODY)).unwrap();
        let scheme = HmacSignature::new(
            HeaderName::from_static("x-signature"),
            None,
            DigestEncoding::Base64,
            &[Secret::new("s1")],
        );
        let ok = scheme.verify(&headers(&STANDARD.encode(tag)), BODY);
        assert!(ok.is_ok());
    }
}
