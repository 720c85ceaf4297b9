//! What every end-to-end test needs: an isolated namespace on the shared Redis
//! and RabbitMQ, the gateway and worker running in-process, a downstream HTTP
//! server that records what reaches it, and broker helpers.

pub mod broker;
pub mod cluster;
pub mod downstream;
pub mod gateway_process;
pub mod ledger;
pub mod private;
pub mod providers;
pub mod proxy;
pub mod raw_http;
pub mod under_load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_gateway::Gateway;
use sluice_gateway::signature::hex_hmac_sha256;
use sluice_shared::config::Config;
use sluice_shared::topology::Topology;
use sluice_worker::Worker;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SHARED_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// The HMAC secret of the test source `whatzme`.
pub const SOURCE_SECRET: &str = "whatzme-secret-for-tests";
/// The Standard Webhooks secret the worker signs deliveries with.
pub const ROUTE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One test's namespace: its own queue prefix, Redis key prefix and secret files.
pub struct TestEnv {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub amqp_url: String,
    pub redis_url: String,
    /// Every route name a config of this test had: the worker declares a
    /// queue for each, which [`TestEnv::topology`] counts and deletes.
    routes: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        Self::with_brokers(name, SHARED_AMQP, SHARED_REDIS)
    }

    pub fn with_brokers(name: &str, amqp_url: &str, redis_url: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("source.secret"), SOURCE_SECRET).expect("secret file");
        std::fs::write(dir.path().join("route.secret"), ROUTE_SECRET).expect("secret file");
        Self {
            prefix: format!("e2e-{name}-{}", &id[..8]),
            dir,
            amqp_url: amqp_url.to_owned(),
            redis_url: redis_url.to_owned(),
            routes: std::sync::Mutex::default(),
        }
    }

    pub fn secret_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with the `whatzme` source and `extra` TOML appended (routes, tweaks).
    pub fn config_toml(&self, extra: &str) -> String {
        self.config_toml_retrying(r#"["200ms", "400ms", "800ms"]"#, extra)
    }

    /// [`TestEnv::config_toml`] with other `amqp.retry_delays` (a TOML array).
    pub fn config_toml_retrying(&self, retry_delays: &str, extra: &str) -> String {
        let toml = self.toml_retrying(retry_delays, extra);
        // A config a test means to be refused declares no queue.
        if let Ok(config) = Config::from_toml(&toml) {
            let mut routes = self.routes.lock().expect("lock");
            routes.extend(config.routes.into_iter().map(|route| route.name));
        }
        toml
    }

    fn toml_retrying(&self, retry_delays: &str, extra: &str) -> String {
        format!(
            r#"
[gateway]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
# Tests stop many gateways: no readiness grace at stop unless a test sets one.
shutdown_grace = "0s"
[worker]
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
[redis]
url = "{redis}"
key_prefix = "{prefix}"
[amqp]
url = "{amqp}"
prefix = "{prefix}"
retry_delays = {retry_delays}
[telemetry]
log_level = "warn"
[sources.whatzme]
scheme = "hmac-sha256"
secrets = ["file:{source_secret}"]
header = "X-Signature"
prefix = "sha256="
id_pointer = "/messages/0/key/id"
type_pointer = "/event"
items_pointer = "/statuses"
item_id_pointer = "/id"
item_id_suffix_pointer = "/status"
# Tests share the machine's Redis: their keys need not outlive the run by days.
dedup_ttl = "1h"
{extra}
"#,
            redis = self.redis_url,
            amqp = self.amqp_url,
            prefix = self.prefix,
            source_secret = self.secret_path("source.secret").display(),
        )
    }

    pub fn config(&self, extra: &str) -> Config {
        Config::from_toml(&self.config_toml(extra)).expect("the test config is valid")
    }

    /// An `http` route named `name` over `patterns` (a TOML array) to
    /// `url`, signed with the test's route secret, with `extra` TOML (its
    /// timeout, limits, `exclusive`...).
    pub fn route(&self, name: &str, patterns: &str, url: &str, extra: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\nmatch = {patterns}\nhandler = \"http\"\nurl = \"{url}\"\nsecret = \"file:{}\"\n{extra}\n",
            self.secret_path("route.secret").display()
        )
    }

    /// An `http` route to `url` matching everything.
    pub fn http_route(&self, url: &str) -> String {
        self.route("downstream", r#"["*"]"#, url, r#"timeout = "2s""#)
    }

    /// This test's topology, with a queue for every route its configs had.
    pub fn topology(&self) -> Topology {
        let routes = self.routes.lock().expect("lock").clone();
        Topology::new(&self.config("").amqp).with_route_queues(routes.iter().map(String::as_str))
    }

    /// The end of a run that leaves events behind: deletes this test's queues.
    pub async fn delete_topology(&self) {
        broker::Broker::connect(&self.amqp_url)
            .await
            .delete(&self.topology())
            .await;
    }

    /// The end of a run: every queue of this test is empty, then deleted.
    pub async fn assert_queues_empty_and_delete(&self) {
        let broker = broker::Broker::connect(&self.amqp_url).await;
        let topology = self.topology();
        assert_eq!(
            broker.total(&topology).await,
            0,
            "nothing is left in any queue"
        );
        broker.delete(&topology).await;
    }
}

