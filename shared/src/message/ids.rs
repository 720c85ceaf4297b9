//! The names an event goes by: its id, its source and its type, each a type
//! of its own so one is never passed where another is meant.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::id_digest::{self, IdDigest};

/// The longest provider id used as is; longer ones are hashed so dedup keys stay small.
const MAX_ID_LEN: usize = 200;
/// The longest event type kept; it becomes part of a routing key (255 bytes at most).
const MAX_TYPE_LEN: usize = 100;

/// An event's id: the provider's, safe for Redis keys and AMQP headers.
/// It is the message's `message_id` and the `webhook-id` sent downstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    /// Takes a provider id as is when it is short printable ASCII, else its
    /// SHA-256: control characters, bidi overrides (U+202E) and other
    /// non-ASCII text never reach a Redis key, an AMQP header or a log line.
    pub fn from_provider(raw: &str) -> Self {
        let printable = raw.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if raw.is_empty() || raw.len() > MAX_ID_LEN || !printable {
            Self::digest_of(raw.as_bytes())
        } else {
            Self(raw.to_owned())
        }
    }

    /// The lowercase hex SHA-256 of some bytes.
    pub fn digest_of(bytes: &[u8]) -> Self {
        Self::digest_of_pieces([bytes])
    }

    /// The lowercase hex SHA-256 of bytes given in pieces (an event's data
    /// as it is published, spliced from parts).
    pub fn digest_of_pieces<P: AsRef<[u8]>>(pieces: impl IntoIterator<Item = P>) -> Self {
        let mut hasher = Sha256::new();
        for piece in pieces {
            hasher.update(piece.as_ref());
        }
        Self(hex::encode(hasher.finalize()))
    }

    /// An id read back from a message (`message_id`), taken as it is: the
    /// gateway made it safe when it published it.
    pub fn as_published(id: &str) -> Self {
        Self(id.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What log lines carry instead of the id, which can hold a phone number
    /// (see [`crate::id_digest`]).
    pub fn log_digest(&self) -> IdDigest {
        id_digest::of(&self.0)
    }
}

/// A configured source name (validated by the config: `[a-z0-9_-]{1,64}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceName(String);

impl SourceName {
    /// A name taken from `[sources.<name>]` (which the config validated), for tools.
    pub fn from_config_name(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// A source read back from a message's header, taken as it is.
    pub fn as_published(name: &str) -> Self {
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A normalised event type: `[A-Za-z0-9._-]`, other characters become `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(String);

impl EventType {
    pub fn normalise(raw: &str) -> Self {
        let text: String = raw
            .chars()
            .take(MAX_TYPE_LEN)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if text.is_empty() {
            Self::unknown()
        } else {
            Self(text)
        }
    }

    /// The type of an event whose type pointer finds nothing.
    pub fn unknown() -> Self {
        Self("unknown".into())
    }

    /// The type of a body that cannot be parsed (kept in the dead queue).
    pub fn unparseable() -> Self {
        Self("unparseable".into())
    }

    /// A type read back from a message's header, taken as it is.
    pub fn as_published(name: &str) -> Self {
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_like {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    )*};
}

text_like!(EventId, SourceName, EventType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_printable_provider_id_is_kept_and_anything_else_is_hashed() {
        assert_eq!(EventId::from_provider("wamid.ABC=").as_str(), "wamid.ABC=");
        assert_eq!(EventId::from_provider("3EB0:read").as_str(), "3EB0:read");
        for raw in ["", "a\u{202e}b", "a\nb", "tab\there", &"x".repeat(201)] {
            let id = EventId::from_provider(raw);
            assert_eq!(id.as_str().len(), 64, "{raw:?}");
            assert_eq!(id, EventId::digest_of(raw.as_bytes()));
        }
    }

    #[test]
    fn a_digest_of_pieces_equals_the_digest_of_their_concatenation() {
        assert_eq!(
            EventId::digest_of_pieces([&b"ab"[..], b"", b"cd"]),
            EventId::digest_of(b"abcd")
        );
    }

    #[test]
    fn types_are_normalised_and_an_empty_one_is_unknown() {
        assert_eq!(
            EventType::normalise("message status/x").as_str(),
            "message_status_x"
        );
        assert_eq!(EventType::normalise("").as_str(), "unknown");
        assert_eq!(
            EventType::normalise(&"t".repeat(300)).as_str().len(),
            MAX_TYPE_LEN
        );
    }
}
