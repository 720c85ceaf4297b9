//! The dead-letter-queue commands, through the real `sluice-worker dlq`
//! binary, against the real RabbitMQ: dead events are seeded with the
//! worker's own dead-copy headers (`copy_headers::for_dead`), then inspected,
//! exported, replayed to a real downstream, and purged.

mod crash;
mod http;
mod http_export;
mod http_purge;
mod http_rate;
mod inspect;
mod raw;
mod replay;
mod scale;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use sluice_shared::envelope::Envelope;
use sluice_shared::message::{
    DeadReason, EventId, EventType, MessageHeaders, SourceName, event_properties,
};
use sluice_worker::copy_headers::{LastFailure, for_dead};

use sluice_testkit::TestEnv;
use sluice_testkit::broker::Broker;

/// The seeded sources, each with its event type: 100 events make 34/33/33.
pub const SOURCES: [(&str, &str); 3] = [
    ("alpha", "message.text"),
    ("beta", "status.read"),
    ("gamma", "contact.updated"),
];

/// Seeded events whose confirms are awaited together.
const SEED_CHUNK: usize = 1_000;

/// The last failure time of seeded event 0; event `i` failed `i` seconds later.
pub const FIRST_FAILURE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// One test's dead queue, seeded, with a config file for the binary.
pub struct DeadFixture {
    pub env: TestEnv,
    pub config_path: PathBuf,
    /// Seeded event ids, in queue order.
    pub ids: Vec<String>,
    channel: Channel,
    _connection: Connection,
}

