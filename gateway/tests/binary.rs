//! The `sluice-gateway` binary itself serves, on either runtime that
//! `gateway.threads` chooses: one thread (the default) and several.
//! Each run accepts one signed event, which must be in the work queue, and
//! stops with exit code 0 on SIGTERM. Needs the machine's Redis and RabbitMQ.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sluice_gateway::signature::hmac::hex_hmac_sha256;
use sluice_shared::config::Config;
use sluice_shared::topology::Topology;

const SECRET: &str = "binary-test-secret";

#[test]
fn the_binary_serves_on_one_thread_by_default() {
    serve_one_event(None);
}

#[test]
fn the_binary_serves_on_a_work_stealing_runtime() {
    serve_one_event(Some(2));
}

fn serve_one_event(threads: Option<usize>) {
    let (listen, admin) = (free_port(), free_port());
    let prefix = format!("bin-{}", uuid::Uuid::new_v4().simple());
    let toml = format!(
        r#"
[gateway]
listen = "{listen}"
admin_listen = "{admin}"
[redis]
key_prefix = "{prefix}"
[amqp]
prefix = "{prefix}"
[telemetry]
log_level = "warn"
[sources.whatzme]
scheme = "hmac-sha256"
secrets = ["env:SLUICE_BINARY_TEST_SECRET"]
header = "X-Signature"
prefix = "sha256="
id_pointer = "/messages/0/key/id"
type_pointer = "/event"
dedup_ttl = "1h"
"#
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, &toml).expect("config file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"));
    command
        .arg("--config")
        .arg(&path)
        .env("SLUICE_BINARY_TEST_SECRET", SECRET);
    if let Some(n) = threads {
        command.env("SLUICE_GATEWAY__THREADS", n.to_string());
    }
    let mut gateway = Stopped(command.spawn().expect("the gateway binary starts"));
    wait_ready(admin, &mut gateway.0);

    let body = br#"{"event":"messages.upsert","messages":[{"key":{"id":"BIN-1"}}]}"#;
    let signature = format!("sha256={}", hex_hmac_sha256(SECRET, body));
    let answer = post(listen, "/webhooks/whatzme", &signature, body);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""accepted":1"#), "{answer}");

    let status = gateway.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM stops the gateway cleanly");

    let config = Config::from_toml(&toml).expect("the test config loads");
    let in_queue = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(count_and_delete(
            &Topology::new(&config.amqp),
            &config.amqp.url,
        ));
    assert_eq!(in_queue, 1, "the accepted event is in the work queue");
}

/// Kills the child if a test fails before it stops it.
struct Stopped(Child);

impl Stopped {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        self.0.wait().expect("the gateway exits")
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Messages in the work queue, then the test's queues and exchanges are deleted.
async fn count_and_delete(topology: &Topology, url: &str) -> u32 {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("the test reaches RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = channel
        .queue_declare(
            topology.work_queue().as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .expect("the gateway declared the work queue")
        .message_count();
    topology
        .delete(&channel)
        .await
        .expect("the test's topology is deleted");
    count
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

fn wait_ready(admin: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited before it was ready: {status}");
        }
        if get(admin, "/readyz").is_some_and(|a| a.starts_with("HTTP/1.1 200")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the gateway was not ready within 20 s");
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").into_bytes(),
    )
}

fn post(addr: SocketAddr, path: &str, signature: &str, body: &[u8]) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: application/json\r\nx-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    exchange(addr, &request).expect("the gateway answers")
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}
