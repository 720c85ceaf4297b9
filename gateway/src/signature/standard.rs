//! The `standard-webhooks` scheme: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (a space-separated `v1,<base64>` list, any match
//! passes) over `id.timestamp.body`, with `whsec_` secrets and a timestamp
//! tolerance both ways against replays.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sluice_shared::standard_webhooks::{SigningKey, tags_equal};

use super::{MAX_SIGNATURES, SignatureError, header_text};

const ID: HeaderName = HeaderName::from_static("webhook-id");
const TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

#[derive(Clone)]
pub struct StandardSignature {
    keys: Vec<SigningKey>,
    tolerance: Duration,
}

/// What the three headers claim, checked for freshness and form.
#[derive(Debug, Clone)]
pub struct Claimed {
    id: String,
    timestamp: i64,
    /// The `v1` tags of the signature list (other versions are skipped).
    tags: Vec<[u8; 32]>,
}

impl StandardSignature {
    pub fn new(keys: Vec<SigningKey>, tolerance: Duration) -> Self {
        Self { keys, tolerance }
    }

    /// Parses and bounds the three headers; a stale timestamp fails here, before the body.
    pub fn presented(&self, headers: &HeaderMap) -> Result<Claimed, SignatureError> {
        self.presented_at(headers, SystemTime::now())
    }

    fn presented_at(
        &self,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Claimed, SignatureError> {
        let id = header_text(headers, &ID)?;
        let timestamp: i64 = header_text(headers, &TIMESTAMP)?
            .trim()
            .parse()
            .map_err(|_| SignatureError::Malformed(TIMESTAMP))?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let distance = i64::try_from(now).unwrap_or(i64::MAX).abs_diff(timestamp);
        if distance > self.tolerance.as_secs() {
            return Err(SignatureError::Stale);
        }
        Ok(Claimed {
            id: id.to_owned(),
            timestamp,
            tags: v1_tags(header_text(headers, &SIGNATURE)?)?,
        })
    }

    /// Checks the claimed tags against the body: each key's MAC computed
    /// once and compared with every tag. Returns the authenticated `webhook-id`.
    pub fn verify(&self, claimed: Claimed, body: &[u8]) -> Result<String, SignatureError> {
        let matched = self.keys.iter().fold(false, |found, key| {
            let expected = key.tag(&claimed.id, claimed.timestamp, body);
            claimed
                .tags
                .iter()
                .fold(found, |found, tag| found | tags_equal(&expected, tag))
        });
        if matched {
            Ok(claimed.id)
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The 32-byte `v1` tags of a space-separated signature list, at most
/// [`MAX_SIGNATURES`] entries; a list with no usable `v1` tag is malformed.
fn v1_tags(list: &str) -> Result<Vec<[u8; 32]>, SignatureError> {
    let entries: Vec<&str> = list.split(' ').filter(|e| !e.is_empty()).collect();
    if entries.len() > MAX_SIGNATURES {
        return Err(SignatureError::TooMany(SIGNATURE));
    }
    let tags: Vec<[u8; 32]> = entries
        .iter()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter_map(|tag| <[u8; 32]>::try_from(tag).ok())
        .collect();
    if tags.is_empty() {
        return Err(SignatureError::Malformed(SIGNATURE));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use sluice_shared::secret::Secret;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID_VALUE: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn scheme(secrets: &[&str]) -> StandardSignature {
        let keys = secrets
            .iter()
            .map(|s| SigningKey::from_secret(&Secret::new(*s)).unwrap())
            .collect();
        StandardSignature::new(keys, Duration::from_secs(300))
    }

    fn headers(ts: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ID, HeaderValue::from_static(ID_VALUE));
        headers.insert(TIMESTAMP, HeaderValue::from_str(&ts.to_string()).unwrap());
        headers.insert(SIGNATURE, HeaderValue::from_str(signature).unwrap());
        headers
    }

    fn at(ts: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).unwrap())
    }

    impl StandardSignature {
        fn verify_at(
            &self,
            headers: &HeaderMap,
            body: &[u8],
            now: SystemTime,
        ) -> Result<String, SignatureError> {
            self.verify(self.presented_at(headers, now)?, body)
        }
    }

    #[test]
    fn more_than_eight_entries_or_no_usable_tag_is_refused_before_the_body() {
        let many = [EXPECTED; 9].join(" ");
        let err = scheme(&[SECRET]).presented_at(&headers(TS, &many), at(TS));
        assert_eq!(err.err(), Some(SignatureError::TooMany(SIGNATURE)));
        let eight = [EXPECTED; 8].join(" ");
        assert!(
            scheme(&[SECRET])
                .verify_at(&headers(TS, &eight), BODY, at(TS))
                .is_ok()
        );
        let none = scheme(&[SECRET]).presented_at(&headers(TS, "v1a,xyz v1,AAAA"), at(TS));
        assert_eq!(none.err(), Some(SignatureError::Malformed(SIGNATURE)));
    }

    #[test]
    fn the_published_vector_verifies_and_yields_its_id() {
        let id = scheme(&[SECRET]).verify_at(&headers(TS, EXPECTED), BODY, at(TS + 10));
        assert_eq!(id.as_deref(), Ok(ID_VALUE));
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_refused_both_ways() {
        let scheme = scheme(&[SECRET]);
        let late = scheme.verify_at(&headers(TS, EXPECTED), BODY, at(TS + 301));
        let early = scheme.verify_at(&headers(TS, EXPECTED), BODY, at(TS - 301));
        assert_eq!(late, Err(SignatureError::Stale));
        assert_eq!(early, Err(SignatureError::Stale));
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let list = format!("v1,AAAA v1a,xyz {EXPECTED}");
        assert!(
            scheme(&[SECRET])
                .verify_at(&headers(TS, &list), BODY, at(TS))
                .is_ok()
        );
    }

    #[test]
    fn a_rotated_secret_list_accepts_either_secret() {
        let rotated = scheme(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", SECRET]);
        assert!(
            rotated
                .verify_at(&headers(TS, EXPECTED), BODY, at(TS))
                .is_ok()
        );
    }

    #[test]
    fn a_tampered_signature_or_missing_header_fails() {
        let tampered = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        let scheme = scheme(&[SECRET]);
        assert_eq!(
            scheme.verify_at(&headers(TS, tampered), BODY, at(TS)),
            Err(SignatureError::Mismatch)
        );
        let mut missing = headers(TS, EXPECTED);
        missing.remove(ID);
        assert_eq!(
            scheme.verify_at(&missing, BODY, at(TS)),
            Err(SignatureError::Missing(ID))
        );
    }
}
