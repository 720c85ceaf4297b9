//! The confirmation of a purge over HTTP: a token naming exactly the dead
//! messages a preview showed, so that the confirming request removes those
//! and no others.
//!
//! Over HTTP a purge is two requests, and the preview's pass cannot hold the
//! messages until the second one comes (it would hold the lock and the queue
//! for as long as the operator reads). So the preview gives each message it
//! covers a [`Fingerprint`] and puts them all in the token; the confirming
//! pass removes a message only when its fingerprint is in the token, as many
//! times as the token holds it. Whatever arrived meanwhile stays, even when it
//! matches the filter; a previewed message already gone is counted, not an
//! error.
//!
//! A fingerprint is the first 16 bytes of SHA-256 over the message as it was
//! dead-lettered: routing key, message id, content type, timestamp, every
//! header but `x-delivery-count` (RabbitMQ bumps it on every read), and the
//! body. An event that died again after a replay is a new message (new
//! failure headers, a higher replay count), never taken for the old one; two
//! byte-identical messages are interchangeable.
//!
//! The token is `v1.` and, in base64url, 16 bytes naming the scope (the
//! filter as written, or `all`), the fingerprints, then 16 bytes of SHA-256
//! over both: a token cut short or edited is refused, never read as a
//! smaller set. It is not a secret or a signature: whoever holds the API
//! token may purge anyway.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice_shared::message::headers::DELIVERY_COUNT;

use super::error::DlqError;
use super::event::DeadEvent;
use super::record::table_json;

/// The most messages one confirmation covers (about 1.1 MB of token, within
/// the API's 2 MB request limit); a preview that matches more covers the
/// first ones in queue order and says how many it left out.
pub const MAX_CONFIRMED: usize = 50_000;

const VERSION: &str = "v1.";
const PART: usize = 16;

/// What identifies one dead message across passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; PART]);

impl Fingerprint {
    pub fn of(event: &DeadEvent) -> Self {
        let properties = &event.properties;
        let mut headers = properties
            .headers()
            .as_ref()
            .map(table_json)
            .unwrap_or_default();
        if let Some(headers) = headers.as_object_mut() {
            headers.remove(DELIVERY_COUNT);
        }
        let identity = json!({
            "routing_key": event.routing_key,
            "message_id": properties.message_id().as_ref().map(|v| v.as_str()),
            "content_type": properties.content_type().as_ref().map(|v| v.as_str()),
            "timestamp": properties.timestamp(),
            "headers": headers,
        })
        .to_string();
        let mut hash = Sha256::new();
        for part in [identity.as_bytes(), &event.body] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Self(first(&hash.finalize()))
    }
}

/// The previewed messages of one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    scope: [u8; PART],
    messages: Vec<Fingerprint>,
}

impl Confirmation {
    /// An empty confirmation for `scope` (the purge's filter as written, or `all`).
    pub fn new(scope: &str) -> Self {
        Self {
            scope: scope_digest(scope),
            messages: Vec::new(),
        }
    }

    pub fn push(&mut self, message: Fingerprint) {
        self.messages.push(message);
    }

    /// Messages covered.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether it holds [`MAX_CONFIRMED`] messages already.
    pub fn is_full(&self) -> bool {
        self.messages.len() >= MAX_CONFIRMED
    }

    /// The token the preview answers with.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(PART * (self.messages.len() + 2));
        bytes.extend_from_slice(&self.scope);
        for message in &self.messages {
            bytes.extend_from_slice(&message.0);
        }
        let check = first(&Sha256::digest(&bytes));
        bytes.extend_from_slice(&check);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token sent back for `scope`; a damaged token, or one made
    /// for another scope, is a usage error.
    pub fn decode(token: &str, scope: &str) -> Result<Self, DlqError> {
        let damaged = || {
            DlqError::Confirmation(
                "`confirm` is damaged (cut short or edited): send it exactly as the preview \
                 answered it, or preview again"
                    .into(),
            )
        };
        let encoded = token.trim().strip_prefix(VERSION).ok_or_else(|| {
            DlqError::Confirmation(
                "`confirm` is not a purge confirmation (those start with `v1.`): send the one \
                 the preview answered"
                    .into(),
            )
        })?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| damaged())?;
        if bytes.len() < 2 * PART || bytes.len() % PART != 0 {
            return Err(damaged());
        }
        let (body, check) = bytes.split_at(bytes.len() - PART);
        if first(&Sha256::digest(body)) != check {
            return Err(damaged());
        }
        let (made_for, messages) = body.split_at(PART);
        if made_for != scope_digest(scope) {
            return Err(DlqError::Confirmation(
                "this confirmation was made for another filter: send the same filter (and `all`) \
                 as the preview did, or preview again"
                    .into(),
            ));
        }
        Ok(Self {
            scope: scope_digest(scope),
            messages: messages
                .chunks_exact(PART)
                .map(|chunk| Fingerprint(first(chunk)))
                .collect(),
        })
    }

    /// The messages still to find, as a count per fingerprint.
    pub fn wanted(&self) -> Wanted {
        let mut counts = HashMap::new();
        for message in &self.messages {
            *counts.entry(*message).or_insert(0u32) += 1;
        }
        Wanted(counts)
    }
}

