//! The `/dlq` routes on the worker's admin port: off by default, behind a
//! bearer token when on, and the same operations as the CLI.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::DeadFixture;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{RunningWorker, eventually};

const TOKEN: &str = "dlq-token-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_only_with_its_token_and_works_like_the_cli() {
    let fixture = DeadFixture::seed("dlq-http", 20, "").await;
    let token_path = fixture.env.secret_path("dlq.token");
    std::fs::write(&token_path, TOKEN).expect("token file");
    let downstream = Downstream::start(Plan::Succeed).await;
    let extra = format!(
        "{}[dlq.http]\nenabled = true\ntoken = \"file:{}\"\n",
        fixture.env.http_route(&downstream.url()),
        token_path.display()
    );
    let worker = RunningWorker::start(fixture.env.config(&extra)).await;
    let base = format!("http://{}", worker.admin_addr);
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let request = client.get(format!("{base}{path}"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };

    let anonymous = get("/dlq/stats", None).send().await.expect("an answer");
    assert_eq!(anonymous.status(), 401);
    let refusal: serde_json::Value = anonymous.json().await.expect("a JSON refusal");
    assert_eq!(refusal["error"], "unauthorized");
    assert!(refusal["message"].is_string(), "{refusal}");
    let wrong = get("/dlq/stats", Some("not-the-token"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(wrong.status(), 401);
    let metrics = get("/metrics", None).send().await.expect("an answer");
    assert_eq!(
        metrics.status(),
        200,
        "the rest of the admin port is unchanged"
    );

    let stats: serde_json::Value = json_of(get("/dlq/stats", Some(TOKEN))).await;
    assert_eq!(stats["count"], 20);
    let peek = json_of(get("/dlq/peek?limit=2&source=beta", Some(TOKEN))).await;
    assert_eq!(super::peeked_ids(&peek), fixture.ids_of("beta")[..2]);
    let export = get("/dlq/export?source=gamma", Some(TOKEN))
        .send()
        .await
        .expect("an answer");
    assert_eq!(export.status(), 200);
    let (events, end) = export_lines(&export.text().await.expect("a body"));
    assert_eq!(events.len(), 6);
    assert_eq!(end["complete"], true, "{end}");

    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    let refused = post("/dlq/purge", json!({"source": "alpha"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 400);
    let refused: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(refused["error"], "confirmation_required", "{refused}");
    assert_eq!(refused["matched"]["count"], 7);
    let yes_alone: serde_json::Value = post("/dlq/purge", json!({"source": "alpha", "yes": true}))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        yes_alone["error"], "confirmation_required",
        "\"yes\" without the preview's \"confirm\" removes nothing: {yes_alone}"
    );
    let dry = json_of(post(
        "/dlq/replay",
        json!({"source": "beta", "dry_run": true}),
    ))
    .await;
    assert_eq!(dry["picked"], 7);
    assert_eq!(dry["replayed"], 0);
    let replayed = json_of(post("/dlq/replay", json!({"source": ["beta"]}))).await;
    assert_eq!(replayed["replayed"], 7);

    let beta: HashSet<String> = fixture.ids_of("beta").into_iter().collect();
    let all = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids() == beta
    })
    .await;
    assert!(
        all,
        "the replayed events are delivered: {:?}",
        downstream.delivered_ids()
    );
    worker.stop().await;
    let rest: Vec<String> = fixture
        .ids
        .iter()
        .filter(|id| !beta.contains(*id))
        .cloned()
        .collect();
    assert_eq!(fixture.drain_and_delete().await, rest);
}

#[tokio::test]
async fn an_enabled_api_whose_token_is_not_set_stops_the_worker_with_code_64() {
    let env = sluice_testkit::TestEnv::new("dlq-token");
    let path = env.dir.path().join("sluice.toml");
    let extra = "[dlq.http]\nenabled = true\ntoken = \"env:SLUICE_E2E_SURELY_UNSET_DLQ_TOKEN\"\n";
    std::fs::write(&path, env.config_toml(extra)).expect("config file");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .arg("--config")
        .arg(&path)
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("dlq.http.token"), "{stderr}");
    assert!(
        stderr.contains("SLUICE_E2E_SURELY_UNSET_DLQ_TOKEN"),
        "{stderr}"
    );
}

async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.expect("an answer");
    let status = response.status();
    let body = response.text().await.expect("a body");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The event lines of an HTTP export, and its last line's `end`.
pub fn export_lines(body: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let last = lines.pop().expect("at least the end line");
    assert!(last["end"].is_object(), "the last line is the end: {last}");
    assert!(
        lines.iter().all(|line| line.get("end").is_none()),
        "one end line, the last"
    );
    (lines, last["end"].clone())
}

/// A seeded dead queue behind a worker serving `/dlq` with [`TOKEN`].
pub struct DlqHttp {
    pub fixture: DeadFixture,
    worker: RunningWorker,
    base: String,
    client: reqwest::Client,
}

impl DlqHttp {
    pub async fn start(name: &str, count: usize) -> Self {
        let fixture = DeadFixture::seed(name, count, "").await;
        let token_path = fixture.env.secret_path("dlq.token");
        std::fs::write(&token_path, TOKEN).expect("token file");
        let extra = format!(
            "[dlq.http]\nenabled = true\ntoken = \"file:{}\"\n",
            token_path.display()
        );
        let worker = RunningWorker::start(fixture.env.config(&extra)).await;
        Self {
            base: format!("http://{}", worker.admin_addr),
            fixture,
            worker,
            client: reqwest::Client::new(),
        }
    }

    /// GET `path`: the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }

    /// POST `body` as JSON to `path`: the status and the JSON answer.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_text(path, &body.to_string()).await
    }

    /// POST `body`, as written, with `content-type: application/json`.
    pub async fn post_text(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a JSON answer ({e}), status {status}: {text}"));
        (status, json)
    }

    /// Stops the worker; the fixture stays for checks.
    pub async fn stop(self) -> DeadFixture {
        self.worker.stop().await;
        self.fixture
    }
}

/// Asserts a JSON refusal: `status`, `error`, and a message containing `says`.
pub fn assert_refused(answer: &(u16, serde_json::Value), status: u16, error: &str, says: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}
