//! The personal data of the fixtures, as the log test looks for it: values
//! under personal keys, the fixtures' `wamid`s, and phone numbers (every run
//! of 8 or more digits in a fixture or in a decoded `wamid`), found in a log
//! line as text or inside any base64 the line carries.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

use sluice_testkit::providers::fixture;

/// Fixture keys whose values are personal data or message content.
const PERSONAL_KEYS: &[&str] = &[
    "from",
    "to",
    "wa_id",
    "recipient_id",
    "display_phone_number",
    "phone_number_id",
    "cellphone",
    "remoteJid",
    "name",
    "body",
    "caption",
    "text",
    "conversation",
    "emoji",
    "title",
    "details",
    "message",
];

/// The fixtures the run sends.
const FIXTURES: &[&str] = &[
    "whatsapp-cloud-text.json",
    "whatsapp-cloud-batch.json",
    "whatzme-upsert.json",
    "whatzme-update.json",
    "notmeta-message-received.json",
    "notmeta-verify.json",
    "treble-message-read.json",
];

/// Every string of every fixture, with the key it sits under.
fn fixture_strings() -> Vec<(Option<String>, String)> {
    fn walk(value: &Value, key: Option<&str>, found: &mut Vec<(Option<String>, String)>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, Some(k), found)),
            Value::Array(items) => items.iter().for_each(|v| walk(v, key, found)),
            Value::String(s) => found.push((key.map(str::to_owned), s.clone())),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for name in FIXTURES {
        let value: Value = serde_json::from_slice(&fixture(name)).expect("a JSON fixture");
        walk(&value, None, &mut found);
    }
    found
}

/// The personal values of every fixture: strings under [`PERSONAL_KEYS`],
/// at least four characters long.
pub fn personal_values() -> BTreeSet<String> {
    fixture_strings()
        .into_iter()
        .filter(|(key, s)| {
            key.as_deref().is_some_and(|k| PERSONAL_KEYS.contains(&k)) && s.chars().count() >= 4
        })
        .map(|(_, s)| s)
        .collect()
}

/// The wamids of the fixtures (`wamid.<base64>`).
pub fn wamids() -> BTreeSet<String> {
    fixture_strings()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.starts_with("wamid."))
        .collect()
}

/// The bytes `text` stands for in any common base64 alphabet, if it is base64.
fn base64_decoded(text: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// Runs of 8 or more ASCII digits: what a phone number looks like.
fn digit_runs(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| !b.is_ascii_digit())
        .filter(|run| run.len() >= 8)
        .map(|run| String::from_utf8_lossy(run).into_owned())
        .collect()
}

/// Every phone number of the fixtures: each run of 8 or more digits in any
/// of their strings, and in the decoded base64 of each wamid.
pub fn phone_numbers() -> BTreeSet<String> {
    let mut found: BTreeSet<String> = fixture_strings()
        .iter()
        .flat_map(|(_, s)| digit_runs(s.as_bytes()))
        .collect();
    for wamid in wamids() {
        let encoded = wamid.trim_start_matches("wamid.");
        if let Some(decoded) = base64_decoded(encoded) {
            found.extend(digit_runs(&decoded));
        }
    }
    found
}

/// The phone numbers a log line holds, as text or inside any base64 in it.
pub fn phones_in(line: &str, phones: &BTreeSet<String>) -> Vec<String> {
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    let mut texts = vec![line.as_bytes().to_vec()];
    texts.extend(
        line.split(|c: char| !is_base64(c))
            .filter(|token| token.len() >= 12)
            .filter_map(base64_decoded),
    );
    phones
        .iter()
        .filter(|phone| {
            texts.iter().any(|text| {
                text.windows(phone.len())
                    .any(|window| window == phone.as_bytes())
            })
        })
        .cloned()
        .collect()
}
