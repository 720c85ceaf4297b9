//! The logs of a full run hold no payload, phone number, event id or secret,
//! and every line about an event names it by its id's digest.
//!
//! This is a test target of its own (`cargo test -p sluice-worker --test
//! logs`) because it installs the process's global tracing subscriber: the
//! binaries' own JSON format ([`sluice_shared::telemetry::init_with_writer`])
//! writing into a buffer instead of stderr, at `debug` for Sluice's crates.
//! The in-process gateway and worker then handle every shared fixture
//! (`tests/fixtures/`: real-looking phone numbers, names and message
//! texts) through every path that logs: accepted, duplicate, bad signature,
//! unknown source, unparseable body, Meta's handshake right and wrong, a
//! challenge, a retry, a dead letter, the log handler. Then no line may
//! contain any of the fixtures' personal values or any secret, each line
//! must be JSON, and one request must be traceable from gateway to worker by
//! its request id and trace id, and one event by its id's digest.
//!
//! Phone numbers hide in ids: a WhatsApp `wamid` is the base64 of a protobuf
//! holding the user's number (`wamid.HBgLMTY1MDM4Nzk0Mzk...` holds
//! `16503879439`). So the test decodes every wamid of the fixtures and takes
//! every run of 8 or more digits in the fixtures, decoded wamids included, as
//! a phone number; a line fails if it holds one as text, or inside any
//! base64 it carries, or holds a fixture's wamid at all.

mod personal;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_gateway::signature::hex_hmac_sha256;
use sluice_shared::config::{LogFormat, TelemetryConfig};
use sluice_shared::id_digest::{IdDigestKey, IdDigester};
use sluice_shared::secret::Secret;

use personal::{personal_values, phone_numbers, phones_in, wamids};
use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::providers::{
    NOTMETA_SECRET, TREBLE_TOKEN, WA_SECRET, WA_VERIFY, fixture, send, sources_toml,
};
use sluice_testkit::{
    ROUTE_SECRET, RunningGateway, RunningWorker, SOURCE_SECRET, TestEnv, eventually, signature,
};

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// The key of the id digests in this run's logs.
const DIGEST_KEY: &str = "logs-test-id-digest-key";

fn sources_and_routes(env: &TestEnv, crm: &Downstream, refusing: &Downstream) -> String {
    let route_secret = env.secret_path("route.secret").display().to_string();
    format!(
        r#"{sources}
[[routes]]
name = "refuse-statuses"
match = ["whatsapp.status.*"]
# Statuses go here alone, not also to the CRM route below.
exclusive = true
handler = "http"
url = "{refusing}"
secret = "file:{route_secret}"

[[routes]]
name = "crm"
match = ["whatsapp.*", "whatzme.*", "notmeta.*"]
handler = "http"
url = "{crm}"
secret = "file:{route_secret}"
# Every event's first attempt fails: five in a row would open the breaker,
# which holds the failure that opened it uncounted and so changes the
# attempt the delivery line names. The breaker is not what this test reads.
[routes.breaker]
enabled = false

[[routes]]
name = "audit"
match = ["treble.*"]
handler = "log"
"#,
        sources = sources_toml(env),
        refusing = refusing.url(),
        crm = crm.url(),
    )
}

/// POSTs `body` with `headers`; returns the status.
async fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    send(url, headers, body).await.0
}

fn hub(body: &[u8]) -> (&'static str, String) {
    (
        "X-Hub-Signature-256",
        format!("sha256={}", hex_hmac_sha256(WA_SECRET, body)),
    )
}

/// Sends every fixture through every path that logs.
async fn traffic(gateway: &RunningGateway) {
    let text = fixture("whatsapp-cloud-text.json");
    let wa = gateway.url("whatsapp");
    let traced = [hub(&text), ("x-request-id", "req-logs-1".to_owned())];
    assert_eq!(post(&wa, &traced, &text).await, 200);
    let batch = fixture("whatsapp-cloud-batch.json");
    assert_eq!(post(&wa, &[hub(&batch)], &batch).await, 200);
    let mut flipped = text.clone();
    flipped[text.len() / 2] ^= 1;
    assert_eq!(post(&wa, &[hub(&text)], &flipped).await, 401);
    assert_eq!(
        post(&gateway.url("nobody"), &[hub(&text)], &text).await,
        404
    );

    let whatzme = gateway.url("whatzme");
    for name in [
        "whatzme-upsert.json",
        "whatzme-update.json",
        "whatzme-upsert.json",
    ] {
        let body = fixture(name);
        let sig = [("X-Signature", signature(&body))];
        assert_eq!(post(&whatzme, &sig, &body).await, 200, "{name}");
    }
    let garbage = b"{not json: call +16505551234, Sheena Nelson";
    let sig = [("X-Signature", signature(garbage))];
    assert_eq!(
        post(&whatzme, &sig, garbage).await,
        200,
        "kept as unparseable"
    );

    let notmeta = gateway.url("notmeta");
    for name in ["notmeta-message-received.json", "notmeta-verify.json"] {
        let body = fixture(name);
        let sig = format!("sha256={}", hex_hmac_sha256(NOTMETA_SECRET, &body));
        assert_eq!(
            post(&notmeta, &[("X-NotMeta-Signature", sig)], &body).await,
            200
        );
    }
    let treble = fixture("treble-message-read.json");
    let bearer = [("Authorization", format!("Bearer {TREBLE_TOKEN}"))];
    assert_eq!(post(&gateway.url("treble"), &bearer, &treble).await, 200);

    for (token, status) in [
        (format!("{WA_VERIFY}-wrong"), 403),
        (WA_VERIFY.to_owned(), 200),
    ] {
        let url = format!("{wa}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=ch-991");
        let answer = reqwest::get(url).await.expect("the gateway answers");
        assert_eq!(answer.status().as_u16(), status);
    }
}

