//! Property tests of the config loader over arbitrary input: any text, and
//! TOML built from the real keys with arbitrary values, is either a config or
//! an error naming what is wrong; never a panic. `make fuzz` runs them with
//! a million cases each (`PROPTEST_CASES`).

use proptest::prelude::*;

use super::{Config, ConfigError, SCHEME_KEYS, SchemeKind};

/// Keys of every table, with the value kinds they take and some they do not.
const KEYS: &[(&str, &str)] = &[
    ("gateway", "listen"),
    ("gateway", "ack_budget"),
    ("gateway", "body_limit"),
    ("gateway", "threads"),
    ("gateway", "trusted_proxies"),
    ("gateway.limits", "header_read_timeout"),
    ("gateway.limits", "max_header_bytes"),
    ("gateway.limits", "max_connections"),
    ("gateway.limits", "max_body_memory"),
    ("gateway.tls", "cert"),
    ("redis", "url"),
    ("redis", "timeout"),
    ("amqp", "url"),
    ("amqp", "retry_delays"),
    ("amqp", "delivery_limit"),
    ("sources.s", "scheme"),
    ("sources.s", "secrets"),
    ("sources.s", "id_pointer"),
    ("sources.s", "rate_limit"),
    ("sources.s", "allow_ips"),
    ("sources.s", "tolerance"),
    ("sources.s", "header"),
    ("sources.s", "prefix"),
    ("sources.s", "encoding"),
    ("sources.s", "verify_token"),
    ("sources.s", "tokens"),
    ("sources.s", "token_header"),
    ("dlq.http", "enabled"),
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,24}".prop_map(|s| format!("{s:?}")),
        Just("\"1ms\"".to_owned()),
        Just("\"99999999999999d\"".to_owned()),
        Just("\"0.0.0.0:0\"".to_owned()),
        Just("[\"10.0.0.0/33\", \"::/0\"]".to_owned()),
        Just("{ per_second = -1, burst = 0 }".to_owned()),
        Just("{ per_second = 1e308, burst = 4294967295 }".to_owned()),
        Just("[\"env:\", \"file:/nonexistent\"]".to_owned()),
        Just("[\"hmac-sha256\", \"md5\"]".to_owned()),
        Just("\"token\"".to_owned()),
        Just("\"standard-webhooks\"".to_owned()),
        Just("\"whatsapp-cloud\"".to_owned()),
        Just("\"X Bad Header\"".to_owned()),
        Just("\"env:SLUICE_FUZZ_UNSET\"".to_owned()),
        Just("\"https://exa mple/\"".to_owned()),
    ]
}

proptest! {
    #[test]
    fn fuzz_any_text_loads_or_fails_cleanly(text in "\\PC{0,400}") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn fuzz_real_keys_with_any_values_load_or_name_the_problem(
        entries in proptest::collection::vec((0..KEYS.len(), value()), 0..8),
    ) {
        let mut text = String::new();
        for (index, value) in entries {
            let (table, key) = KEYS[index];
            text.push_str(&format!("[{table}]\n{key} = {value}\n"));
        }
        if let Err(error) = Config::from_toml(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn fuzz_a_key_foreign_to_the_scheme_never_loads_whatever_its_value(
        (scheme, key) in proptest::sample::select(foreign_keys()),
        value in value(),
    ) {
        let text = format!("[sources.s]\nscheme = \"{scheme}\"\n{key} = {value}\n{}\n", required(scheme));
        match Config::from_toml(&text) {
            Ok(_) => prop_assert!(false, "{} loaded", text),
            // Refused for its scheme (by name), or its value refused for its type.
            Err(ConfigError::Invalid { key: named, .. }) => {
                prop_assert_eq!(named, format!("sources.s.{key}"));
            }
            Err(ConfigError::Load(error)) => prop_assert!(!error.to_string().is_empty()),
            Err(other) => prop_assert!(false, "{}", other),
        }
    }
}

/// The keys a source of `scheme` needs, and nothing else.
fn required(scheme: SchemeKind) -> &'static str {
    match scheme {
        SchemeKind::Token => "tokens = [\"env:T\"]",
        SchemeKind::WhatsappCloud => "secrets = [\"env:S\"]\nverify_token = \"env:V\"",
        SchemeKind::HmacSha256 | SchemeKind::StandardWebhooks => "secrets = [\"env:S\"]",
    }
}

/// Every scheme with each key of [`SCHEME_KEYS`] it does not read.
fn foreign_keys() -> Vec<(SchemeKind, &'static str)> {
    SchemeKind::ALL
        .into_iter()
        .flat_map(|scheme| {
            SCHEME_KEYS
                .iter()
                .filter(move |(_, readers)| !readers.contains(&scheme))
                .map(move |(key, _)| (scheme, *key))
        })
        .collect()
}
