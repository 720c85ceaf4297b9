//! The properties of the copies a failed event becomes: one for a retry tier,
//! one for the dead queue.
//!
//! A copy keeps the original's properties (persistent, `message_id`,
//! `content_type`, timestamp) and headers, and gains the story of its
//! failures: the attempt count, the last error and status, the first and last
//! failure times; a dead copy also says why it died. Pure functions, so the
//! header arithmetic is unit-tested without a broker.

use lapin::BasicProperties;
use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use sluice_shared::envelope::headers;

use crate::delivery_error::DeliveryError;
use crate::message::integer;
use crate::retry::DeadReason;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Set by a quorum queue on every redelivery: a copy is a new message and
/// must start counting from zero, or it would reach `x-delivery-limit` early.
pub(crate) const DELIVERY_COUNT: &str = "x-delivery-count";

/// The last failure, as it is recorded in headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    /// A short description (`HTTP 503`, `no route matches demo.thing`).
    pub error: String,
    /// The HTTP status downstream answered, if it answered.
    pub status: Option<u16>,
}

impl From<&DeliveryError> for LastFailure {
    fn from(error: &DeliveryError) -> Self {
        Self {
            error: error.description().to_owned(),
            status: error.status(),
        }
    }
}

/// Header names to values, as a copy is being assembled.
type Headers = BTreeMap<ShortString, AMQPValue>;

/// Properties of the copy parked in a retry tier after `attempts_made` attempts.
pub fn for_retry(
    original: &BasicProperties,
    attempts_made: u32,
    last: &LastFailure,
    now_ms: i64,
) -> BasicProperties {
    let mut table = copied_headers(original);
    table.insert(
        headers::ATTEMPT.into(),
        AMQPValue::LongLongInt(attempts_made.into()),
    );
    record_failure(&mut table, last, now_ms);
    persistent_copy(original, table)
}

/// Properties of the copy published to the dead exchange.
pub fn for_dead(
    original: &BasicProperties,
    reason: DeadReason,
    attempts_made: u32,
    last: &LastFailure,
    now_ms: i64,
) -> BasicProperties {
    let mut table = copied_headers(original);
    table.insert(headers::REASON.into(), text(reason.as_str()));
    table.insert(
        headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(attempts_made.into()),
    );
    record_failure(&mut table, last, now_ms);
    persistent_copy(original, table)
}

fn copied_headers(original: &BasicProperties) -> Headers {
    let mut table = original
        .headers()
        .as_ref()
        .map(|table| table.inner().clone())
        .unwrap_or_default();
    table.remove(DELIVERY_COUNT);
    table
}

fn record_failure(table: &mut Headers, last: &LastFailure, now_ms: i64) {
    let first = table
        .get(headers::FIRST_FAILURE_MS)
        .and_then(integer)
        .unwrap_or(now_ms);
    table.insert(
        headers::FIRST_FAILURE_MS.into(),
        AMQPValue::LongLongInt(first),
    );
    table.insert(
        headers::LAST_FAILURE_MS.into(),
        AMQPValue::LongLongInt(now_ms),
    );
    table.insert(headers::LAST_ERROR.into(), text(&last.error));
    match last.status {
        Some(status) => {
            table.insert(
                headers::LAST_STATUS.into(),
                AMQPValue::LongLongInt(status.into()),
            );
        }
        // A status from an earlier attempt would lie about this one (a timeout).
        None => {
            table.remove(headers::LAST_STATUS);
        }
    }
}