/// A gateway serving in the background.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    pub async fn start(config: Config) -> Self {
        let gateway = Gateway::build(config).await.expect("the gateway starts");
        let stop = CancellationToken::new();
        let (addr, admin_addr) = (gateway.addr(), gateway.admin_addr());
        let task = tokio::spawn(gateway.run_until_stopped(stop.clone()));
        Self {
            addr,
            admin_addr,
            stop,
            task,
        }
    }

    pub fn url(&self, source: &str) -> String {
        format!("http://{}/webhooks/{source}", self.addr)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A worker consuming in the background.
pub struct RunningWorker {
    pub admin_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningWorker {
    pub async fn start(config: Config) -> Self {
        let worker = Worker::build(config).await.expect("the worker starts");
        let stop = CancellationToken::new();
        let admin_addr = worker.admin_addr();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let _ = worker.run_until_stopped(token).await;
        });
        Self {
            admin_addr,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A gateway and worker delivering to a downstream that follows its plan,
/// after one event was accepted.
pub struct OneEvent {
    pub env: TestEnv,
    pub downstream: downstream::Downstream,
    pub gateway: RunningGateway,
    pub worker: RunningWorker,
    /// The event's id.
    pub id: String,
}

/// Starts everything for `plan` (with `tweak` applied to the config) and sends one event.
pub async fn one_event(
    name: &str,
    plan: downstream::Plan,
    tweak: impl FnOnce(&mut Config),
) -> OneEvent {
    let env = TestEnv::new(name);
    let downstream = downstream::Downstream::start(plan).await;
    let mut config = env.config(&env.http_route(&downstream.url()));
    tweak(&mut config);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let id = format!("{}-event", env.prefix);
    let (status, answer) = post_signed(
        &reqwest::Client::new(),
        &gateway.url("whatzme"),
        &upsert_body(&id),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    OneEvent {
        env,
        downstream,
        gateway,
        worker,
        id,
    }
}

/// A body in the WhatzMeAPI `messages.upsert` shape with the given message id.
pub fn upsert_body(id: &str) -> String {
    format!(
        r#"{{"event":"messages.upsert","messages":[{{"key":{{"id":"{id}","fromMe":false}},"message":{{"conversation":"hola"}}}}]}}"#
    )
}

/// The `X-Signature` value a WhatzMeAPI sender would send for `body`.
pub fn signature(body: &[u8]) -> String {
    format!("sha256={}", hex_hmac_sha256(SOURCE_SECRET, body))
}

/// POSTs a correctly signed body; returns the status and the JSON answer.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .header("X-Signature", signature(body.as_bytes()))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// The value of the first line of `/metrics` at `admin` that starts with
/// `line_start` (a series name, with its labels as rendered).
pub async fn metric(client: &reqwest::Client, admin: SocketAddr, line_start: &str) -> Option<f64> {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `/readyz` at `admin` answers 200.
pub async fn ready(client: &reqwest::Client, admin: SocketAddr) -> bool {
    client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The resident memory (`VmRSS`) of process `pid` (`"self"`: this one), in bytes.
pub fn resident_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib * 1024)
}
