//! The `hmac-sha256` scheme (and Meta's `X-Hub-Signature-256`, which is the
//! same with a fixed header and prefix): an HMAC-SHA256 of the raw body in a
//! header, optionally behind a prefix such as `sha256=`, as hex or base64.
//! The header is parsed (and a digest of the wrong length refused) before
//! the body is read; every active secret is then tried and each comparison
//! is constant time (`verify_slice`). Hex digests may be upper- or
//! lower-case, and whitespace around the value is ignored (HTTP strips it).

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sluice_shared::config::DigestEncoding;
use sluice_shared::secret::Secret;

use super::{SignatureError, header_text};

/// An HMAC-SHA256 tag is 32 bytes.
const TAG_LEN: usize = 32;

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

    /// The tag the signature header presents, decoded; no body needed.
    pub fn presented(&self, headers: &HeaderMap) -> Result<Vec<u8>, SignatureError> {
        let malformed = || SignatureError::Malformed(self.header.clone());
        let text = header_text(headers, &self.header)?.trim();
        let digest = match &self.prefix {
            Some(prefix) => text.strip_prefix(prefix.as_str()).ok_or_else(malformed)?,
            None => text,
        };
        let tag = match self.encoding {
            DigestEncoding::Hex => hex::decode(digest).map_err(|_| malformed())?,
            DigestEncoding::Base64 => STANDARD.decode(digest).map_err(|_| malformed())?,
        };
        if tag.len() != TAG_LEN {
            return Err(malformed());
        }
        Ok(tag)
    }

    /// Checks a presented tag against the raw body: one MAC per active secret.
    pub fn verify(&self, tag: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let matched = self.keys.iter().fold(false, |found, key| {
            let mut mac = key.clone();
            mac.update(body);
            found | mac.verify_slice(tag).is_ok()
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

    fn verify(
        scheme: &HmacSignature,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        scheme.verify(&scheme.presented(headers)?, body)
    }

    #[test]
    fn a_correct_signature_passes() {
        let sig = format!("sha256={}", hex_hmac_sha256("s1", BODY));
        assert!(verify(&scheme(&["s1"]), &headers(&sig), BODY).is_ok());
    }

    #[test]
    fn upper_case_and_space_padded_hex_passes_but_a_wrong_length_is_malformed() {
        let hex = hex_hmac_sha256("s1", BODY);
        let upper = format!("sha256={}", hex.to_uppercase());
        assert!(verify(&scheme(&["s1"]), &headers(&upper), BODY).is_ok());
        let padded = format!("  sha256={hex}  ");
        assert!(verify(&scheme(&["s1"]), &headers(&padded), BODY).is_ok());
        let short = format!("sha256={}", &hex[..62]);
        let err = scheme(&["s1"]).presented(&headers(&short)).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed(_)), "{err}");
    }

    #[test]
    fn a_repeated_or_over_long_header_is_refused_before_the_body() {
        let sig = format!("sha256={}", hex_hmac_sha256("s1", BODY));
        let mut twice = headers(&sig);
        twice.append("x-signature", HeaderValue::from_str(&sig).unwrap());
        let err = scheme(&["s1"]).presented(&twice).unwrap_err();
        assert!(matches!(err, SignatureError::Repeated(_)), "{err}");
        let long = format!("sha256={}", "0".repeat(2000));
        let err = scheme(&["s1"]).presented(&headers(&long)).unwrap_err();
        assert!(matches!(err, SignatureError::TooLong(_)), "{err}");
    }

    #[test]
    fn either_secret_passes_during_a_rotation() {
        let sig = format!("sha256={}", hex_hmac_sha256("new", BODY));
        assert!(verify(&scheme(&["old", "new"]), &headers(&sig), BODY).is_ok());
    }

    #[test]
    fn a_flipped_body_byte_fails() {
        let sig = format!("sha256={}", hex_hmac_sha256("s1", BODY));
        let mut tampered = BODY.to_vec();
        tampered[3] ^= 1;
        let err = verify(&scheme(&["s1"]), &headers(&sig), &tampered).unwrap_err();
        assert_eq!(err, SignatureError::Mismatch);
    }

    #[test]
    fn a_missing_header_or_prefix_is_reported_as_such() {
        let none = scheme(&["s1"]).presented(&HeaderMap::new());
        assert!(matches!(none, Err(SignatureError::Missing(_))));
        let bare = hex_hmac_sha256("s1", BODY);
        let no_prefix = scheme(&["s1"]).presented(&headers(&bare));
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
        let ok = verify(&scheme, &headers(&STANDARD.encode(tag)), BODY);
        assert!(ok.is_ok());
    }
}
