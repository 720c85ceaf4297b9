//! Request authentication, per source: a signature scheme, optionally with a
//! shared token on top.
//!
//! What passes becomes a [`VerifiedBody`], the only type the extractors
//! accept, so unverified bytes cannot be published by mistake. Every scheme
//! accepts a list of active secrets (two during a rotation) and compares in
//! constant time.

pub mod hmac;
pub mod standard;
pub mod token;

#[cfg(test)]
mod properties;

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;

pub use self::hmac::{HmacSignature, hex_hmac_sha256};
pub use self::standard::StandardSignature;
pub use self::token::{SecretDigests, TokenCheck};

/// A body whose request passed authentication.
#[derive(Debug, Clone)]
pub struct VerifiedBody {
    bytes: Bytes,
    /// The message id the scheme authenticated with the body (`webhook-id`).
    webhook_id: Option<String>,
}

impl VerifiedBody {
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The `webhook-id` a Standard Webhooks signature covered, if any.
    pub fn webhook_id(&self) -> Option<&str> {
        self.webhook_id.as_deref()
    }
}

/// Why a request is not authentic. All answer 401 `invalid_signature`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(HeaderName),
    #[error("the {0} header is not in the expected format")]
    Malformed(HeaderName),
    #[error("the signature does not match any active secret")]
    Mismatch,
    #[error("webhook-timestamp is outside the tolerance window (a replay, or a clock far off)")]
    Stale,
    #[error("the token does not match any active token")]
    TokenMismatch,
}

/// The signature part of a source's authentication.
#[derive(Clone)]
pub enum Scheme {
    Hmac(HmacSignature),
    Standard(StandardSignature),
    /// The `token` scheme: no signature, the token check is everything.
    TokenOnly,
}

/// A source's whole authentication.
#[derive(Clone)]
pub struct Authenticator {
    pub scheme: Scheme,
    /// Checked as well as the signature when configured.
    pub token: Option<TokenCheck>,
}

impl Authenticator {
    pub fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<VerifiedBody, SignatureError> {
        if let Some(token) = &self.token {
            token.verify(headers)?;
        }
        let webhook_id = match &self.scheme {
            Scheme::Hmac(hmac) => {
                hmac.verify(headers, &body)?;
                None
            }
            Scheme::Standard(standard) => Some(standard.verify(headers, &body)?),
            Scheme::TokenOnly => None,
        };
        Ok(VerifiedBody {
            bytes: body,
            webhook_id,
        })
    }
}

/// A header's value as text, or the error naming it.
fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or_else(|| SignatureError::Missing(name.clone()))?
        .to_str()
        .map_err(|_| SignatureError::Malformed(name.clone()))
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A body taken as verified, for extractor unit tests.
    pub fn verified(body: Vec<u8>) -> super::VerifiedBody {
        super::VerifiedBody {
            bytes: body.into(),
            webhook_id: None,
        }
    }

    /// A body verified with a `webhook-id`.
    pub fn verified_with_id(body: Vec<u8>, id: &str) -> super::VerifiedBody {
        super::VerifiedBody {
            bytes: body.into(),
            webhook_id: Some(id.to_owned()),
        }
    }
}