/// A field of a log line, at the top level or in its span.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name).or_else(|| line.get("span")?.get(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_no_payload_phone_number_or_secret_and_names_every_event() {
    let capture = Capture::default();
    let writer = capture.clone();
    let telemetry = TelemetryConfig {
        log_format: LogFormat::Json,
        log_level: "info,sluice_gateway=debug,sluice_worker=debug,sluice_shared=debug".into(),
        id_digest_key: Some(IdDigestKey::new(Secret::new(DIGEST_KEY))),
    };
    sluice_shared::telemetry::init_with_writer(&telemetry, move || writer.clone());

    let env = TestEnv::new("logs");
    let crm = Downstream::start(Plan::FailFirst(1, 500)).await;
    let refusing = Downstream::start(Plan::Always(400)).await;
    let config = env.config(&sources_and_routes(&env, &crm, &refusing));
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    traffic(&gateway).await;

    // 1 text + 3 batch messages + upsert + 2 update statuses + notmeta.
    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let settled = eventually(Duration::from_secs(30), || async {
        crm.delivered_ids().len() == 8 && broker.count(&topology.dead_queue()).await == 5
    })
    .await;
    assert!(
        settled,
        "8 delivered after a retry; 4 statuses and 1 unparseable body dead"
    );
    worker.stop().await;
    gateway.stop().await;
    assert_eq!(broker.drain(&topology.dead_queue()).await.len(), 5);
    assert_eq!(broker.total(&topology).await, 0);
    broker.delete(&topology).await;

    let logs = capture.text();
    let mut forbidden = personal_values();
    for secret in [
        SOURCE_SECRET,
        WA_SECRET,
        WA_VERIFY,
        NOTMETA_SECRET,
        TREBLE_TOKEN,
        ROUTE_SECRET,
        ROUTE_SECRET.trim_start_matches("whsec_"),
        "challenge_string_123",
        "ch-991",
        DIGEST_KEY,
    ] {
        forbidden.insert(secret.to_owned());
    }
    let wamids = wamids();
    forbidden.extend(wamids.iter().cloned());
    assert!(
        forbidden.contains("16505551234") && forbidden.contains("Does it come in another color?")
    );
    let leaks: Vec<&String> = forbidden
        .iter()
        .filter(|v| logs.contains(v.as_str()))
        .collect();
    assert!(leaks.is_empty(), "the logs contain {leaks:?}:\n{logs}");

    let text_id = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
    let phones = phone_numbers();
    for number in [
        "16503879439",
        "16505551234",
        "5215500000003",
        "573000000000",
    ] {
        assert!(phones.contains(number), "{number} is among {phones:?}");
    }
    let line_of_old = format!(r#"{{"event_id":"{text_id}:read","message":"event published"}}"#);
    assert!(
        phones_in(&line_of_old, &phones).contains(&"16503879439".to_owned()),
        "a wamid in a line is caught by the number it hides"
    );
    for line in logs.lines() {
        let found = phones_in(line, &phones);
        assert!(found.is_empty(), "phone numbers {found:?} in: {line}");
    }

    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        assert!(
            field(line, "event_id").is_none(),
            "no line carries an id: {line}"
        );
        if field(line, "event_id_digest").is_some() {
            assert!(
                field(line, "source").is_some() && field(line, "type").is_some(),
                "a line about an event names its source and type: {line}"
            );
        }
    }
    // The gateway's and the worker's lines carry one digest for the event,
    // the one `sluice-worker id-digest` computes under the configured key.
    let digest = IdDigester::keyed(DIGEST_KEY.as_bytes())
        .digest(text_id)
        .to_string();
    let about = |message: &str| {
        lines
            .iter()
            .find(|l| {
                field(l, "event_id_digest").and_then(Value::as_str) == Some(&digest)
                    && l["message"] == message
            })
            .unwrap_or_else(|| panic!("no \"{message}\" line for {digest}:\n{logs}"))
    };
    let published = about("event published");
    let delivered = about("event delivered");
    assert_eq!(published["span"]["source"], "whatsapp");
    assert_eq!(published["type"], "message.text");
    for line in [published, delivered] {
        assert_eq!(
            field(line, "request_id").and_then(Value::as_str),
            Some("req-logs-1")
        );
    }
    assert_eq!(
        published["span"]["trace_id"], delivered["span"]["trace_id"],
        "one trace id from ingest to delivery"
    );
    assert_eq!(delivered["span"]["attempt"], 2, "delivered on the retry");
}
