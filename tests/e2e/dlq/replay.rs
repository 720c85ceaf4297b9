//! `dlq replay` moves exactly the matching events back to the worker, and
//! `--dry-run` or a purge without `--yes` change nothing.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::QueueDeleteOptions;

use super::DeadFixture;
use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{RunningWorker, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_one_source_delivers_exactly_its_events_and_keeps_the_others_dead_in_order() {
    let fixture = DeadFixture::seed("dlq-replay", 100, "").await;
    let downstream = Downstream::start(Plan::Succeed).await;
    let config = fixture
        .env
        .config(&fixture.env.http_route(&downstream.url()));
    let worker = RunningWorker::start(config).await;

    let run = fixture.dlq(&["replay", "--source", "beta", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["matched"], 33);
    assert_eq!(report["replayed"], 33);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["left_in_queue"], 67);

    let beta: HashSet<String> = fixture.ids_of("beta").into_iter().collect();
    let all = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids().len() >= beta.len()
    })
    .await;
    assert!(all, "{} of 33 delivered", downstream.delivered_ids().len());
    assert_eq!(downstream.delivered_ids(), beta, "exactly the beta events");
    assert!(downstream.deliveries().iter().all(|d| d.signature_ok));
    worker.stop().await;

    let others: Vec<String> = fixture
        .ids
        .iter()
        .filter(|id| !beta.contains(*id))
        .cloned()
        .collect();
    assert_eq!(
        fixture.drain_and_delete().await,
        others,
        "the others stay dead, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_copy_has_its_attempts_reset_and_a_replayed_mark() {
    let fixture = DeadFixture::seed("dlq-mark", 6, "").await;
    let id = fixture.ids[4].clone();
    let run = fixture.dlq(&["replay", "--id", &id]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("replayed 1 of 1"), "{}", run.stdout);

    let broker = Broker::connect(&fixture.env.amqp_url).await;
    let copies = broker.drain(&fixture.env.topology().work_queue()).await;
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert_eq!(copy.routing_key, "beta.status.read");
    assert_eq!(
        copy.json()["id"],
        id.as_str(),
        "the envelope, byte for byte"
    );
    assert_eq!(copy.headers().attempt, Some(0));
    assert_eq!(copy.headers().replayed, Some(1));
    assert!(copy.headers().replayed_at_ms.is_some());
    assert_eq!(copy.headers().request_id, Some(format!("req-{id}")));
    assert_eq!(
        copy.headers().reason,
        None,
        "no dead headers on a live event"
    );
    assert_eq!(copy.headers().last_status, None);
    assert_eq!(*copy.properties.delivery_mode(), Some(2));

    let mut rest = fixture.ids.clone();
    rest.remove(4);
    assert_eq!(fixture.drain_and_delete().await, rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_purge_without_yes_change_nothing() {
    let fixture = DeadFixture::seed("dlq-dry", 30, "").await;
    let broker = Broker::connect(&fixture.env.amqp_url).await;
    let work = fixture.env.topology().work_queue();

    let dry = fixture.dlq(&["replay", "--dry-run", "--json"]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["picked"], 30);
    assert_eq!(dry.json()["replayed"], 0);
    assert_eq!(broker.count(&work).await, 0, "a dry run publishes nothing");
    assert_eq!(fixture.dead_count().await, 30);

    let refused = fixture.dlq(&["purge", "--source", "alpha"]).await;
    assert_eq!(refused.code, Some(64), "{}", refused.stderr);
    assert!(
        refused.stdout.contains("refused: nothing was removed"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("alpha"),
        "it shows what would go: {}",
        refused.stdout
    );
    let refused = fixture.dlq(&["purge", "--source", "alpha", "--json"]).await;
    assert_eq!(refused.json()["refused"], true);
    assert_eq!(refused.json()["matched"]["count"], 10);
    assert_eq!(
        fixture.dead_count().await,
        30,
        "a purge without --yes removes nothing"
    );

    let purged = fixture.dlq(&["purge", "--source", "alpha", "--yes"]).await;
    assert_eq!(purged.code, Some(0), "{}", purged.stderr);
    assert!(
        purged.stdout.contains("removed 10 events"),
        "{}",
        purged.stdout
    );
    let alpha = fixture.ids_of("alpha");
    let rest: Vec<String> = fixture
        .ids
        .iter()
        .filter(|id| !alpha.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        fixture.drain_and_delete().await,
        rest,
        "the dry run and the refusal kept the order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_die_during_a_replay_are_kept_after_the_ones_it_left_and_not_replayed() {
    let mut fixture = DeadFixture::seed("dlq-during", 20, "").await;
    let alpha = fixture.ids_of("alpha");
    // Seven events at five a second: well over a second of replay.
    let replay = fixture
        .command(&["replay", "--source", "alpha", "--rate", "5", "--json"])
        .spawn()
        .expect("spawn");
    let broker = Broker::connect(&fixture.env.amqp_url).await;
    let work = fixture.env.topology().work_queue();
    let moving = eventually(Duration::from_secs(10), || async {
        broker.count(&work).await >= 1
    })
    .await;
    assert!(moving, "the replay started moving events");
    for i in 20..23 {
        fixture.publish_dead(i).await;
    }
    let output = replay.wait_with_output().await.expect("the replay ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["replayed"], 7, "only the snapshot's alpha events");
    assert_eq!(report["left_in_queue"], 16, "13 left and 3 new");

    let copies: Vec<String> = broker
        .drain(&work)
        .await
        .iter()
        .map(|c| c.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(copies, alpha, "replayed in their dead-queue order");
    let mut expected: Vec<String> = fixture.ids[..20]
        .iter()
        .filter(|id| !alpha.contains(id))
        .cloned()
        .collect();
    expected.extend(fixture.ids[20..].iter().cloned());
    assert_eq!(fixture.drain_and_delete().await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_copies_rabbitmq_refuses_exits_1_and_keeps_them_dead() {
    let fixture = DeadFixture::seed("dlq-refused", 4, "").await;
    let topology = fixture.env.topology();
    // Nothing receives a copy any more, not even the alternate exchange's
    // queue: each comes back unroutable.
    unbind_work_queue(&fixture).await;
    fixture
        .channel()
        .queue_delete(
            topology.unroutable().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("the unroutable queue is deleted");
    let run = fixture.dlq(&["replay", "--json"]).await;
    assert_eq!(
        run.code,
        Some(1),
        "part of a replay is not success: {}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["picked"], 4);
    assert_eq!(report["replayed"], 0);
    assert_eq!(report["failed"], 4);
    assert_eq!(report["left_in_queue"], 4);
    let text = fixture.dlq(&["replay"]).await;
    assert_eq!(text.code, Some(1), "{}", text.stderr);
    assert!(
        text.stdout.contains("NOT EVERYTHING MOVED"),
        "{}",
        text.stdout
    );
    let ids = fixture.ids.clone();
    let connection = lapin::Connection::connect(
        &fixture.env.amqp_url,
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ");
    topology
        .declare(&connection)
        .await
        .expect("the topology, whole again");
    assert_eq!(
        fixture.drain_and_delete().await,
        ids,
        "still dead, in order"
    );
}

async fn unbind_work_queue(fixture: &DeadFixture) {
    Broker::connect(&fixture.env.amqp_url)
        .await
        .unbind_work_queue(&fixture.env.topology())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_past_a_deleted_binding_keeps_its_copies_in_the_unroutable_queue() {
    let fixture = DeadFixture::seed("dlq-unroutable", 3, "").await;
    let topology = fixture.env.topology();
    unbind_work_queue(&fixture).await;
    let run = fixture.dlq(&["replay", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json()["replayed"], 3);
    let broker = sluice_testkit::broker::Broker::connect(&fixture.env.amqp_url).await;
    let kept: Vec<String> = broker
        .drain(&topology.unroutable())
        .await
        .iter()
        .map(|m| {
            m.properties
                .message_id()
                .as_ref()
                .map_or("-".into(), |s| s.to_string())
        })
        .collect();
    assert_eq!(
        kept, fixture.ids,
        "the copies wait to be put back, none lost"
    );
    assert!(
        fixture.drain_and_delete().await.is_empty(),
        "none is dead any more"
    );
}
