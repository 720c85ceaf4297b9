//! Why an event is in the dead queue: every reason Sluice or RabbitMQ gives,
//! as one enum (the value of `x-sluice-reason`, or of the newest `x-death`
//! entry's `reason` for a message RabbitMQ dead-lettered itself).

use std::fmt;
use std::str::FromStr;

/// Why an event is in the dead queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadReason {
    /// The receiver refused it for good (a permanent error).
    Rejected,
    /// It failed transiently after the last retry tier.
    AttemptsExhausted,
    /// No route matches its source and type.
    NoRoute,
    /// It is not a Sluice message (no id, no source or type header).
    Malformed,
    /// The gateway authenticated its body but could not parse it.
    Unparseable,
    /// RabbitMQ dead-lettered it: redelivered past the work queue's `x-delivery-limit`.
    DeliveryLimit,
    /// RabbitMQ dead-lettered it: its TTL ran out.
    Expired,
    /// RabbitMQ dead-lettered it: a queue's length limit pushed it out.
    Maxlen,
    /// No reason recorded, or one this version does not know.
    Unknown,
}

impl DeadReason {
    /// Every reason, in the order `dlq` lists them.
    pub const ALL: [Self; 9] = [
        Self::Rejected,
        Self::AttemptsExhausted,
        Self::NoRoute,
        Self::Malformed,
        Self::Unparseable,
        Self::DeliveryLimit,
        Self::Expired,
        Self::Maxlen,
        Self::Unknown,
    ];

    /// The reasons the worker gives (the gateway gives `unparseable`,
    /// RabbitMQ the rest).
    pub const BY_WORKER: [Self; 4] = [
        Self::Rejected,
        Self::AttemptsExhausted,
        Self::NoRoute,
        Self::Malformed,
    ];

    /// The names of [`DeadReason::ALL`], as written in headers and flags.
    pub const NAMES: [&'static str; 9] = [
        "rejected",
        "attempts_exhausted",
        "no_route",
        "malformed",
        "unparseable",
        "delivery_limit",
        "expired",
        "maxlen",
        "unknown",
    ];

    pub fn as_str(self) -> &'static str {
        let index = Self::ALL
            .iter()
            .position(|&reason| reason == self)
            .unwrap_or(Self::ALL.len() - 1);
        Self::NAMES[index]
    }

    /// The reason a header names; a name this version does not know reads
    /// as [`DeadReason::Unknown`] (a message from a newer version, or from
    /// another publisher, is still listed).
    pub fn from_header(text: &str) -> Self {
        text.parse().unwrap_or(Self::Unknown)
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`DeadReason`]; it lists the ones that are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a dead-letter reason: write one of {}", DeadReason::NAMES.join(", "))]
pub struct UnknownReason {
    pub given: String,
}

impl FromStr for DeadReason {
    type Err = UnknownReason;

    /// Exactly one of [`DeadReason::NAMES`]; anything else is an error.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .position(|&name| name == text)
            .map(|index| Self::ALL[index])
            .ok_or_else(|| UnknownReason {
                given: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_name() {
        for reason in DeadReason::ALL {
            assert_eq!(reason.as_str().parse::<DeadReason>(), Ok(reason));
            assert_eq!(DeadReason::from_header(reason.as_str()), reason);
        }
    }

    #[test]
    fn a_misspelt_reason_is_an_error_that_lists_the_names_but_reads_as_unknown_in_a_header() {
        let error = "rejectd".parse::<DeadReason>().unwrap_err();
        let text = error.to_string();
        assert!(text.contains("\"rejectd\""), "{text}");
        assert!(text.contains("attempts_exhausted, no_route"), "{text}");
        assert_eq!(DeadReason::from_header("rejectd"), DeadReason::Unknown);
    }
}
