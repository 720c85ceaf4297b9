//! The listener's limits on the real binary: a request is refused on its
//! headers before its body is read, half-sent heads and idle connections are
//! closed, and each cap sheds with a fast 503 and counts in a metric.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::support::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Opens a connection and sends `bytes`, leaving it open.
fn open_with(gateway: &Gateway, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).expect("connect");
    stream.write_all(bytes).expect("write");
    stream
}

/// Whether the gateway closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(within));
    let mut buffer = [0u8; 1024];
    matches!(stream.read(&mut buffer), Ok(0) | Err(_))
        && !matches!(stream.read(&mut buffer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn five_thousand_signatures_and_a_4_mib_body_are_refused_on_the_headers_alone() {
    let gateway = Gateway::start("");
    let list = vec![junk_signature_entry(); 5000].join(" ");
    assert!(list.len() > 200_000, "{} bytes", list.len());
    let head = post(
        "/webhooks/std",
        &[
            header("webhook-id", "msg_1"),
            header("webhook-timestamp", &now().to_string()),
            header("webhook-signature", &list),
            header("content-length", &(4 * 1024 * 1024).to_string()),
        ],
        b"",
    );
    // Only the head is sent: an answer proves the body was never awaited
    // (waiting for it would end in 408 after body_read_timeout).
    let mut stream = open_with(&gateway, &head);
    let answer = read_answer(&mut stream);
    assert_eq!(status(&answer), 401, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("invalid_signature"));
    assert!(answer.contains("webhook-signature"), "{answer}");
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 0);
}

#[test]
fn half_sent_heads_are_closed_by_the_header_timeout_while_others_are_served() {
    let gateway =
        Gateway::start("[gateway.limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"30s\"");
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|_| open_with(&gateway, b"POST /webhooks/whatzme HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    let body = upsert(&format!("half-{}", uuid::Uuid::new_v4().simple()));
    let answer = exchange(gateway.addr, &signed("/webhooks/whatzme", &body));
    assert_eq!(
        status(&answer),
        200,
        "served while 100 heads hang: {answer}"
    );
    let started = Instant::now();
    for stream in &mut stalled {
        assert!(
            closed_within(stream, Duration::from_secs(5)),
            "a half-sent head stays open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let closed =
        gateway.metric(r#"sluice_gateway_connections_closed_total{reason="header_timeout"}"#);
    assert!(closed >= 100.0, "{closed}");
    assert_eq!(gateway.metric("sluice_gateway_open_connections"), 0.0);
    gateway.queues_then_clean();
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_one() {
    let gateway =
        Gateway::start("[gateway.limits]\nheader_read_timeout = \"500ms\"\nidle_timeout = \"2s\"");
    let mut stream = TcpStream::connect(gateway.addr).expect("connect");
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).expect("an answer");
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 404"));
    // Resting past the header timeout is fine for a kept-alive connection...
    std::thread::sleep(Duration::from_millis(1200));
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("still open after a rest longer than the header timeout");
    let n = stream.read(&mut buffer).expect("a second answer");
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 404"));
    // ...but not past the idle timeout.
    assert!(closed_within(&mut stream, Duration::from_secs(4)));
    let idle = gateway.metric(r#"sluice_gateway_connections_closed_total{reason="idle_timeout"}"#);
    assert_eq!(idle, 1.0);
    gateway.queues_then_clean();
}

#[test]
fn connections_past_max_connections_get_a_503_with_retry_after() {
    let gateway = Gateway::start("[gateway.limits]\nmax_connections = 10");
    let held: Vec<TcpStream> = (0..10).map(|_| open_with(&gateway, b"")).collect();
    // The gateway has accepted them all before the one over the cap.
    gateway.wait_for_metric("sluice_gateway_open_connections", 10.0);
    let answer = exchange(gateway.addr, b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("overloaded"));
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert_eq!(
        gateway.metric(r#"sluice_gateway_shed_total{reason="connections"}"#),
        1.0
    );
    drop(held);
    gateway.wait_for_metric("sluice_gateway_open_connections", 0.0);
    let answer = exchange(
        gateway.addr,
        b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(
        status(&answer),
        404,
        "served again once under the cap: {answer}"
    );
    gateway.queues_then_clean();
}

/// Starts a signed request whose body is `sent` of `declared` bytes, then stalls.
fn stalled_body(gateway: &Gateway, declared: usize, sent: usize) -> TcpStream {
    let head = post(
        "/webhooks/whatzme",
        &[
            header("x-signature", &format!("sha256={}", "00".repeat(32))),
            header("content-length", &declared.to_string()),
        ],
        &vec![b' '; sent],
    );
    open_with(gateway, &head)
}

#[test]
fn requests_past_max_requests_in_flight_are_shed_at_once() {
    let gateway = Gateway::start(
        "ack_budget = \"1900ms\"\nbody_read_timeout = \"1800ms\"\n[gateway.limits]\nmax_requests_in_flight = 2",
    );
    let mut held: Vec<TcpStream> = (0..2).map(|_| stalled_body(&gateway, 100, 10)).collect();
    gateway.wait_for_metric("sluice_gateway_in_flight_requests", 2.0);
    let body = upsert("shed");
    let answer = exchange(gateway.addr, &signed("/webhooks/whatzme", &body));
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("overloaded"));
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert_eq!(
        gateway.metric(r#"sluice_gateway_shed_total{reason="requests"}"#),
        1.0
    );
    for stream in &mut held {
        assert_eq!(
            status(&read_answer(stream)),
            408,
            "the stalled bodies time out"
        );
    }
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 0);
}

#[test]
fn bodies_past_max_body_memory_are_shed_and_the_memory_comes_back() {
    let gateway = Gateway::start(
        "ack_budget = \"1900ms\"\nbody_read_timeout = \"1800ms\"\n[gateway.limits]\nmax_body_memory = 100000",
    );
    let mut first = stalled_body(&gateway, 65_000, 60_000);
    gateway.wait_for_metric("sluice_gateway_in_flight_requests", 1.0);
    // Its 60,000 bytes went out in the same write as its head.
    std::thread::sleep(Duration::from_millis(300));
    let mut second = stalled_body(&gateway, 65_000, 50_000);
    let answer = read_answer(&mut second);
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("overloaded"));
    assert_eq!(
        gateway.metric(r#"sluice_gateway_shed_total{reason="body_memory"}"#),
        1.0
    );
    assert_eq!(status(&read_answer(&mut first)), 408);
    // The first body's bytes are given back: a body as large is taken now.
    let mut body = upsert(&format!("mem-{}", uuid::Uuid::new_v4().simple()));
    body.resize(60_000, b' ');
    let answer = exchange(gateway.addr, &signed("/webhooks/whatzme", &body));
    assert_eq!(status(&answer), 200, "{answer}");
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 1);
}

#[test]
fn a_source_over_its_rate_limit_gets_429_with_retry_after_and_publishes_nothing_more() {
    let gateway = Gateway::start("");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let first = upsert(&format!("{run}-1"));
    let answer = exchange(gateway.addr, &signed("/webhooks/limited", &first));
    assert_eq!(status(&answer), 200, "{answer}");
    let second = upsert(&format!("{run}-2"));
    let answer = exchange(gateway.addr, &signed("/webhooks/limited", &second));
    assert_eq!(status(&answer), 429, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("rate_limited"));
    let retry: u64 = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("a Retry-After");
    assert!((90..=100).contains(&retry), "one event per 100 s: {retry}");
    // Other sources are not limited by it.
    let other = upsert(&format!("{run}-3"));
    let answer = exchange(gateway.addr, &signed("/webhooks/whatzme", &other));
    assert_eq!(status(&answer), 200, "{answer}");
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 2);
}

#[test]
fn forwarded_for_from_a_trusted_proxy_decides_allow_ips() {
    let gateway = Gateway::start("trusted_proxies = [\"127.0.0.0/8\"]");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let send = |id: &str, forwarded: Option<&str>| {
        let body = upsert(&format!("{run}-{id}"));
        let mut headers = vec![hmac_header(&body)];
        if let Some(value) = forwarded {
            headers.push(header("x-forwarded-for", value));
        }
        status(&exchange(
            gateway.addr,
            &post_sized("/webhooks/walled", &headers, &body),
        ))
    };
    assert_eq!(
        send("a", Some("203.0.113.5")),
        200,
        "an allowed client behind the proxy"
    );
    assert_eq!(
        send("b", Some("198.51.100.1")),
        403,
        "a client outside the allow list"
    );
    assert_eq!(
        send("c", Some("203.0.113.5, 198.51.100.1")),
        403,
        "the nearest untrusted hop counts"
    );
    assert_eq!(send("d", None), 403, "the proxy itself is not allowed");
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 1);
}

#[test]
fn the_messages_a_body_fans_out_to_count_against_the_body_memory_cap() {
    let gateway = Gateway::start("[gateway.limits]\nmax_body_memory = 200000");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let messages: Vec<String> = (0..7)
        .map(|i| {
            format!(r#"{{"id":"wamid.{run}{i}","from":"1","type":"text","text":{{"body":"hi"}}}}"#)
        })
        .collect();
    // A 30 KB context, copied into each of 7 messages: about 210 KB of
    // messages from a 31 KB body, past the 150 KB large requests may hold.
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"1","pad":"{}"}},"messages":[{}]}}}}]}}]}}"#,
        "p".repeat(30_000),
        messages.join(",")
    );
    let signature = sluice_gateway::signature::hmac::hex_hmac_sha256(META_SECRET, body.as_bytes());
    let headers = [header(
        "x-hub-signature-256",
        &format!("sha256={signature}"),
    )];
    let answer = exchange(
        gateway.addr,
        &post_sized("/webhooks/meta", &headers, body.as_bytes()),
    );
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("overloaded"));
    assert_eq!(
        gateway.metric(r#"sluice_gateway_shed_total{reason="body_memory"}"#),
        1.0
    );
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 0);
}
