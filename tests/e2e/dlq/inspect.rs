//! `dlq stats`, `dlq peek` and `dlq export` read 100 dead events from three
//! sources and leave the queue exactly as it was: count and order.

use std::io::BufRead;

use super::{DeadFixture, FIRST_FAILURE_MS, peeked_ids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_hundred_dead_events_by_source_type_reason_and_status() {
    let fixture = DeadFixture::seed("dlq-stats", 100, "").await;
    let run = fixture.dlq(&["stats", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let stats = run.json();
    assert_eq!(stats["in_queue"], 100);
    assert_eq!(stats["count"], 100);
    assert_eq!(stats["raw"], 0);
    assert_eq!(
        stats["by_source"],
        serde_json::json!({"alpha": 34, "beta": 33, "gamma": 33})
    );
    assert_eq!(
        stats["by_type"],
        serde_json::json!({"message.text": 34, "status.read": 33, "contact.updated": 33})
    );
    assert_eq!(
        stats["by_reason"],
        serde_json::json!({"rejected": 20, "attempts_exhausted": 80})
    );
    assert_eq!(
        stats["by_status"],
        serde_json::json!({"400": 20, "503": 80})
    );
    assert_eq!(stats["oldest"], "2026-01-01T00:00:00.000Z");
    assert_eq!(stats["newest"], "2026-01-01T00:01:39.000Z");

    let filtered = fixture
        .dlq(&["stats", "--json", "--source", "beta", "--status", "5xx"])
        .await;
    assert_eq!(
        filtered.json()["count"],
        27,
        "33 beta events, 6 of them rejected with 400"
    );
    let text = fixture.dlq(&["stats"]).await;
    assert!(
        text.stdout.contains("by source") && text.stdout.contains("alpha"),
        "{}",
        text.stdout
    );

    assert_eq!(fixture.dead_count().await, 100, "stats removes nothing");
    let ids = fixture.ids.clone();
    assert_eq!(
        fixture.drain_and_delete().await,
        ids,
        "stats keeps the order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_twice_shows_the_same_first_events_and_leaves_count_and_order() {
    let fixture = DeadFixture::seed("dlq-peek", 100, "").await;
    let first = fixture.dlq(&["peek", "--limit", "5", "--json"]).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let second = fixture.dlq(&["peek", "--limit", "5", "--json"]).await;
    assert_eq!(peeked_ids(&first.json()), fixture.ids[..5]);
    assert_eq!(
        peeked_ids(&second.json()),
        fixture.ids[..5],
        "the second peek sees the same head"
    );
    assert_eq!(fixture.dead_count().await, 100);

    let event = &first.json()["events"][1];
    assert_eq!(event["source"], "beta");
    assert_eq!(event["type"], "status.read");
    assert_eq!(event["reason"], "attempts_exhausted");
    assert_eq!(event["last_error"], "HTTP 503");
    assert_eq!(event["attempts"], 4);
    assert_eq!(event["last_failure"], "2026-01-01T00:00:01.000Z");
    assert!(
        event["envelope"].get("data").is_none(),
        "no payload without --show-data"
    );

    let beta = fixture
        .dlq(&["peek", "--limit", "3", "--source", "beta", "--json"])
        .await;
    assert_eq!(peeked_ids(&beta.json()), fixture.ids_of("beta")[..3]);
    let shown = fixture.dlq(&["peek", "--limit", "1", "--show-data"]).await;
    assert!(
        shown.stdout.contains(r#"data: {"n":0}"#),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains(&fixture.ids[0]), "{}", shown.stdout);

    assert_eq!(fixture.dead_count().await, 100, "peeking removes nothing");
    let ids = fixture.ids.clone();
    assert_eq!(
        fixture.drain_and_delete().await,
        ids,
        "four peeks later, the order is the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_one_valid_json_line_per_dead_event_and_removes_only_with_remove() {
    let fixture = DeadFixture::seed("dlq-export", 100, "").await;
    let out = fixture.env.dir.path().join("dead.jsonl");
    let out_arg = out.to_str().expect("a UTF-8 path");
    let run = fixture.dlq(&["export", "--out", out_arg, "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json()["exported"], 100);
    assert_eq!(run.json()["removed"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 100);
    for (line, id) in lines.iter().zip(&fixture.ids) {
        assert_eq!(line["id"], id.as_str());
        assert_eq!(line["envelope"]["id"], id.as_str(), "the envelope, whole");
        assert!(line["envelope"]["data"].is_object(), "with its data");
        assert!(
            line["headers"]["x-sluice-reason"].is_string(),
            "and the dead headers"
        );
    }
    assert_eq!(lines[3]["last_failure"], "2026-01-01T00:00:03.000Z");
    assert_eq!(
        lines[3]["headers"]["x-sluice-last-failure-ms"],
        FIRST_FAILURE_MS + 3000
    );
    assert_eq!(
        fixture.dead_count().await,
        100,
        "export without --remove removes nothing"
    );

    let again = fixture.dlq(&["export", "--out", out_arg]).await;
    assert_eq!(
        again.code,
        Some(64),
        "an export never overwrites: {}",
        again.stderr
    );
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let gamma_out = fixture.env.dir.path().join("gamma.jsonl");
    let gamma_arg = gamma_out.to_str().expect("a UTF-8 path");
    let run = fixture
        .dlq(&[
            "export", "--out", gamma_arg, "--source", "gamma", "--remove",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("removed 33"), "{}", run.stdout);
    let gamma: Vec<String> = json_lines(&gamma_out)
        .iter()
        .map(|l| l["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(gamma, fixture.ids_of("gamma"));
    let rest: Vec<String> = fixture
        .ids
        .iter()
        .filter(|id| !gamma.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        fixture.drain_and_delete().await,
        rest,
        "the others stay, in order"
    );
}

fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let file = std::fs::File::open(path).expect("the export file");
    std::io::BufReader::new(file)
        .lines()
        .map(|line| serde_json::from_str(&line.expect("a line")).expect("each line is JSON"))
        .collect()
}

#[tokio::test]
async fn a_prefix_without_a_dead_queue_is_an_error_not_an_empty_queue() {
    let env = sluice_testkit::TestEnv::new("dlq-missing");
    let path = env.dir.path().join("sluice.toml");
    std::fs::write(&path, env.config_toml("")).expect("config file");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .arg("--config")
        .arg(&path)
        .args(["dlq", "stats"])
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("`{}.dead` does not exist", env.prefix)),
        "{stderr}"
    );
    assert!(stderr.contains("amqp.prefix"), "{stderr}");
}

#[tokio::test]
async fn a_result_that_cannot_be_written_to_stdout_exits_1() {
    let fixture = DeadFixture::seed("dlq-stdout", 3, "").await;
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = fixture
        .command(&["stats", "--json"])
        .stdout(full)
        .spawn()
        .expect("the binary starts")
        .wait_with_output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing its result to stdout failed"),
        "{stderr}"
    );
    let ids = fixture.ids.clone();
    assert_eq!(fixture.drain_and_delete().await, ids);
}
