//! Shared-token authentication, for providers that sign nothing: a token in
//! `Authorization: Bearer`, `Authorization: Basic` or a named header.
//!
//! Tokens are compared as SHA-256 digests with a constant-time equality, so
//! neither the content nor the length of a configured token leaks through
//! timing.

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use sluice_shared::config::TokenFormat;
use sluice_shared::secret::Secret;
use subtle::ConstantTimeEq;

use super::{SignatureError, header_text};

/// The SHA-256 digests of active secrets, compared in constant time: the one
/// mechanism for every shared token (header tokens, Meta's `verify_token`).
#[derive(Clone)]
pub struct SecretDigests(Vec<[u8; 32]>);

impl SecretDigests {
    pub fn new(secrets: &[Secret]) -> Self {
        Self(
            secrets
                .iter()
                .map(|s| digest(s.expose().as_bytes()))
                .collect(),
        )
    }

    /// Whether `presented` is one of the secrets. Folds over every secret,
    /// without stopping early, so timing says nothing about which matched.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let matched = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
        bool::from(matched)
    }
}

#[derive(Clone)]
pub struct TokenCheck {
    header: HeaderName,
    format: TokenFormat,
    tokens: SecretDigests,
}

impl TokenCheck {
    pub fn new(header: HeaderName, format: TokenFormat, tokens: &[Secret]) -> Self {
        Self {
            header,
            format,
            tokens: SecretDigests::new(tokens),
        }
    }

    pub fn verify(&self, headers: &HeaderMap) -> Result<(), SignatureError> {
        let value = header_text(headers, &self.header)?.trim();
        let malformed = || SignatureError::Malformed(self.header.clone());
        let presented = match self.format {
            TokenFormat::Bearer => strip_scheme(value, "bearer")
                .ok_or_else(malformed)?
                .as_bytes()
                .to_vec(),
            TokenFormat::Basic => {
                let encoded = strip_scheme(value, "basic").ok_or_else(malformed)?;
                STANDARD.decode(encoded).map_err(|_| malformed())?
            }
            TokenFormat::Plain => value.as_bytes().to_vec(),
        };
        if self.tokens.matches(&presented) {
            Ok(())
        } else {
            Err(SignatureError::TokenMismatch)
        }
    }
}

/// `Bearer abc` → `abc`, the scheme word matched case-insensitively.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (word, rest) = value.split_once(' ')?;
    word.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn check(format: TokenFormat, header: &'static str, tokens: &[&str]) -> TokenCheck {
        let tokens: Vec<_> = tokens.iter().map(|t| Secret::new(*t)).collect();
        TokenCheck::new(HeaderName::from_static(header), format, &tokens)
    }

    fn with(header: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_bearer_token_passes_and_a_wrong_one_fails() {
        let check = check(TokenFormat::Bearer, "authorization", &["treble-token"]);
        assert!(
            check
                .verify(&with("authorization", "Bearer treble-token"))
                .is_ok()
        );
        assert!(
            check
                .verify(&with("authorization", "bearer treble-token"))
                .is_ok()
        );
        let wrong = check.verify(&with("authorization", "Bearer treble-tokem"));
        assert_eq!(wrong, Err(SignatureError::TokenMismatch));
        let no_scheme = check.verify(&with("authorization", "treble-token"));
        assert!(matches!(no_scheme, Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn basic_credentials_compare_user_and_password() {
        let check = check(TokenFormat::Basic, "authorization", &["sluice:s3cret"]);
        let good = format!("Basic {}", STANDARD.encode("sluice:s3cret"));
        let bad = format!("Basic {}", STANDARD.encode("sluice:s3creT"));
        assert!(check.verify(&with("authorization", &good)).is_ok());
        assert_eq!(
            check.verify(&with("authorization", &bad)),
            Err(SignatureError::TokenMismatch)
        );
    }

    #[test]
    fn a_named_header_holds_the_plain_token_and_either_rotated_token_passes() {
        let check = check(TokenFormat::Plain, "x-api-key", &["old", "new"]);
        assert!(check.verify(&with("x-api-key", "new")).is_ok());
        assert!(check.verify(&with("x-api-key", "old")).is_ok());
        assert!(check.verify(&HeaderMap::new()).is_err());
    }
}
