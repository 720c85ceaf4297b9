//! Every provider as it really arrives: the shared fixtures through the real
//! HTTP path, Meta's handshake and batches, Standard Webhooks, tokens,
//! challenges. Each accepted request's events are read back off the queue.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_gateway::signature::hex_hmac_sha256;
use sluice_shared::secret::Secret;
use sluice_shared::standard_webhooks::SigningKey;

use sluice_testkit::broker::Broker;
use sluice_testkit::providers::{
    NOTMETA_SECRET, TREBLE_TOKEN, WA_SECRET, fixture, secret_file, send, sources_toml,
};
use sluice_testkit::{RunningGateway, TestEnv};

const SW_OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SW_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The sources of every provider kind, secrets in files of the test's own:
/// the fixtures' three, a Standard Webhooks sender mid-rotation, and a source
/// that needs both a signature and a token.
fn providers_toml(env: &TestEnv) -> String {
    let notmeta = secret_file(env, "notmeta.secret", NOTMETA_SECRET);
    let treble = secret_file(env, "treble.token", TREBLE_TOKEN);
    format!(
        r#"{fixtures}
[sources.sw]
scheme = "standard-webhooks"
secrets = ["{sw_old}", "{sw_new}"]

[sources.combo]
scheme = "hmac-sha256"
secrets = ["{notmeta}"]
header = "X-NotMeta-Signature"
prefix = "sha256="
tokens = ["{treble}"]
id_pointer = "/id"
type_pointer = "/type"
"#,
        fixtures = sources_toml(env),
        sw_old = secret_file(env, "sw.old", SW_OLD),
        sw_new = secret_file(env, "sw.new", SW_NEW),
    )
}

async fn start(name: &str) -> (TestEnv, RunningGateway) {
    let env = TestEnv::new(name);
    let config = env.config(&providers_toml(&env));
    let gateway = RunningGateway::start(config).await;
    (env, gateway)
}

fn meta_signature(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![(
        "X-Hub-Signature-256",
        format!("sha256={}", hex_hmac_sha256(WA_SECRET, body)),
    )]
}

fn notmeta_signature(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![(
        "X-NotMeta-Signature",
        format!("sha256={}", hex_hmac_sha256(NOTMETA_SECRET, body)),
    )]
}