fn persistent_copy(original: &BasicProperties, table: Headers) -> BasicProperties {
    original
        .clone()
        .with_delivery_mode(PERSISTENT)
        .with_headers(FieldTable::from(table))
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{header_integer, header_text};
    use sluice_shared::envelope::CONTENT_TYPE;

    fn original(extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut table = FieldTable::default();
        table.insert(headers::SOURCE.into(), text("demo"));
        table.insert(headers::TYPE.into(), text("thing"));
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongInt(0));
        for (name, value) in extra {
            table.insert(name.into(), value);
        }
        BasicProperties::default()
            .with_message_id("evt-1".into())
            .with_content_type(CONTENT_TYPE.into())
            .with_timestamp(1_700_000_000)
            .with_delivery_mode(PERSISTENT)
            .with_headers(table)
    }

    fn failure(status: Option<u16>) -> LastFailure {
        LastFailure {
            error: status.map_or("timed out after 10s".into(), |s| format!("HTTP {s}")),
            status,
        }
    }

    fn table(properties: &BasicProperties) -> FieldTable {
        properties.headers().clone().unwrap()
    }

    #[test]
    fn a_retry_copy_keeps_the_identity_and_counts_the_attempt() {
        let copy = for_retry(&original(vec![]), 1, &failure(Some(503)), 5_000);
        assert_eq!(copy.message_id().as_ref().unwrap().as_str(), "evt-1");
        assert_eq!(copy.content_type().as_ref().unwrap().as_str(), CONTENT_TYPE);
        assert_eq!(copy.timestamp(), &Some(1_700_000_000));
        assert_eq!(copy.delivery_mode(), &Some(2));
        let t = table(&copy);
        assert_eq!(header_text(&t, headers::SOURCE).as_deref(), Some("demo"));
        assert_eq!(header_integer(&t, headers::ATTEMPT), Some(1));
        assert_eq!(
            header_text(&t, headers::LAST_ERROR).as_deref(),
            Some("HTTP 503")
        );
        assert_eq!(header_integer(&t, headers::LAST_STATUS), Some(503));
        assert_eq!(header_integer(&t, headers::FIRST_FAILURE_MS), Some(5_000));
        assert_eq!(header_integer(&t, headers::LAST_FAILURE_MS), Some(5_000));
    }

    #[test]
    fn the_first_failure_time_survives_later_failures() {
        let before = original(vec![(
            headers::FIRST_FAILURE_MS,
            AMQPValue::LongLongInt(1_000),
        )]);
        let t = table(&for_retry(&before, 3, &failure(Some(500)), 9_000));
        assert_eq!(header_integer(&t, headers::FIRST_FAILURE_MS), Some(1_000));
        assert_eq!(header_integer(&t, headers::LAST_FAILURE_MS), Some(9_000));
    }

    #[test]
    fn a_failure_without_status_drops_the_stale_one() {
        let before = original(vec![(headers::LAST_STATUS, AMQPValue::LongLongInt(503))]);
        let t = table(&for_retry(&before, 2, &failure(None), 9_000));
        assert_eq!(header_integer(&t, headers::LAST_STATUS), None);
        assert_eq!(
            header_text(&t, headers::LAST_ERROR).as_deref(),
            Some("timed out after 10s")
        );
    }

    #[test]
    fn the_quorum_delivery_count_is_not_copied() {
        let before = original(vec![(DELIVERY_COUNT, AMQPValue::LongLongInt(4))]);
        let t = table(&for_retry(&before, 1, &failure(Some(503)), 1));
        assert!(!t.contains_key(DELIVERY_COUNT));
    }

    #[test]
    fn a_dead_copy_says_why_and_how_many_attempts() {
        let copy = for_dead(
            &original(vec![]),
            DeadReason::Rejected,
            1,
            &failure(Some(404)),
            7,
        );
        let t = table(&copy);
        assert_eq!(
            header_text(&t, headers::REASON).as_deref(),
            Some("rejected")
        );
        assert_eq!(header_integer(&t, headers::ATTEMPTS), Some(1));
        assert_eq!(header_integer(&t, headers::LAST_STATUS), Some(404));
        assert_eq!(header_integer(&t, headers::FIRST_FAILURE_MS), Some(7));
        assert_eq!(header_text(&t, headers::TYPE).as_deref(), Some("thing"));
    }

    #[test]
    fn a_message_without_headers_still_gets_a_dead_copy() {
        let copy = for_dead(
            &BasicProperties::default(),
            DeadReason::Malformed,
            0,
            &LastFailure {
                error: "the message has no headers".into(),
                status: None,
            },
            7,
        );
        let t = table(&copy);
        assert_eq!(
            header_text(&t, headers::REASON).as_deref(),
            Some("malformed")
        );
        assert_eq!(copy.delivery_mode(), &Some(2));
    }
}