/// What one `sluice-worker dlq ...` run printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl DeadFixture {
    /// Declares the topology and seeds `count` dead events round-robin over [`SOURCES`].
    pub async fn seed(name: &str, count: usize, extra_toml: &str) -> Self {
        let env = TestEnv::new(name);
        let config_path = env.dir.path().join("sluice.toml");
        std::fs::write(&config_path, env.config_toml(extra_toml)).expect("config file");
        let connection = Connection::connect(&env.amqp_url, ConnectionProperties::default())
            .await
            .expect("RabbitMQ");
        env.topology()
            .declare(&connection)
            .await
            .expect("the topology");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let mut fixture = Self {
            ids: Vec::new(),
            env,
            config_path,
            channel,
            _connection: connection,
        };
        // Confirms awaited a chunk at a time: one channel keeps the order, and
        // 100,000 events take seconds instead of minutes.
        let mut confirms = Vec::with_capacity(SEED_CHUNK);
        for i in 0..count {
            confirms.push(fixture.publish_dead(i).await);
            if confirms.len() == SEED_CHUNK || i + 1 == count {
                for confirm in confirms.drain(..) {
                    assert!(
                        confirm.await.expect("confirm").is_ack(),
                        "the dead exchange took it"
                    );
                }
            }
        }
        fixture
    }

    /// Publishes seeded event `i` to the dead exchange as the worker would;
    /// returns its confirm, still to come.
    async fn publish_dead(&mut self, i: usize) -> PublisherConfirm {
        let (source, event_type) = SOURCES[i % SOURCES.len()];
        let id = format!("{}-{i:03}", self.env.prefix);
        let failed_ms = FIRST_FAILURE_MS + i as i64 * 1000;
        let received = UNIX_EPOCH + Duration::from_millis((failed_ms - 60_000) as u64);
        let envelope = Envelope::json(
            source,
            &id,
            event_type,
            received,
            serde_json::json!({"n": i}),
        );
        let (reason, last) = if i.is_multiple_of(5) {
            (
                DeadReason::Rejected,
                LastFailure {
                    error: "HTTP 400".into(),
                    status: Some(400),
                },
            )
        } else {
            (
                DeadReason::AttemptsExhausted,
                LastFailure {
                    error: "HTTP 503".into(),
                    status: Some(503),
                },
            )
        };
        let properties = for_dead(
            &original(&id, source, event_type),
            reason,
            4,
            &last,
            failed_ms,
        );
        let key = format!("{source}.{event_type}");
        let exchange = self.env.topology().dead_exchange();
        let confirm = self
            .channel
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &envelope.to_bytes(),
                properties,
            )
            .await
            .expect("publish");
        self.ids.push(id);
        confirm
    }

    /// Publishes anything to the dead exchange, confirmed.
    pub async fn publish(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let exchange = self.env.topology().dead_exchange();
        let confirm = self
            .channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish");
        assert!(
            confirm.await.expect("confirm").is_ack(),
            "the dead exchange took it"
        );
    }

    /// The fixture's confirm channel, to publish or take messages by hand.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Runs `sluice-worker --config <file> dlq <args>`.
    pub async fn dlq(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().await.expect("the binary runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `sluice-worker dlq <args>` with `dlq.scan_batch = batch`.
    pub async fn dlq_in_batches(&self, batch: u16, args: &[&str]) -> Run {
        let path = self
            .env
            .dir
            .path()
            .join(format!("sluice-batch-{batch}.toml"));
        let toml = self
            .env
            .config_toml(&format!("[dlq]\nscan_batch = {batch}"));
        std::fs::write(&path, toml).expect("config file");
        let output = self
            .command_with(&path, args)
            .output()
            .await
            .expect("the binary runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The command, to spawn and kill.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.command_with(&self.config_path, args)
    }

    fn command_with(&self, config: &std::path::Path, args: &[&str]) -> tokio::process::Command {
        dlq_command(config, args)
    }

    /// Seeded ids of one source, in queue order.
    pub fn ids_of(&self, source: &str) -> Vec<String> {
        let index = SOURCES
            .iter()
            .position(|(s, _)| *s == source)
            .expect("a seeded source");
        self.ids
            .iter()
            .skip(index)
            .step_by(SOURCES.len())
            .cloned()
            .collect()
    }

    /// Takes every message left in the dead queue (destructively) and
    /// describes each: routing key, message id and headers, for a failing
    /// test to print.
    pub async fn leftovers(&self) -> String {
        let broker = Broker::connect(&self.env.amqp_url).await;
        let taken = broker.drain(&self.env.topology().dead_queue()).await;
        let lines: Vec<String> = taken
            .iter()
            .map(|t| {
                format!(
                    "{} id={:?} headers={:?}",
                    t.routing_key,
                    t.properties.message_id(),
                    t.properties.headers()
                )
            })
            .collect();
        format!("{} message(s)\n{}", lines.len(), lines.join("\n"))
    }

    pub async fn dead_count(&self) -> u32 {
        Broker::connect(&self.env.amqp_url)
            .await
            .count(&self.env.topology().dead_queue())
            .await
    }

    /// Deletes the test's queues (whatever they hold) and exchanges.
    pub async fn delete_topology(self) {
        self.env
            .topology()
            .delete(self.channel())
            .await
            .expect("the test's queues deleted");
    }

    /// Empties the dead queue (destructively), returning its message ids in
    /// order (`-` for a message without one), then checks every queue is
    /// empty and deletes them.
    pub async fn drain_and_delete(self) -> Vec<String> {
        let broker = Broker::connect(&self.env.amqp_url).await;
        let taken = broker.drain(&self.env.topology().dead_queue()).await;
        let ids = taken
            .iter()
            .map(|t| {
                t.properties
                    .message_id()
                    .as_ref()
                    .map_or("-".into(), |s| s.to_string())
            })
            .collect();
        self.env.assert_queues_empty_and_delete().await;
        ids
    }
}

/// The properties the gateway gives an event.
pub fn original(id: &str, source: &str, event_type: &str) -> BasicProperties {
    let headers = MessageHeaders {
        source: Some(SourceName::from_config_name(source)),
        event_type: Some(EventType::normalise(event_type)),
        request_id: Some(format!("req-{id}")),
        attempt: Some(0),
        ..MessageHeaders::default()
    };
    event_properties(&EventId::from_provider(id), SystemTime::now(), headers)
}

/// The ids of a peek's JSON answer.
pub fn peeked_ids(peek: &serde_json::Value) -> Vec<String> {
    peek["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().unwrap_or("-").to_owned())
        .collect()
}

/// `sluice-worker --config <config> dlq <args>`, with its output piped and
/// killed if dropped.
pub fn dlq_command(config: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"));
    command
        .arg("--config")
        .arg(config)
        .arg("dlq")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}
