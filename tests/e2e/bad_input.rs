//! Bad input gets a clear status and JSON error, and harms nothing: no event
//! is published for it, and the gateway keeps serving.

use std::time::Duration;

use base64::Engine;
use sluice_shared::message::DeadReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use sluice_testkit::broker::Broker;
use sluice_testkit::{RunningGateway, TestEnv, post_signed, signature, upsert_body};

async fn post(url: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    if let Some(signature) = signature {
        request = request.header("X-Signature", signature);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A signature header of the right form that matches nothing: it passes the
/// checks made before the body, so the body limits are what answers.
const WELL_FORMED: &str = "sha256=0000000000000000000000000000000000000000000000000000000000000000";

/// Sends a request with `framing` headers and `body`, ignoring write errors
/// (the gateway may answer and close before the body is all sent), and returns
/// the raw answer.
async fn raw_exchange(addr: std::net::SocketAddr, framing: &str, body: Vec<u8>) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /webhooks/whatzme HTTP/1.1\r\nHost: x\r\nX-Signature: {WELL_FORMED}\r\n{framing}\r\n"
    );
    let write = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    write.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends headers announcing `declared` bytes, then only `sent`, then stalls.
async fn stalled_request(addr: std::net::SocketAddr, declared: usize, sent: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/whatzme HTTP/1.1\r\nHost: x\r\nX-Signature: {WELL_FORMED}\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(sent).await.expect("write");
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the gateway answers a stalled client by itself")
        .expect("read");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_its_status_and_nothing_is_published() {
    let env = TestEnv::new("bad");
    let mut config = env.config("");
    config.gateway.body_read_timeout = Duration::from_millis(300);
    let gateway = RunningGateway::start(config).await;
    let url = gateway.url("whatzme");
    let body = upsert_body(&format!("{}-x", env.prefix)).into_bytes();

    let (status, answer) = post(&url, Some("sha256=0123abcd"), body.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_signature")),
        "wrong signature"
    );

    let (status, answer) = post(&url, None, body.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_signature")),
        "missing header"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("x-signature"),
        "{answer}"
    );

    let mut tampered = body.clone();
    tampered[5] ^= 1;
    let (status, _) = post(&url, Some(&signature(&body)), tampered).await;
    assert_eq!(status, 401, "a flipped byte breaks the signature");

    let (status, answer) = post(
        &gateway.url("nosuchsource"),
        Some(&signature(&body)),
        body.clone(),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_source"))
    );

    let declared_huge = raw_exchange(
        gateway.addr,
        "Content-Length: 4194305\r\n",
        vec![b' '; 64 * 1024],
    )
    .await;
    assert!(
        declared_huge.starts_with("HTTP/1.1 413"),
        "a declared huge body is refused: {declared_huge}"
    );
    assert!(
        declared_huge.contains("payload_too_large"),
        "{declared_huge}"
    );
    let mut chunked = Vec::new();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed_huge = raw_exchange(gateway.addr, "Transfer-Encoding: chunked\r\n", chunked).await;
    assert!(
        streamed_huge.starts_with("HTTP/1.1 413"),
        "a streamed huge body is cut off: {streamed_huge}"
    );

    let stalled = stalled_request(gateway.addr, 100, b"{\"event\":").await;
    assert!(
        stalled.starts_with("HTTP/1.1 408"),
        "a stalled body times out: {stalled}"
    );
    assert!(stalled.contains("request_timeout"), "{stalled}");

    let response = reqwest::Client::new()
        .get(format!("http://{}/elsewhere", gateway.addr))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 404);
    let response = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 405, "a GET is not a webhook");
    let answer: serde_json::Value = response.json().await.expect("a JSON error");
    assert_eq!(answer["error"], "method_not_allowed");

    // Authenticated but unparseable: kept in the dead queue, answered 200.
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500)).into_bytes();
    let unparseable: Vec<Vec<u8>> = vec![
        b"{\"event\": not json".to_vec(),
        body[..body.len() / 2].to_vec(),
        b"{\"event\":\"\xff\xfe\"}".to_vec(),
        deep,
    ];
    for raw in &unparseable {
        let (status, answer) = post(&url, Some(&signature(raw)), raw.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["dead_lettered"], 1, "{answer}");
    }

    // Nothing harmed: a good event still goes through.
    let client = reqwest::Client::new();
    let (status, answer) =
        post_signed(&client, &url, &upsert_body(&format!("{}-good", env.prefix))).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)));
    gateway.stop().await;

    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    assert_eq!(
        broker.count(&topology.work_queue()).await,
        1,
        "only the good event was published"
    );
    let dead = broker.drain(&topology.dead_queue()).await;
    assert_eq!(
        dead.len(),
        unparseable.len(),
        "each unparseable body is kept once"
    );
    for (message, raw) in dead.iter().zip(&unparseable) {
        assert_eq!(message.headers().reason, Some(DeadReason::Unparseable));
        let kept = message.json()["data_base64"].as_str().map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64")
        });
        assert_eq!(kept.as_ref(), Some(raw), "the exact bytes are kept");
    }
    broker.delete(&topology).await;
}
