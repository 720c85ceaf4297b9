//! The downstream misbehaves under load: it hangs, flaps, or answers 429
//! with `Retry-After`. The gateway is untouched; the worker must keep every
//! event (delivered later, or in the dead queue after its last retry) and
//! wait as long as the downstream asked.

use std::time::{Duration, Instant};

use sluice_testkit::downstream::{Attempt, Plan};
use sluice_testkit::under_load::{Setup, UnderLoad};

/// How long each downstream fault lasts.
const FAULT: Duration = Duration::from_secs(6);

/// Runs the load, then `plan` for [`FAULT`], then a downstream that accepts
/// everything; returns every attempt the downstream saw.
async fn under(setup: Setup, plan: Plan, label: &str) -> Vec<Attempt> {
    let stage = UnderLoad::start(setup).await;
    stage.run_for(Duration::from_secs(2)).await;
    stage.downstream.set_plan(plan);
    tokio::time::sleep(FAULT).await;
    stage.downstream.set_plan(Plan::Succeed);
    let end = Instant::now();
    let downstream = stage.downstream.clone();
    let report = stage.finish(end).await;
    let attempts = downstream.attempt_log();
    println!("downstream {label} for {FAULT:?}: {report}");
    report.assert_promises();
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_hangs_under_load_loses_nothing() {
    let attempts = under(Setup::new("dshang"), Plan::Hang, "hanging").await;
    assert!(
        attempts.iter().any(|a| a.status == 0),
        "deliveries were held unanswered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_flaps_under_load_loses_nothing() {
    let plan = Plan::Flap(Duration::from_millis(500));
    let attempts = under(Setup::new("dsflap"), plan, "flapping every 500 ms").await;
    let failed = attempts.iter().filter(|a| a.status == 503).count();
    let accepted = attempts.iter().filter(|a| a.status == 200).count();
    assert!(
        failed > 0 && accepted > 0,
        "it went down and up: {failed} failed, {accepted} accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_answering_429_is_not_tried_again_before_its_retry_after() {
    let setup = Setup {
        // A tier as long as the Retry-After, so the worker can honour it.
        retry_delays: r#"["200ms", "1s", "2s"]"#,
        ..Setup::new("ds429")
    };
    let attempts = under(setup, Plan::TooMany(1), "answering 429 Retry-After: 1").await;
    let refused: Vec<&Attempt> = attempts.iter().filter(|a| a.status == 429).collect();
    assert!(!refused.is_empty(), "deliveries were answered 429");
    for first in refused {
        let next = attempts
            .iter()
            .find(|a| a.id == first.id && a.at > first.at);
        if let Some(next) = next {
            let waited = next.at - first.at;
            assert!(
                waited >= Duration::from_secs(1),
                "an event was tried again {waited:?} after a 429 asking for 1 s"
            );
        }
    }
}
