//! `POST /dlq/purge` over HTTP: it needs a filter or `"all": true`, and its
//! confirmation removes exactly the events its preview showed, none that
//! arrived since. The CLI's `dlq purge` needs a filter or `--all` too.

use serde_json::json;

use super::DeadFixture;
use super::http::{DlqHttp, assert_refused};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_without_a_filter_or_all_is_refused_and_all_must_be_confirmed() {
    let api = DlqHttp::start("dlq-http-all", 10).await;
    for body in [
        json!({}),
        json!({"yes": true}),
        json!({"source": " ", "yes": true}),
    ] {
        let answer = api.post("/dlq/purge", body.clone()).await;
        assert_refused(&answer, 400, "invalid_request", "\"all\": true");
    }
    let typo = api
        .post("/dlq/purge", json!({"sorce": "alpha", "yes": true}))
        .await;
    assert_refused(&typo, 400, "unknown_field", "sorce");
    let both = api
        .post("/dlq/purge", json!({"source": "alpha", "all": true}))
        .await;
    assert_refused(&both, 400, "invalid_request", "without a filter");
    assert_eq!(api.fixture.dead_count().await, 10, "nothing was removed");

    let (status, preview) = api.post("/dlq/purge", json!({"all": true})).await;
    assert_eq!(status, 400, "{preview}");
    assert_eq!(preview["error"], "confirmation_required");
    assert_eq!(preview["matched"]["count"], 10);
    let token = preview["confirm"].as_str().expect("a token");
    let filtered = api
        .post(
            "/dlq/purge",
            json!({"source": "alpha", "yes": true, "confirm": token}),
        )
        .await;
    assert_refused(&filtered, 400, "invalid_confirmation", "another filter");
    assert_eq!(api.fixture.dead_count().await, 10);

    let (status, purged) = api
        .post(
            "/dlq/purge",
            json!({"all": true, "yes": true, "confirm": token}),
        )
        .await;
    assert_eq!(status, 200, "{purged}");
    assert_eq!(purged["removed"], 10);
    assert_eq!(purged["already_gone"], 0);
    let fixture = api.stop().await;
    assert!(fixture.drain_and_delete().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_removes_the_previewed_events_and_none_that_arrived_after() {
    let mut api = DlqHttp::start("dlq-http-confirm", 12).await;
    let alpha = api.fixture.ids_of("alpha");
    assert_eq!(alpha.len(), 4);
    let (status, preview) = api.post("/dlq/purge", json!({"source": "alpha"})).await;
    assert_eq!(status, 400, "{preview}");
    assert_eq!(preview["matched"]["count"], 4);
    assert_eq!(preview["not_covered"], 0);
    let token = preview["confirm"].as_str().expect("a token").to_owned();

    // Three more alpha events die after the preview.
    for i in [12, 15, 18] {
        api.fixture.publish_dead(i).await;
    }
    let later: Vec<String> = api.fixture.ids[12..].to_vec();
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let damaged = format!("{}{last}", &token[..token.len() - 1]);
    let answer = api
        .post(
            "/dlq/purge",
            json!({"source": "alpha", "yes": true, "confirm": damaged}),
        )
        .await;
    assert_refused(&answer, 400, "invalid_confirmation", "damaged");
    assert_eq!(api.fixture.dead_count().await, 15);

    let confirm = json!({"source": ["alpha"], "yes": true, "confirm": token});
    let (status, purged) = api.post("/dlq/purge", confirm.clone()).await;
    assert_eq!(status, 200, "{purged}");
    assert_eq!(purged["removed"], 4, "the previewed four: {purged}");
    assert_eq!(purged["already_gone"], 0);
    assert_eq!(purged["kept"], 3, "the three that came after: {purged}");
    assert_eq!(purged["matched"]["by_source"], json!({"alpha": 4}));
    assert_eq!(api.fixture.dead_count().await, 11);

    let (status, again) = api.post("/dlq/purge", confirm).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["removed"], 0, "a confirmation is used up: {again}");
    assert_eq!(again["already_gone"], 4);
    assert_eq!(again["kept"], 3);

    let fixture = api.stop().await;
    let mut expected: Vec<String> = fixture.ids[..12]
        .iter()
        .filter(|id| !alpha.contains(id))
        .cloned()
        .collect();
    expected.extend(later);
    assert_eq!(
        fixture.drain_and_delete().await,
        expected,
        "exactly the previewed events are gone; the later ones stay, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previewed_events_gone_before_the_confirmation_are_counted_not_an_error() {
    let api = DlqHttp::start("dlq-http-gone", 9).await;
    let beta = api.fixture.ids_of("beta");
    let (_, preview) = api.post("/dlq/purge", json!({"source": "beta"})).await;
    assert_eq!(preview["matched"]["count"], 3, "{preview}");
    let token = preview["confirm"].as_str().expect("a token").to_owned();

    // Someone purges one of them from the command line in between.
    let cli = api
        .fixture
        .dlq(&["purge", "--id", &beta[1], "--yes", "--json"])
        .await;
    assert_eq!(cli.code, Some(0), "{}", cli.stderr);
    assert_eq!(cli.json()["removed"], 1);

    let (status, purged) = api
        .post(
            "/dlq/purge",
            json!({"source": "beta", "yes": true, "confirm": token}),
        )
        .await;
    assert_eq!(status, 200, "{purged}");
    assert_eq!(purged["removed"], 2);
    assert_eq!(purged["already_gone"], 1);
    assert_eq!(purged["kept"], 0);
    let fixture = api.stop().await;
    let rest: Vec<String> = fixture
        .ids
        .iter()
        .filter(|id| !beta.contains(id))
        .cloned()
        .collect();
    assert_eq!(fixture.drain_and_delete().await, rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_purges_the_whole_queue_only_with_all() {
    let fixture = DeadFixture::seed("dlq-purge-all", 6, "").await;
    let bare = fixture.dlq(&["purge", "--yes"]).await;
    assert_eq!(bare.code, Some(64), "{}", bare.stderr);
    assert!(bare.stderr.contains("--all"), "{}", bare.stderr);
    let both = fixture.dlq(&["purge", "--all", "--source", "alpha"]).await;
    assert_eq!(both.code, Some(64), "{}", both.stderr);
    assert_eq!(fixture.dead_count().await, 6, "refusals remove nothing");

    let preview = fixture.dlq(&["purge", "--all"]).await;
    assert_eq!(preview.code, Some(64), "{}", preview.stderr);
    assert!(
        preview.stdout.contains("refused: nothing was removed"),
        "{}",
        preview.stdout
    );
    let purged = fixture.dlq(&["purge", "--all", "--yes", "--json"]).await;
    assert_eq!(purged.code, Some(0), "{}", purged.stderr);
    assert_eq!(purged.json()["removed"], 6);
    assert!(fixture.drain_and_delete().await.is_empty());
}
