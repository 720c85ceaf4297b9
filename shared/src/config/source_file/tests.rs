use std::time::Duration;

use super::*;
use crate::config::Config;

const SOURCE: &str = r#"
    [sources.whatzme]
    scheme = "hmac-sha256"
    secrets = ["env:WHATZME_SECRET"]
    prefix = "sha256="
    id_pointer = "/messages/0/key/id"
    type_pointer = "/event"
"#;

/// The keys a source of `scheme` needs, and nothing else.
fn required(scheme: SchemeKind) -> &'static str {
    match scheme {
        HmacSha256 | StandardWebhooks => "secrets = [\"env:S\"]",
        WhatsappCloud => "secrets = [\"env:S\"]\nverify_token = \"env:V\"",
        Token => "tokens = [\"env:T\"]",
    }
}

/// A value of each key of [`SCHEME_KEYS`].
fn value(key: &str) -> &'static str {
    match key {
        "secrets" => "[\"env:S\"]",
        "header" => "\"X-Sig\"",
        "prefix" => "\"sha256=\"",
        "encoding" => "\"base64\"",
        "verify_token" => "\"env:V\"",
        "tolerance" => "\"1m\"",
        other => panic!("no value for {other}"),
    }
}

/// `[sources.s]` of `scheme` with its required keys and `extra`.
fn source(scheme: SchemeKind, extra: &str) -> String {
    format!(
        "[sources.s]\nscheme = \"{scheme}\"\n{}\n{extra}",
        required(scheme)
    )
}

fn load(text: &str) -> SourceConfig {
    let mut config = Config::from_toml(text).expect("loads");
    config.sources.remove("s").expect("source s")
}

#[test]
fn a_source_reads_with_its_defaults() {
    let config = Config::from_toml(SOURCE).unwrap();
    let source = &config.sources["whatzme"];
    let SourceScheme::HmacSha256(hmac) = &source.scheme else {
        panic!("an hmac-sha256 source: {source:?}");
    };
    assert_eq!(hmac.header, "X-Signature");
    assert_eq!(hmac.encoding, DigestEncoding::Hex);
    assert_eq!(hmac.prefix.as_deref(), Some("sha256="));
    assert_eq!(hmac.secrets[0].key(), "sources.whatzme.secrets[0]");
    assert_eq!(source.dedup_ttl, Duration::from_secs(604_800));
    assert_eq!(source.extractor, ExtractorKind::Json);
    assert!(source.tokens.is_none() && source.challenge.is_none());
}

#[test]
fn an_unknown_scheme_names_its_key() {
    let err = Config::from_toml(&SOURCE.replace("hmac-sha256", "md5")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("md5") && text.contains("scheme"), "{text}");
}

#[test]
fn a_source_name_with_a_dot_is_refused() {
    let err = Config::from_toml(&SOURCE.replace("sources.whatzme", "sources.\"a.b\"")).unwrap_err();
    assert!(err.to_string().contains("sources.a.b"), "{err}");
}

#[test]
fn a_tolerance_on_an_hmac_source_is_refused_naming_the_key_the_source_and_what_to_do() {
    let text = format!("{SOURCE}tolerance = \"5m\"\n");
    let error = Config::from_toml(&text).expect_err("refused").to_string();
    assert!(
        error.starts_with("config key `sources.whatzme.tolerance`: "),
        "names the key and the source: {error}"
    );
    assert!(
        error.contains("scheme hmac-sha256 does not read `tolerance`"),
        "{error}"
    );
    assert!(error.contains("only standard-webhooks does"), "{error}");
    assert!(error.contains("remove it"), "says what to do: {error}");
    assert!(
        error.contains("takes `secrets`, `header`, `prefix` and `encoding` besides"),
        "lists what the scheme takes: {error}"
    );
}

#[test]
fn every_key_is_refused_by_the_schemes_that_do_not_read_it() {
    for &(key, readers) in SCHEME_KEYS {
        for scheme in SchemeKind::ALL {
            let text = source(scheme, &format!("{key} = {}", value(key)));
            // A required key is already written once: write it twice is a TOML error, skip.
            if required(scheme).contains(&format!("{key} =")) {
                continue;
            }
            let loaded = Config::from_toml(&text);
            if readers.contains(&scheme) {
                assert!(loaded.is_ok(), "{scheme} reads {key}: {loaded:?}");
                continue;
            }
            let error = loaded.expect_err(&text).to_string();
            assert!(
                error.contains(&format!("sources.s.{key}`"))
                    && error.contains(&format!("scheme {scheme} does not read `{key}`")),
                "{scheme} refuses {key}: {error}"
            );
        }
    }
}

#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment's Jail fixes the closure's error type"
)]
fn a_foreign_key_from_the_environment_is_refused_too() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("s.toml", &source(HmacSha256, ""))?;
        jail.set_env("SLUICE_SOURCES__S__TOLERANCE", "1m");
        let error = Config::load(Some(std::path::Path::new("s.toml")))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("sources.s.tolerance"), "{error}");
        Ok(())
    });
}

