//! A replay killed with SIGKILL half-way loses nothing: run again, every
//! event ends delivered (at worst twice: counted and reported), none lost.
//! While it runs, another `dlq` command is refused by the lock.

use std::collections::HashSet;
use std::time::Duration;

use super::DeadFixture;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{RunningWorker, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_half_way_then_run_again_loses_no_event() {
    let fixture = DeadFixture::seed("dlq-kill", 100, "").await;
    let downstream = Downstream::start(Plan::Succeed).await;
    let config = fixture
        .env
        .config(&fixture.env.http_route(&downstream.url()));
    let worker = RunningWorker::start(config).await;

    // Ten a second: the kill lands in the middle of the moves.
    let mut first = fixture
        .command(&["replay", "--rate", "10"])
        .spawn()
        .expect("spawn");
    // The pass holds every dead message unacknowledged, so the queue's ready
    // count says nothing until it ends: watch the deliveries instead.
    let started = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids().len() >= 5
    })
    .await;
    assert!(started, "the replay moves events");
    let locked = fixture.dlq(&["stats"]).await;
    assert_eq!(locked.code, Some(1), "{}", locked.stderr);
    assert!(
        locked.stderr.contains("another dlq command"),
        "{}",
        locked.stderr
    );

    let half = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids().len() >= 50
    })
    .await;
    assert!(half, "half the events moved");
    first.start_kill().expect("SIGKILL");
    let status = first.wait().await.expect("the replay ends");
    assert_eq!(status.code(), None, "killed by a signal, not finished");
    let delivered_at_kill = downstream.delivered_ids().len();

    let second = fixture.dlq(&["replay", "--json"]).await;
    let report = serde_json::from_str::<serde_json::Value>(&second.stdout).unwrap_or_default();
    let remaining = report["replayed"].as_u64().unwrap_or(0);
    if second.code != Some(0) || report["left_in_queue"] != 0 || !(40..=60).contains(&remaining) {
        // What is left says why: its headers tell a returned original from a
        // copy that died again, and how often it was delivered.
        panic!(
            "the second run replays what the first left, and nothing stays dead: exit {:?}, \
             report {report}, stderr {}\nleft in the dead queue:\n{}",
            second.code,
            second.stderr,
            fixture.leftovers().await
        );
    }

    let every: HashSet<String> = fixture.ids.iter().cloned().collect();
    let all = eventually(Duration::from_secs(30), || async {
        downstream.delivered_ids().len() == every.len()
    })
    .await;
    assert!(all, "{} of 100 delivered", downstream.delivered_ids().len());
    assert_eq!(
        downstream.delivered_ids(),
        every,
        "every event delivered, none lost"
    );
    let duplicates = downstream.deliveries().len() - every.len();
    eprintln!(
        "replay SIGKILLed after {delivered_at_kill} deliveries, {remaining} replayed by the second run: \
         {duplicates} event(s) delivered twice"
    );
    assert!(
        duplicates <= 1,
        "one event at most is between its confirm and its ack: {duplicates}"
    );
    worker.stop().await;
    let left = fixture.leftovers().await;
    assert!(
        left.starts_with("0 message(s)"),
        "nothing is dead any more: {left}"
    );
    assert!(fixture.drain_and_delete().await.is_empty());
}
