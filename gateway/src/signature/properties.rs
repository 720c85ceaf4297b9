//! Property tests: signing then verifying round-trips for any body and
//! secret, and any single-bit change to the body breaks it; any bytes at all
//! in the authentication headers are refused or accepted, never a panic, and
//! never more than the bounded work.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use sluice_shared::config::DigestEncoding;
use sluice_shared::secret::Secret;
use sluice_shared::standard_webhooks::SigningKey;

use super::{HmacSignature, SignatureError, StandardSignature, hex_hmac_sha256};

fn hmac_headers(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-signature", HeaderValue::from_str(value).expect("ASCII"));
    headers
}

fn flip(body: &[u8], bit: usize) -> Vec<u8> {
    let mut copy = body.to_vec();
    copy[bit / 8] ^= 1 << (bit % 8);
    copy
}

proptest! {
    #[test]
    fn hmac_round_trips_and_any_flipped_bit_fails(
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        secret in "[ -~]{1,64}",
        bit in any::<prop::sample::Index>(),
        base64 in any::<bool>(),
    ) {
        let encoding = if base64 { DigestEncoding::Base64 } else { DigestEncoding::Hex };
        let scheme = HmacSignature::new(
            HeaderName::from_static("x-signature"),
            Some("sha256=".into()),
            encoding,
            &[Secret::new(secret.clone())],
        );
        let hex = hex_hmac_sha256(&secret, &body);
        let digest = if base64 { STANDARD.encode(hex::decode(&hex).expect("hex")) } else { hex };
        let headers = hmac_headers(&format!("sha256={digest}"));
        let tag = scheme.presented(&headers).expect("a well-formed header");
        prop_assert_eq!(scheme.verify(&tag, &body), Ok(()));
        let tampered = flip(&body, bit.index(body.len() * 8));
        prop_assert_eq!(scheme.verify(&tag, &tampered), Err(SignatureError::Mismatch));
    }

    #[test]
    fn standard_webhooks_round_trips_and_any_flipped_bit_fails(
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        key in proptest::collection::vec(any::<u8>(), 16..48),
        id in "msg_[A-Za-z0-9]{1,30}",
        bit in any::<prop::sample::Index>(),
    ) {
        let secret = Secret::new(format!("whsec_{}", STANDARD.encode(&key)));
        let key = SigningKey::from_secret(&secret).expect("whsec_");
        let scheme = StandardSignature::new(vec![key.clone()], Duration::from_secs(300));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let timestamp = i64::try_from(now).expect("i64");
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(&id).expect("ASCII"));
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        let signature = key.sign(&id, timestamp, &body);
        headers.insert("webhook-signature", HeaderValue::from_str(&signature).expect("ASCII"));
        let claimed = scheme.presented(&headers).expect("well-formed headers");
        prop_assert_eq!(scheme.verify(claimed.clone(), &body), Ok(id.clone()));
        let tampered = flip(&body, bit.index(body.len() * 8));
        prop_assert_eq!(scheme.verify(claimed, &tampered), Err(SignatureError::Mismatch));
    }

    #[test]
    fn fuzz_arbitrary_bytes_in_the_authentication_headers_never_panic_or_pass(
        signature in proptest::collection::vec(any::<u8>(), 0..3000),
        timestamp in proptest::collection::vec(any::<u8>(), 0..40),
        id in proptest::collection::vec(any::<u8>(), 0..300),
        token in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let key = SigningKey::from_secret(&secret).expect("whsec_");
        let standard = super::Authenticator {
            scheme: super::Scheme::Standard(StandardSignature::new(vec![key], Duration::from_secs(300))),
            token: Some(super::TokenCheck::new(
                HeaderName::from_static("x-token"),
                sluice_shared::config::TokenFormat::Plain,
                &[Secret::new("t")],
            )),
        };
        let hmac = super::Authenticator {
            scheme: super::Scheme::Hmac(HmacSignature::new(
                HeaderName::from_static("webhook-signature"),
                Some("sha256=".into()),
                DigestEncoding::Hex,
                &[Secret::new("s")],
            )),
            token: None,
        };
        let mut headers = HeaderMap::new();
        for (name, bytes) in [
            ("webhook-signature", &signature),
            ("webhook-timestamp", &timestamp),
            ("webhook-id", &id),
            ("x-token", &token),
        ] {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                headers.insert(name, value);
            }
        }
        // Random bytes are never a valid token or MAC: both refuse.
        let body = bytes::Bytes::from_static(br#"{"a":1}"#);
        let refused = standard.verify(&headers, body.clone()).is_err();
        prop_assert!(refused, "random Standard Webhooks headers passed");
        let refused = hmac.verify(&headers, body).is_err();
        prop_assert!(refused, "a random HMAC header passed");
    }
}