#[test]
fn a_key_no_scheme_reads_is_refused_by_name() {
    let error = Config::from_toml(&source(StandardWebhooks, "toleranc = \"1m\""))
        .expect_err("a typo")
        .to_string();
    assert!(error.contains("toleranc"), "{error}");
}

#[test]
fn each_scheme_holds_its_own_keys_parsed() {
    let hmac = load(&source(
        HmacSha256,
        "header = \"X-NotMeta-Signature\"\nencoding = \"base64\"",
    ));
    let SourceScheme::HmacSha256(scheme) = &hmac.scheme else {
        panic!("hmac: {hmac:?}");
    };
    assert_eq!(
        scheme.header,
        HeaderName::from_static("x-notmeta-signature")
    );
    assert_eq!(scheme.encoding, DigestEncoding::Base64);

    let meta = load(&source(WhatsappCloud, ""));
    let SourceScheme::WhatsappCloud(scheme) = &meta.scheme else {
        panic!("whatsapp: {meta:?}");
    };
    assert_eq!(scheme.verify_token.key(), "sources.s.verify_token");
    assert_eq!(meta.extractor, ExtractorKind::WhatsappCloud);

    let standard = load(&source(StandardWebhooks, ""));
    let SourceScheme::StandardWebhooks(scheme) = &standard.scheme else {
        panic!("standard: {standard:?}");
    };
    assert_eq!(scheme.tolerance, Duration::from_secs(300), "the default");
    assert_eq!(standard.extractor, ExtractorKind::StandardWebhooks);
    let standard = load(&source(StandardWebhooks, "tolerance = \"30s\""));
    assert!(matches!(
        standard.scheme,
        SourceScheme::StandardWebhooks(StandardWebhooksScheme { tolerance, .. })
            if tolerance == Duration::from_secs(30)
    ));

    let token = load(&source(Token, "token_format = \"plain\""));
    assert!(matches!(token.scheme, SourceScheme::Token));
    let tokens = token.tokens.expect("the token scheme always has tokens");
    assert_eq!(tokens.header, AUTHORIZATION);
    assert_eq!(tokens.format, TokenFormat::Plain);
    assert_eq!(tokens.tokens[0].key(), "sources.s.tokens[0]");
}

#[test]
fn a_signature_scheme_may_add_tokens_in_a_header_of_its_own() {
    let source = load(&source(
        HmacSha256,
        "tokens = [\"env:T\"]\ntoken_header = \"X-Api-Key\"",
    ));
    let tokens = source.tokens.expect("tokens");
    assert_eq!(tokens.header, HeaderName::from_static("x-api-key"));
    assert_eq!(tokens.format, TokenFormat::Bearer, "the default");
}

#[test]
fn a_challenge_is_its_type_and_pointer() {
    let source = load(&source(HmacSha256, "challenge_type = \"webhook.verified\""));
    assert_eq!(
        source.challenge,
        Some(ChallengeConfig {
            event_type: "webhook.verified".into(),
            pointer: "/data/challenge".into(),
        })
    );
}

#[test]
fn what_a_scheme_needs_is_asked_for_by_key() {
    for (text, key) in [
        (
            "[sources.s]\nscheme = \"hmac-sha256\"".to_owned(),
            "sources.s.secrets",
        ),
        (
            "[sources.s]\nscheme = \"standard-webhooks\"\nsecrets = []".to_owned(),
            "sources.s.secrets",
        ),
        (
            "[sources.s]\nscheme = \"token\"".to_owned(),
            "sources.s.tokens",
        ),
        (
            "[sources.s]\nscheme = \"whatsapp-cloud\"\nsecrets = [\"env:S\"]".to_owned(),
            "sources.s.verify_token",
        ),
        (source(HmacSha256, "header = \"X Sig\""), "sources.s.header"),
        (
            source(Token, "token_header = \"bad header\""),
            "sources.s.token_header",
        ),
        (
            source(StandardWebhooks, "tolerance = \"0s\""),
            "sources.s.tolerance",
        ),
        (source(Token, "id_pointer = \"id\""), "sources.s.id_pointer"),
        (source(Token, "dedup_ttl = \"10ms\""), "sources.s.dedup_ttl"),
    ] {
        let error = Config::from_toml(&text).expect_err(&text).to_string();
        assert!(
            error.starts_with(&format!("config key `{key}`")),
            "{text}: {error}"
        );
    }
}

#[test]
fn the_configuration_reference_lists_the_keys_of_each_scheme() {
    let docs = include_str!("../../../../docs/configuration.md");
    for scheme in SchemeKind::ALL {
        let row = docs
            .lines()
            .find(|line| line.starts_with(&format!("| `{scheme}` |")))
            .unwrap_or_else(|| panic!("docs/configuration.md has a row for {scheme}"));
        for &(key, readers) in SCHEME_KEYS {
            assert_eq!(
                row.contains(&format!("`{key}`")),
                readers.contains(&scheme),
                "the {scheme} row and SCHEME_KEYS disagree on {key}: {row}"
            );
        }
    }
}
