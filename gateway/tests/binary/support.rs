//! Runs the real `sluice-gateway` binary with a config of the test's own
//! (own ports, queue and key prefixes) and talks raw HTTP/1.1 to it, so a
//! test controls every byte a hostile client would send.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sluice_gateway::signature::hmac::hex_hmac_sha256;
use sluice_shared::config::Config;
use sluice_shared::secret::Secret;
use sluice_shared::standard_webhooks::SigningKey;
use sluice_shared::topology::Topology;
use sluice_testkit::broker::Broker;
pub use sluice_testkit::raw_http::{error_code, exchange, free_port, header, read_answer, status};

pub const HMAC_SECRET: &str = "edge-hmac-secret";
pub const META_SECRET: &str = "edge-meta-secret";
pub const META_VERIFY: &str = "edge-meta-verify";
pub const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const TOKEN: &str = "edge-token";

/// Sources of every scheme, with the given extra `[gateway]` lines and sources.
pub fn config_toml(listen: SocketAddr, admin: SocketAddr, prefix: &str, extra: &str) -> String {
    // 500 ms unless the test sets its own.
    let read_timeout = if extra.contains("body_read_timeout") {
        ""
    } else {
        "body_read_timeout = \"500ms\""
    };
    // No grace at SIGTERM unless the test sets one: tests stop many gateways.
    let grace = if extra.contains("shutdown_grace") {
        ""
    } else {
        "shutdown_grace = \"0s\""
    };
    format!(
        r#"
[gateway]
{read_timeout}
{grace}
listen = "{listen}"
admin_listen = "{admin}"
body_limit = 65536
{extra}
[redis]
key_prefix = "{prefix}"
[amqp]
prefix = "{prefix}"
[telemetry]
log_level = "warn"
[sources.whatzme]
scheme = "hmac-sha256"
secrets = ["env:EDGE_HMAC_SECRET"]
header = "X-Signature"
prefix = "sha256="
id_pointer = "/messages/0/key/id"
type_pointer = "/event"
dedup_ttl = "1h"
[sources.meta]
scheme = "whatsapp-cloud"
secrets = ["env:EDGE_META_SECRET"]
verify_token = "env:EDGE_META_VERIFY"
dedup_ttl = "1h"
[sources.std]
scheme = "standard-webhooks"
secrets = ["env:EDGE_STD_SECRET"]
dedup_ttl = "1h"
[sources.treble]
scheme = "token"
tokens = ["env:EDGE_TOKEN"]
id_pointer = "/id"
dedup_ttl = "1h"
[sources.limited]
scheme = "hmac-sha256"
secrets = ["env:EDGE_HMAC_SECRET"]
prefix = "sha256="
id_pointer = "/messages/0/key/id"
dedup_ttl = "1h"
rate_limit = {{ per_second = 0.01, burst = 1 }}
[sources.walled]
scheme = "hmac-sha256"
secrets = ["env:EDGE_HMAC_SECRET"]
prefix = "sha256="
id_pointer = "/messages/0/key/id"
dedup_ttl = "1h"
allow_ips = ["192.0.2.0/24", "203.0.113.0/24"]
"#
    )
}

/// A running gateway binary; killed when dropped.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub toml: String,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the binary with the sources above and `extra` `[gateway]` lines.
    pub fn start(extra: &str) -> Self {
        Self::start_with(extra, &[])
    }

    /// Also with `SLUICE_*` environment overrides; the binary's log goes to [`Gateway::log`].
    pub fn start_with(extra: &str, env: &[(&str, String)]) -> Self {
        let (addr, admin) = (free_port(), free_port());
        let prefix = format!("edge-{}", uuid::Uuid::new_v4().simple());
        let toml = config_toml(addr, admin, &prefix, extra);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, &toml).expect("config file");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(log)
            .arg("--config")
            .arg(&path)
            .env("EDGE_HMAC_SECRET", HMAC_SECRET)
            .env("EDGE_META_SECRET", META_SECRET)
            .env("EDGE_META_VERIFY", META_VERIFY)
            .env("EDGE_STD_SECRET", STD_SECRET)
            .env("EDGE_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .spawn()
            .expect("the gateway binary starts");
        let mut gateway = Self {
            child,
            addr,
            admin,
            toml,
            dir,
        };
        gateway.wait_ready();
        gateway
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the gateway exited before it was ready: {status}");
            }
            let ready = exchange(
                self.admin,
                b"GET /readyz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            );
            if ready.starts_with("HTTP/1.1 200") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the gateway was not ready within 20 s");
    }

    /// What the binary has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Sends a signal (`HUP`, `TERM`) to the binary.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("the gateway exits")
    }

    /// Waits for the binary to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("the gateway exits")
    }

    /// Waits (up to 10 s) until a metric reads `value`.
    pub fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(series) != value {
            assert!(
                Instant::now() < deadline,
                "{series} did not reach {value} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One metric's value from `/metrics` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        let text = exchange(
            self.admin,
            b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        );
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Messages in the work and dead queues; then the test's queues and exchanges are deleted.
    pub fn queues_then_clean(&self) -> (u32, u32) {
        let config = Config::from_toml(&self.toml).expect("the test config loads");
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(count_and_delete(
                &Topology::new(&config.amqp),
                &config.amqp.url,
            ))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn count_and_delete(topology: &Topology, url: &str) -> (u32, u32) {
    let broker = Broker::connect(url).await;
    let counts = (
        broker.count(&topology.work_queue()).await,
        broker.count(&topology.dead_queue()).await,
    );
    broker.delete(topology).await;
    counts
}

/// A POST with `headers` (each a full line) and `body`, closing after the answer.
pub fn post(path: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut request = format!("POST {path} HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n");
    for line in headers {
        request.push_str(line);
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A POST with an exact `Content-Length`.
pub fn post_sized(path: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut all = headers.to_vec();
    all.push(header("content-length", &body.len().to_string()));
    post(path, &all, body)
}

/// A POST of `body` to an HMAC source (`X-Signature`), signed right.
pub fn signed(path: &str, body: &[u8]) -> Vec<u8> {
    post_sized(path, &[hmac_header(body)], body)
}

/// The `X-Signature` line of an HMAC source for `body`.
pub fn hmac_header(body: &[u8]) -> String {
    header(
        "x-signature",
        &format!("sha256={}", hex_hmac_sha256(HMAC_SECRET, body)),
    )
}

/// A WhatzMeAPI-style body with message id `id`.
pub fn upsert(id: &str) -> Vec<u8> {
    format!(r#"{{"event":"messages.upsert","messages":[{{"key":{{"id":"{id}"}}}}]}}"#).into_bytes()
}

/// The three Standard Webhooks headers for `body`, signed now.
pub fn standard_headers(id: &str, body: &[u8]) -> Vec<String> {
    let key = SigningKey::from_secret(&Secret::new(STD_SECRET)).expect("whsec_");
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("i64");
    vec![
        header("webhook-id", id),
        header("webhook-timestamp", &now.to_string()),
        header("webhook-signature", &key.sign(id, now, body)),
    ]
}

/// A `v1,` entry that matches nothing: 32 bytes of base64.
pub fn junk_signature_entry() -> String {
    format!("v1,{}", STANDARD.encode([7u8; 32]))
}
