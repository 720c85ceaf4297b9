use super::*;
use sluice_shared::message::{EventId, EventType, SourceName};
use std::time::Duration;

fn dispatcher(delays: &[u64]) -> Dispatcher {
    let tiers = delays
        .iter()
        .map(|&s| RetryTier {
            delay: Duration::from_secs(s),
            queue: format!("t.retry.{s}s"),
        })
        .collect();
    Dispatcher::new(
        RouteTable::default(),
        Client::new(),
        RetryPolicy::new(tiers),
        WorkerMetrics::new(std::iter::empty()).unwrap(),
        crate::copies::CopyCheck::new(&sluice_shared::config::Config::from_toml("").unwrap())
            .unwrap(),
        Topology::new(&sluice_shared::config::AmqpConfig::default()),
    )
}

fn event(failed_before: u32) -> SluiceEvent {
    SluiceEvent {
        id: EventId::as_published("evt-1"),
        source: SourceName::as_published("demo"),
        event_type: EventType::as_published("thing"),
        failed_before,
        request_id: None,
        copy: None,
        route: None,
        trace: None,
        received_at_ms: None,
    }
}

fn http(status: u16) -> Result<(), DeliveryError> {
    crate::delivery_error::classify_status(status, None)
}

#[test]
fn a_2xx_is_delivered() {
    assert_eq!(
        dispatcher(&[1]).verdict(&event(0), http(200)),
        Verdict::Delivered
    );
}

#[test]
fn a_503_is_retried_with_the_next_tier() {
    let verdict = dispatcher(&[1, 5]).verdict(&event(1), http(503));
    let Verdict::Retry {
        tier,
        attempts,
        last,
    } = verdict
    else {
        panic!("{verdict:?}");
    };
    assert_eq!(tier.queue, "t.retry.5s");
    assert_eq!(attempts, 2);
    assert_eq!(last.status, Some(503));
}

#[test]
fn a_404_is_dead_at_once_as_rejected() {
    let verdict = dispatcher(&[1, 5]).verdict(&event(0), http(404));
    assert_eq!(
        verdict,
        Verdict::Dead {
            reason: DeadReason::Rejected,
            attempts: 1,
            last: LastFailure {
                error: "HTTP 404".into(),
                status: Some(404)
            }
        }
    );
}

#[test]
fn a_503_after_the_last_tier_is_dead_as_exhausted() {
    let verdict = dispatcher(&[1, 5]).verdict(&event(2), http(503));
    assert!(matches!(
        verdict,
        Verdict::Dead {
            reason: DeadReason::AttemptsExhausted,
            attempts: 3,
            ..
        }
    ));
}

#[test]
fn a_dead_copy_is_routed_by_source_and_type_not_by_the_work_queue_name() {
    let message = QueuedMessage {
        routing_key: "sluice.work".into(),
        properties: Default::default(),
        body: Vec::new(),
    };
    assert_eq!(
        dead_routing_key(&message, Some(&event(3))).as_str(),
        "demo.thing"
    );
    assert_eq!(dead_routing_key(&message, None).as_str(), "sluice.work");
    let mut long = event(0);
    long.event_type = EventType::as_published(&"x".repeat(300));
    assert_eq!(
        dead_routing_key(&message, Some(&long)).as_str(),
        "sluice.work"
    );
}
