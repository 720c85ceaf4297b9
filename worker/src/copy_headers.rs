//! The properties of the copies an event becomes: one per matching route
//! (into the route's queue, also when an event goes back there unattempted),
//! one for a retry tier, one for the dead queue.
//!
//! A copy keeps the original's properties (persistent, `message_id`,
//! `content_type`, timestamp) and headers, and gains the story of its
//! failures: the attempt count, the last error and status, the first and last
//! failure times; a dead copy also says why it died. Pure functions over
//! [`MessageHeaders`], so the header arithmetic is unit-tested without a broker.

use lapin::BasicProperties;
use sluice_shared::message::{DeadReason, MessageHeaders, copy_properties};

use crate::delivery_error::DeliveryError;

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

/// Properties of `route`'s copy of an event, put in the route's queue: the
/// original's, naming the route (`x-sluice-route`), so its retry and dead
/// copies keep the name and come back to that route alone.
pub fn for_route(original: &BasicProperties, route: &str) -> BasicProperties {
    let mut headers = copied_headers(original);
    headers.route = Some(route.to_owned());
    copy_properties(original, headers)
}

/// Properties of the copy parked in a retry tier after `attempts_made` attempts.
pub fn for_retry(
    original: &BasicProperties,
    attempts_made: u32,
    last: &LastFailure,
    now_ms: i64,
) -> BasicProperties {
    let mut headers = copied_headers(original);
    headers.attempt = Some(attempts_made.into());
    record_failure(&mut headers, last, now_ms);
    copy_properties(original, headers)
}

/// Properties of the copy published to the dead exchange.
pub fn for_dead(
    original: &BasicProperties,
    reason: DeadReason,
    attempts_made: u32,
    last: &LastFailure,
    now_ms: i64,
) -> BasicProperties {
    let mut headers = copied_headers(original);
    headers.reason = Some(reason);
    headers.attempts = Some(attempts_made.into());
    record_failure(&mut headers, last, now_ms);
    copy_properties(original, headers)
}

/// The original's headers; a copy is a new message, so RabbitMQ's delivery
/// count starts again (or it would reach `x-delivery-limit` early).
fn copied_headers(original: &BasicProperties) -> MessageHeaders {
    MessageHeaders {
        delivery_count: None,
        ..MessageHeaders::of(original)
    }
}

fn record_failure(headers: &mut MessageHeaders, last: &LastFailure, now_ms: i64) {
    headers.first_failure_ms = Some(headers.first_failure_ms.unwrap_or(now_ms));
    headers.last_failure_ms = Some(now_ms);
    headers.last_error = Some(last.error.clone());
    // A status from an earlier attempt would lie about this one (a timeout).
    headers.last_status = last.status.map(i64::from);
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use sluice_shared::envelope::CONTENT_TYPE;
    use sluice_shared::message::{PERSISTENT, headers};

    fn original(extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut table = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(LongString::from(v));
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

    #[test]
    fn a_retry_copy_keeps_the_identity_and_counts_the_attempt() {
        let copy = for_retry(&original(vec![]), 1, &failure(Some(503)), 5_000);
        assert_eq!(copy.message_id().as_ref().unwrap().as_str(), "evt-1");
        assert_eq!(copy.content_type().as_ref().unwrap().as_str(), CONTENT_TYPE);
        assert_eq!(copy.timestamp(), &Some(1_700_000_000));
        assert_eq!(copy.delivery_mode(), &Some(2));
        let h = MessageHeaders::of(&copy);
        assert_eq!(h.source.as_ref().map(|s| s.as_str()), Some("demo"));
        assert_eq!(h.attempt, Some(1));
        assert_eq!(h.last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(h.last_status, Some(503));
        assert_eq!(h.first_failure_ms, Some(5_000));
        assert_eq!(h.last_failure_ms, Some(5_000));
        assert_eq!(h.reason, None);
    }

    #[test]
    fn the_first_failure_time_survives_later_failures() {
        let before = original(vec![(
            headers::FIRST_FAILURE_MS,
            AMQPValue::LongLongInt(1_000),
        )]);
        let h = MessageHeaders::of(&for_retry(&before, 3, &failure(Some(500)), 9_000));
        assert_eq!(h.first_failure_ms, Some(1_000));
        assert_eq!(h.last_failure_ms, Some(9_000));
    }

    #[test]
    fn a_failure_without_status_drops_the_stale_one() {
        let before = original(vec![(headers::LAST_STATUS, AMQPValue::LongLongInt(503))]);
        let h = MessageHeaders::of(&for_retry(&before, 2, &failure(None), 9_000));
        assert_eq!(h.last_status, None);
        assert_eq!(h.last_error.as_deref(), Some("timed out after 10s"));
    }

    #[test]
    fn the_quorum_delivery_count_is_not_copied() {
        let before = original(vec![(headers::DELIVERY_COUNT, AMQPValue::LongLongInt(4))]);
        let copy = for_retry(&before, 1, &failure(Some(503)), 1);
        let table = copy.headers().clone().unwrap_or_default();
        assert!(!table.inner().contains_key(headers::DELIVERY_COUNT));
        assert!(table.inner().contains_key(headers::SOURCE));
    }

    #[test]
    fn a_route_copy_names_its_route_keeps_the_rest_and_its_later_copies_keep_the_name() {
        let before = original(vec![(headers::DELIVERY_COUNT, AMQPValue::LongLongInt(2))]);
        let copy = for_route(&before, "crm");
        assert_eq!(copy.message_id().as_ref().unwrap().as_str(), "evt-1");
        assert_eq!(copy.delivery_mode(), &Some(PERSISTENT));
        let h = MessageHeaders::of(&copy);
        assert_eq!(h.route.as_deref(), Some("crm"));
        assert_eq!(h.attempt, Some(0));
        assert_eq!(h.source.as_ref().map(|s| s.as_str()), Some("demo"));
        assert_eq!(h.delivery_count, None, "a route copy is a new message");
        let retry = for_retry(&copy, 1, &failure(Some(503)), 5);
        assert_eq!(MessageHeaders::of(&retry).route.as_deref(), Some("crm"));
        let dead = for_dead(&retry, DeadReason::Rejected, 2, &failure(Some(400)), 6);
        assert_eq!(MessageHeaders::of(&dead).route.as_deref(), Some("crm"));
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
        let h = MessageHeaders::of(&copy);
        assert_eq!(h.reason, Some(DeadReason::Rejected));
        assert_eq!(h.attempts, Some(1));
        assert_eq!(h.last_status, Some(404));
        assert_eq!(h.first_failure_ms, Some(7));
        assert_eq!(h.event_type.as_ref().map(|t| t.as_str()), Some("thing"));
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
        assert_eq!(
            MessageHeaders::of(&copy).reason,
            Some(DeadReason::Malformed)
        );
        assert_eq!(copy.delivery_mode(), &Some(2));
    }

    #[test]
    fn an_unreadable_header_of_a_malformed_message_travels_with_its_dead_copy() {
        let before = original(vec![(headers::ATTEMPT, AMQPValue::Boolean(true))]);
        let copy = for_dead(&before, DeadReason::Malformed, 0, &failure(None), 7);
        let table = copy.headers().clone().unwrap_or_default();
        assert_eq!(table.inner()[headers::ATTEMPT], AMQPValue::Boolean(true));
    }
}