fn whatzme_signature(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![("X-Signature", sluice_testkit::signature(body))]
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

fn flipped(body: &[u8]) -> Vec<u8> {
    let mut copy = body.to_vec();
    let middle = copy.len() / 2;
    copy[middle] ^= 0x01;
    copy
}

/// `(id, type)` of every event on the work queue, taken off it.
async fn published(env: &TestEnv) -> BTreeSet<(String, String)> {
    let broker = Broker::connect(&env.amqp_url).await;
    broker
        .drain(&env.topology().work_queue())
        .await
        .iter()
        .map(|m| {
            let envelope = m.json();
            let text = |key: &str| envelope[key].as_str().unwrap_or_default().to_owned();
            (text("id"), text("type"))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_accepted_as_sent_and_a_flipped_byte_is_refused() {
    let (env, gateway) = start("fixtures").await;
    type Signer = fn(&[u8]) -> Vec<(&'static str, String)>;
    let signed: [(&str, &str, Signer, usize); 5] = [
        ("whatsapp", "whatsapp-cloud-text.json", meta_signature, 1),
        ("whatsapp", "whatsapp-cloud-batch.json", meta_signature, 7),
        ("whatzme", "whatzme-upsert.json", whatzme_signature, 1),
        ("whatzme", "whatzme-update.json", whatzme_signature, 2),
        (
            "notmeta",
            "notmeta-message-received.json",
            notmeta_signature,
            1,
        ),
    ];
    for (source, name, sign, events) in signed {
        let body = fixture(name);
        let (status, answer) = send(&gateway.url(source), &sign(&body), &flipped(&body)).await;
        assert_eq!(status, 401, "{name} with a flipped byte: {answer}");
        let (status, answer) = send(&gateway.url(source), &sign(&body), &body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(
            answer["accepted"].as_u64(),
            Some(events as u64),
            "{name}: {answer}"
        );
    }
    let treble = fixture("treble-message-read.json");
    let (status, _) = send(
        &gateway.url("treble"),
        &bearer("treble-token-for-tesst"),
        &treble,
    )
    .await;
    assert_eq!(status, 401, "a wrong token is refused");
    let (status, answer) = send(&gateway.url("treble"), &bearer(TREBLE_TOKEN), &treble).await;
    assert_eq!(status, 200, "{answer}");
    gateway.stop().await;

    let expected = pairs(&[
        (
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            "message.text",
        ),
        ("wamid.AAA001", "message.text"),
        ("wamid.AAA002", "message.image"),
        ("wamid.AAA003", "message.reaction"),
        ("wamid.OUT900:sent", "status.sent"),
        ("wamid.OUT900:delivered", "status.delivered"),
        ("wamid.OUT901:read", "status.read"),
        ("wamid.OUT902:failed", "status.failed"),
        ("3EB0C767D26A1D2E5F01", "messages.upsert"),
        ("3EB0C767D26A1D2E5F01:delivered", "messages.update"),
        ("3EB0C767D26A1D2E5F01:read", "messages.update"),
        ("evt_123456789", "message.received"),
        ("trb-msg-0001", "message_read"),
    ]);
    assert_eq!(
        published(&env).await,
        expected,
        "exactly the documented events, once each"
    );
    Broker::connect(&env.amqp_url)
        .await
        .delete(&env.topology())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_batch_fans_out_and_a_partly_seen_batch_publishes_only_the_new_items() {
    let (env, gateway) = start("batch").await;
    let url = gateway.url("whatsapp");
    let batch = fixture("whatsapp-cloud-batch.json");
    let counts = |text: &str| {
        let answer: serde_json::Value = serde_json::from_str(text).expect("JSON");
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64())
    };
    let (status, answer) = send(&url, &meta_signature(&batch), &batch).await;
    assert_eq!((status, counts(&answer)), (200, (Some(7), Some(0))));
    let (status, answer) = send(&url, &meta_signature(&batch), &batch).await;
    assert_eq!(
        (status, counts(&answer)),
        (200, (Some(0), Some(7))),
        "the same batch again is seven duplicates"
    );

    let mut partly: serde_json::Value = serde_json::from_slice(&batch).expect("JSON");
    let messages = &mut partly["entry"][0]["changes"][0]["value"]["messages"];
    messages[2]["id"] = serde_json::json!("wamid.NEW001");
    let statuses_entry = partly["entry"].as_array_mut().expect("entries");
    statuses_entry.truncate(1);
    let partly = serde_json::to_vec(&partly).expect("JSON");
    let (status, answer) = send(&url, &meta_signature(&partly), &partly).await;
    assert_eq!(
        (status, counts(&answer)),
        (200, (Some(1), Some(2))),
        "two seen, one new: {answer}"
    );
    gateway.stop().await;

    let all = published(&env).await;
    assert_eq!(all.len(), 8, "seven, then the one new message");
    assert!(all.contains(&("wamid.NEW001".to_owned(), "message.reaction".to_owned())));
    Broker::connect(&env.amqp_url)
        .await
        .delete(&env.topology())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_s_handshake_echoes_the_challenge_only_for_the_right_token() {
    let (env, gateway) = start("handshake").await;
    let client = reqwest::Client::new();
    let get = |query: &str| {
        let url = format!("{}?{query}", gateway.url("whatsapp"));
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.expect("answer");
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, kind, response.text().await.unwrap_or_default())
        }
    };
    let (status, kind, text) =
        get("hub.mode=subscribe&hub.verify_token=wa-verify-token&hub.challenge=1158201444").await;
    assert_eq!((status, text.as_str()), (200, "1158201444"));
    assert!(kind.starts_with("text/plain"), "{kind}");
    let (status, _, _) =
        get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444").await;
    assert_eq!(status, 403, "a wrong token");
    let (status, _, _) = get("hub.mode=subscribe&hub.challenge=1158201444").await;
    assert_eq!(status, 403, "no token");
    let (status, _, _) = get("hub.verify_token=wa-verify-token&hub.challenge=1").await;
    assert_eq!(status, 403, "no mode");
    let (status, _, _) = get("hub.mode=subscribe&hub.verify_token=wa-verify-token").await;
    assert_eq!(status, 403, "no challenge");
    let response = client
        .get(gateway.url("notmeta"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response.status().as_u16(),
        405,
        "a source without a handshake"
    );
    gateway.stop().await;
    assert!(
        published(&env).await.is_empty(),
        "a handshake publishes nothing"
    );
    Broker::connect(&env.amqp_url)
        .await
        .delete(&env.topology())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_event_is_answered_and_never_published() {
    let (env, gateway) = start("challenge").await;
    let body = fixture("notmeta-verify.json");
    let (status, _) = send(
        &gateway.url("notmeta"),
        &notmeta_signature(&body),
        &flipped(&body),
    )
    .await;
    assert_eq!(status, 401, "a challenge is authenticated like any event");
    let (status, text) = send(&gateway.url("notmeta"), &notmeta_signature(&body), &body).await;
    assert_eq!((status, text.as_str()), (200, "challenge_string_123"));
    gateway.stop().await;
    assert!(published(&env).await.is_empty());
    Broker::connect(&env.amqp_url)
        .await
        .delete(&env.topology())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_checks_signature_tolerance_and_takes_the_webhook_id() {
    let (env, gateway) = start("standard").await;
    let url = gateway.url("sw");
    let body =
        br#"{"type":"invoice.paid","timestamp":"2026-11-21T00:00:00Z","data":{"id":"in_1"}}"#;
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("i64");
    let headers = |id: &str, ts: i64, secret: &str| {
        let key = SigningKey::from_secret(&Secret::new(secret)).expect("whsec_");
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", key.sign(id, ts, body)),
        ]
    };
    let (status, answer) = send(&url, &headers("msg_new", now, SW_NEW), body).await;
    assert_eq!(status, 200, "the current secret: {answer}");
    let (status, answer) = send(&url, &headers("msg_old", now, SW_OLD), body).await;
    assert_eq!(status, 200, "the secret being rotated out: {answer}");
    let (status, _) = send(&url, &headers("msg_stale", now - 600, SW_NEW), body).await;
    assert_eq!(status, 401, "ten minutes old is a replay");
    let (status, _) = send(&url, &headers("msg_future", now + 600, SW_NEW), body).await;
    assert_eq!(status, 401, "ten minutes ahead is refused too");
    let mut several = headers("msg_several", now, SW_NEW);
    several[2].1 = format!("v1,bm90IGl0 {}", several[2].1);
    let (status, _) = send(&url, &several, body).await;
    assert_eq!(status, 200, "one matching signature in the list is enough");
    let (status, _) = send(&url, &headers("msg_new", now, SW_NEW), &flipped(body)).await;
    assert_eq!(status, 401);
    gateway.stop().await;
    let expected = pairs(&[
        ("msg_new", "invoice.paid"),
        ("msg_old", "invoice.paid"),
        ("msg_several", "invoice.paid"),
    ]);
    assert_eq!(
        published(&env).await,
        expected,
        "ids are the signed webhook-ids"
    );
    Broker::connect(&env.amqp_url)
        .await
        .delete(&env.topology())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_a_signature_and_a_token_needs_both() {
    let (env, gateway) = start("combo").await;
    let body = fixture("notmeta-message-received.json");
    let url = gateway.url("combo");
    let signature = notmeta_signature(&body);
    let mut both = signature.clone();
    both.extend(bearer(TREBLE_TOKEN));
    let mut wrong_token = signature.clone();
    wrong_token.extend(bearer("nope"));
    assert_eq!(
        send(&url, &signature, &body).await.0,
        401,
        "signature alone"
    );
    assert_eq!(
        send(&url, &bearer(TREBLE_TOKEN), &body).await.0,
        401,
        "token alone"
    );
    assert_eq!(send(&url, &wrong_token, &body).await.0, 401, "wrong token");
    assert_eq!(send(&url, &both, &body).await.0, 200, "both");
    gateway.stop().await;
    assert_eq!(published(&env).await.len(), 1);
    Broker::connect(&env.amqp_url)
        .await
        .delete(&env.topology())
        .await;
}
