//! Passes over more dead events than one consumer holds: every event seen,
//! removals exact, order kept.
//!
//! In CI, 2,500 events: more than the 2,000 a quorum queue gives a consumer
//! with prefetch 0, and, with `dlq.scan_batch = 300`, nine batches. The same
//! at 100,000 events is `make dlq-scale` (ignored here: about two minutes),
//! which also prints how long each command took (docs/benchmarks.md).

use std::io::BufRead;
use std::time::Instant;

use super::{DeadFixture, SOURCES};
use sluice_testkit::broker::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_over_many_batches_sees_every_event_and_removes_exactly_what_matched() {
    let fixture = DeadFixture::seed("dlq-batches", 2_500, "").await;
    // One batch of 2,500: a prefetch of 0 would stop at 2,000.
    let whole = fixture.dlq(&["stats", "--json"]).await;
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
    assert_eq!(whole.json()["count"], 2_500, "{}", whole.stdout);

    let stats = fixture.dlq_in_batches(300, &["stats", "--json"]).await;
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    assert_eq!(stats.json()["in_queue"], 2_500);
    assert_eq!(stats.json()["count"], 2_500);

    // Every third event, scattered over all nine batches.
    let purge = ["purge", "--source", "beta", "--yes", "--json"];
    let purged = fixture.dlq_in_batches(300, &purge).await;
    assert_eq!(purged.code, Some(0), "{}", purged.stderr);
    let beta = fixture.ids_of("beta");
    assert_eq!(purged.json()["removed"], beta.len());
    assert_eq!(fixture.dead_count().await as usize, 2_500 - beta.len());

    let left = fixture.drain_and_delete().await;
    let expected: Vec<String> = fixture_order_without(&left, &beta);
    assert_eq!(left, expected, "the rest stays, in its order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_over_many_batches_moves_every_event() {
    // A replay acknowledges while it reads: each acknowledgement frees a
    // batch's prefetch room, and the queue fills it with the next batch's
    // messages before the batch's consumer is cancelled. Reading on to the
    // next batch without them stopped a replay of 100,000 at 60,000.
    let fixture = DeadFixture::seed("dlq-replay-batches", 2_500, "").await;
    let replay = fixture.dlq_in_batches(300, &["replay", "--json"]).await;
    assert_moved_whole(&fixture, &replay, 2_500).await;
    fixture.delete_topology().await;
}

/// A replay that exited 0, moved all `events` and left none dead.
async fn assert_moved_whole(fixture: &DeadFixture, replay: &super::Run, events: usize) {
    assert_eq!(replay.code, Some(0), "{}\n{}", replay.stdout, replay.stderr);
    let report = replay.json();
    assert_eq!(report["replayed"], events, "{report}");
    assert_eq!(report["left_in_queue"], 0, "{report}");
    let broker = Broker::connect(&fixture.env.amqp_url).await;
    let work = broker.count(&fixture.env.topology().work_queue()).await;
    assert_eq!(work as usize, events, "every copy is in the work queue");
    assert_eq!(fixture.dead_count().await, 0);
}

/// `left` must equal the seeded order minus `removed`; rebuilt from the ids.
fn fixture_order_without(left: &[String], removed: &[String]) -> Vec<String> {
    let prefix = left
        .first()
        .and_then(|id| id.rsplit_once('-'))
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default();
    (0..2_500)
        .map(|i| format!("{prefix}-{i:03}"))
        .filter(|id| !removed.contains(id))
        .collect()
}

/// 100,000 dead events: stats, peek, a filtered export and a full replay,
/// each timed. `make dlq-scale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100,000 events, about two minutes: make dlq-scale"]
async fn a_hundred_thousand_dead_events_are_counted_exported_and_replayed_whole() {
    const EVENTS: usize = 100_000;
    let started = Instant::now();
    let fixture = DeadFixture::seed("dlq-scale", EVENTS, "").await;
    eprintln!("seeded {EVENTS} dead events in {:.1} s", secs(started));

    let timed = Instant::now();
    let stats = fixture.dlq(&["stats", "--json"]).await;
    let stats_s = secs(timed);
    eprintln!("stats: {stats_s:.2} s");
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    assert_eq!(stats.json()["in_queue"], EVENTS);
    assert_eq!(stats.json()["count"], EVENTS);

    let timed = Instant::now();
    let peek = fixture.dlq(&["peek", "--limit", "20", "--json"]).await;
    let peek_s = secs(timed);
    eprintln!("peek --limit 20: {peek_s:.2} s");
    assert_eq!(peek.code, Some(0), "{}", peek.stderr);
    assert_eq!(super::peeked_ids(&peek.json()), fixture.ids[..20].to_vec());

    let out = fixture.env.dir.path().join("status.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let timed = Instant::now();
    let export = fixture
        .dlq(&["export", "--type", "status.*", "--out", &out_arg, "--json"])
        .await;
    let export_s = secs(timed);
    eprintln!("export --type 'status.*': {export_s:.2} s");
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    let beta = fixture.ids_of(SOURCES[1].0);
    let lines = std::io::BufReader::new(std::fs::File::open(&out).expect("the export"))
        .lines()
        .count();
    assert_eq!(lines, beta.len(), "one line per status.read event");
    assert_eq!(
        fixture.dead_count().await as usize,
        EVENTS,
        "export removes nothing"
    );

    let timed = Instant::now();
    let replay = fixture.dlq(&["replay", "--json"]).await;
    let replay_s = secs(timed);
    assert_moved_whole(&fixture, &replay, EVENTS).await;

    eprintln!(
        "100,000 dead events: stats {stats_s:.2} s, peek --limit 20 {peek_s:.2} s, \
         export --type 'status.*' ({} lines) {export_s:.2} s, replay {replay_s:.2} s ({:.0} events/s)",
        beta.len(),
        EVENTS as f64 / replay_s
    );
    fixture.delete_topology().await;
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
