//! `POST /dlq/replay` refuses a `rate` outside its floor and ceiling (and a
//! number JSON cannot carry) with a JSON 400, replaying nothing.

use serde_json::json;

use super::http::{DlqHttp, assert_refused};
use sluice_testkit::broker::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_rate_out_of_range_is_a_json_400_and_replays_nothing() {
    let api = DlqHttp::start("dlq-http-rate", 5).await;
    for rate in [
        json!(-1),
        json!(0),
        json!(-0.0),
        json!(1e-300),
        json!(0.05),
        json!(1e9),
    ] {
        let answer = api.post("/dlq/replay", json!({ "rate": rate })).await;
        assert_refused(&answer, 400, "invalid_request", "from 0.1 to 100000");
    }
    // JSON has no NaN or infinity: such a body is refused before any rate check.
    for body in [
        r#"{"rate": NaN}"#,
        r#"{"rate": Infinity}"#,
        r#"{"rate": -Infinity}"#,
        r#"{"rate": 1e999}"#,
    ] {
        let answer = api.post_text("/dlq/replay", body).await;
        assert_refused(&answer, 400, "invalid_body", "");
    }
    // Well-formed JSON of the wrong type: 422, as axum answers it, in our JSON.
    let answer = api.post_text("/dlq/replay", r#"{"rate": "fast"}"#).await;
    assert_refused(&answer, 422, "invalid_body", "rate");
    let typo = api.post("/dlq/replay", json!({"sorce": "alpha"})).await;
    assert_refused(&typo, 400, "unknown_field", "sorce");

    let (status, dry) = api
        .post("/dlq/replay", json!({"rate": 0.1, "dry_run": true}))
        .await;
    assert_eq!(status, 200, "the floor itself is accepted: {dry}");
    assert_eq!(dry["picked"], 5);

    let fixture = api.stop().await;
    let work = fixture.env.topology().work_queue();
    let broker = Broker::connect(&fixture.env.amqp_url).await;
    assert_eq!(broker.count(&work).await, 0, "nothing was replayed");
    let ids = fixture.ids.clone();
    assert_eq!(fixture.drain_and_delete().await, ids);
}
