//! The `standard-webhooks` scheme: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (a space-separated `v1,<base64>` list, any match
//! passes) over `id.timestamp.body`, with `whsec_` secrets and a timestamp
//! tolerance both ways against replays.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName};
use sluice_shared::standard_webhooks::SigningKey;

use super::{SignatureError, header_text};

const ID: HeaderName = HeaderName::from_static("webhook-id");
const TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

#[derive(Clone)]
pub struct StandardSignature {
    keys: Vec<SigningKey>,
    tolerance: Duration,
}

impl StandardSignature {
    pub fn new(keys: Vec<SigningKey>, tolerance: Duration) -> Self {
        Self { keys, tolerance }
    }

    /// Checks the three headers against the body; returns the authenticated `webhook-id`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, SignatureError> {
        self.verify_at(headers, body, SystemTime::now())
    }

    fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, SignatureError> {
        let id = header_text(headers, &ID)?;
        let timestamp: i64 = header_text(headers, &TIMESTAMP)?
            .trim()
            .parse()
            .map_err(|_| SignatureError::Malformed(TIMESTAMP))?;
        let signatures = header_text(headers, &SIGNATURE)?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let distance = i64::try_from(now).unwrap_or(i64::MAX).abs_diff(timestamp);
        if distance > self.tolerance.as_secs() {
            return Err(SignatureError::Stale);
        }
        if self
            .keys
            .iter()
            .any(|key| key.verify(id, timestamp, body, signatures))
        {
            Ok(id.to_owned())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
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
