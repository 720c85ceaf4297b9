//! `GET /dlq/export` streams JSON lines, at most `limit`, and its last line
//! says whether the answer holds every matching event.

use super::http::{DlqHttp, assert_refused, export_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_stops_at_its_limit_and_says_so_and_a_small_queue_comes_whole() {
    let api = DlqHttp::start("dlq-http-export", 12).await;
    let ids = api.fixture.ids.clone();
    let ids_of = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap_or("-").to_owned())
            .collect()
    };

    let (status, body) = api.get("/dlq/export?limit=5").await;
    assert_eq!(status, 200, "{body}");
    let (events, end) = export_lines(&body);
    assert_eq!(ids_of(&events), ids[..5], "the first five, in queue order");
    assert_eq!(end["exported"], 5);
    assert_eq!(end["limit"], 5);
    assert_eq!(end["in_queue"], 12);
    assert_eq!(end["complete"], false, "{end}");
    assert_eq!(end["stopped"], "limit");
    assert!(
        end["message"]
            .as_str()
            .unwrap_or_default()
            .contains("more than 5"),
        "{end}"
    );

    let (status, body) = api.get("/dlq/export").await;
    assert_eq!(status, 200, "{body}");
    let (events, end) = export_lines(&body);
    assert_eq!(
        ids_of(&events),
        ids,
        "the default limit holds a small queue"
    );
    assert_eq!(end["complete"], true, "{end}");
    assert_eq!(end["stopped"], serde_json::Value::Null);
    assert!(
        events[0]["envelope"]["data"].is_object(),
        "with the payload"
    );

    let (_, body) = api.get("/dlq/export?limit=4&source=alpha").await;
    let (events, end) = export_lines(&body);
    assert_eq!(
        ids_of(&events),
        api.fixture.ids_of("alpha"),
        "exactly the limit's worth of matches is complete"
    );
    assert_eq!(end["complete"], true, "{end}");

    for (query, error, says) in [
        ("limit=0", "invalid_request", "from 1 to 100000"),
        ("limit=100001", "invalid_request", "from 1 to 100000"),
        ("limit=many", "invalid_query", "limit"),
        ("status=999", "invalid_filter", "999"),
    ] {
        let (status, body) = api.get(&format!("/dlq/export?{query}")).await;
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{query}: JSON ({e}): {body}"));
        assert_refused(&(status, json), 400, error, says);
    }

    let fixture = api.stop().await;
    assert_eq!(
        fixture.drain_and_delete().await,
        ids,
        "exports remove nothing and keep the order"
    );
}
