//! Request authentication, per source: a signature scheme, optionally with a
//! shared token on top.
//!
//! Two steps, so that a request with bad credentials costs nothing:
//! [`Authenticator::check_headers`] runs before a byte of the body is read
//! and parses the signature headers into [`Presented`] tags (a missing,
//! repeated, over-long or malformed header, or more than
//! [`MAX_SIGNATURES`] entries, is refused there; the token check is done
//! there in full). [`Authenticator::verify_body`] then computes each
//! secret's MAC once over the body and compares it with every presented tag.
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

/// The longest authentication header value accepted (a signature list, a
/// token); a longer one is refused before the body is read.
pub const MAX_AUTH_HEADER_BYTES: usize = 1024;
/// The most signatures one `webhook-signature` header may list.
pub const MAX_SIGNATURES: usize = 8;

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
    #[error("the {0} header is sent more than once")]
    Repeated(HeaderName),
    #[error("the {0} header is longer than {MAX_AUTH_HEADER_BYTES} bytes")]
    TooLong(HeaderName),
    #[error("the {0} header lists more than {MAX_SIGNATURES} signatures")]
    TooMany(HeaderName),
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

/// What a request's headers present, parsed and bounded before the body is read.
#[derive(Debug, Clone)]
pub enum Presented {
    /// An HMAC tag of the body.
    Hmac(Vec<u8>),
    /// A Standard Webhooks message id, timestamp and its `v1` tags.
    Standard(standard::Claimed),
    /// Nothing to check against the body (token only: already checked).
    Nothing,
}

impl Authenticator {
    /// Checks everything that needs no body: the token in full, and the
    /// signature headers' presence, size and format.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<Presented, SignatureError> {
        if let Some(token) = &self.token {
            token.verify(headers)?;
        }
        Ok(match &self.scheme {
            Scheme::Hmac(hmac) => Presented::Hmac(hmac.presented(headers)?),
            Scheme::Standard(standard) => Presented::Standard(standard.presented(headers)?),
            Scheme::TokenOnly => Presented::Nothing,
        })
    }

    /// Checks the presented tags against the body: each secret's MAC once.
    pub fn verify_body(
        &self,
        presented: Presented,
        body: Bytes,
    ) -> Result<VerifiedBody, SignatureError> {
        let webhook_id = match (&self.scheme, presented) {
            (Scheme::Hmac(hmac), Presented::Hmac(tag)) => {
                hmac.verify(&tag, &body)?;
                None
            }
            (Scheme::Standard(standard), Presented::Standard(claimed)) => {
                Some(standard.verify(claimed, &body)?)
            }
            (Scheme::TokenOnly, Presented::Nothing) => None,
            // Presented by another scheme: cannot happen, and never passes.
            _ => return Err(SignatureError::Mismatch),
        };
        Ok(VerifiedBody {
            bytes: body,
            webhook_id,
        })
    }

    /// Both steps at once (tools and benchmarks).
    pub fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<VerifiedBody, SignatureError> {
        let presented = self.check_headers(headers)?;
        self.verify_body(presented, body)
    }
}

/// An authentication header's value as text: present once, at most
/// [`MAX_AUTH_HEADER_BYTES`] long, visible ASCII.
fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| SignatureError::Missing(name.clone()))?;
    if values.next().is_some() {
        return Err(SignatureError::Repeated(name.clone()));
    }
    if value.len() > MAX_AUTH_HEADER_BYTES {
        return Err(SignatureError::TooLong(name.clone()));
    }
    value
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