/// The previewed messages a confirming pass has not found yet.
#[derive(Debug)]
pub struct Wanted(HashMap<Fingerprint, u32>);

impl Wanted {
    /// Whether `message` is one still wanted; if so, it is wanted once less.
    pub fn take(&mut self, message: Fingerprint) -> bool {
        match self.0.get_mut(&message) {
            Some(count) if *count > 0 => {
                *count -= 1;
                true
            }
            _ => false,
        }
    }
}

fn scope_digest(scope: &str) -> [u8; PART] {
    first(&Sha256::digest(scope.as_bytes()))
}

/// The first [`PART`] bytes (callers pass at least that many).
fn first(bytes: &[u8]) -> [u8; PART] {
    let mut part = [0; PART];
    let n = bytes.len().min(PART);
    part[..n].copy_from_slice(&bytes[..n]);
    part
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use sluice_shared::message::headers;

    fn dead(id: &str, delivery_count: Option<i64>, failed_ms: i64) -> DeadEvent {
        let mut table = FieldTable::default();
        table.insert(
            headers::REASON.into(),
            AMQPValue::LongString(LongString::from("rejected")),
        );
        table.insert(
            headers::LAST_FAILURE_MS.into(),
            AMQPValue::LongLongInt(failed_ms),
        );
        if let Some(count) = delivery_count {
            table.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(count));
        }
        let properties = BasicProperties::default()
            .with_message_id(id.into())
            .with_headers(table);
        DeadEvent::read(1, "a.t", properties, format!("body of {id}").into_bytes())
    }

    #[test]
    fn a_message_read_again_keeps_its_fingerprint_and_another_one_differs() {
        let first_read = Fingerprint::of(&dead("e1", None, 1_000));
        assert_eq!(first_read, Fingerprint::of(&dead("e1", Some(3), 1_000)));
        assert_ne!(first_read, Fingerprint::of(&dead("e2", None, 1_000)));
        assert_ne!(
            first_read,
            Fingerprint::of(&dead("e1", None, 2_000)),
            "the same event dead again is another message"
        );
    }

    #[test]
    fn a_token_reads_back_as_the_same_messages_for_the_same_scope() {
        let mut confirmation = Confirmation::new("scope");
        for id in ["e1", "e2", "e1"] {
            confirmation.push(Fingerprint::of(&dead(id, None, 1)));
        }
        let token = confirmation.encode();
        assert!(token.starts_with("v1."), "{token}");
        let read = Confirmation::decode(&token, "scope").unwrap();
        assert_eq!(read, confirmation);
        let mut wanted = read.wanted();
        let e1 = Fingerprint::of(&dead("e1", Some(1), 1));
        assert!(wanted.take(e1));
        assert!(wanted.take(e1), "e1 was previewed twice");
        assert!(!wanted.take(e1), "and not three times");
        assert!(!wanted.take(Fingerprint::of(&dead("e3", None, 1))));
    }

    #[test]
    fn an_empty_preview_still_makes_a_token() {
        let token = Confirmation::new("all").encode();
        assert!(Confirmation::decode(&token, "all").unwrap().is_empty());
    }

    #[test]
    fn a_token_for_another_scope_cut_short_or_edited_is_refused() {
        let mut confirmation = Confirmation::new("scope");
        confirmation.push(Fingerprint::of(&dead("e1", None, 1)));
        confirmation.push(Fingerprint::of(&dead("e2", None, 1)));
        let token = confirmation.encode();
        let refused = |token: &str, scope: &str| {
            let err = Confirmation::decode(token, scope).unwrap_err();
            assert_eq!(err.exit_code(), 64, "{err}");
            err.to_string()
        };
        assert!(refused(&token, "other").contains("another filter"));
        assert!(refused(&token[..token.len() - 22], "scope").contains("damaged"));
        let mut edited = token.clone().into_bytes();
        let at = edited.len() / 2;
        edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        assert!(refused(&edited, "scope").contains("damaged"));
        assert!(refused("v1.***", "scope").contains("damaged"));
        assert!(refused("yes", "scope").contains("v1."));
    }
}
