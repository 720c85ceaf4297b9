use std::time::SystemTime;

use serde_json::json;
use sluice_shared::config::Config;

use super::*;
use crate::correlation::Correlation;
use crate::ingest::event_message;
use crate::signature::tests_support::verified;

/// A `json` source fanning out `/items`, under `[gateway]` settings `gateway`.
fn source(gateway: &str) -> Source {
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "shop-token").unwrap();
    let toml = format!(
        "[gateway]\n{gateway}\n[sources.shop]\nscheme = \"token\"\ntokens = [\"file:{}\"]\n\
         items_pointer = \"/items\"\nitem_id_pointer = \"/id\"\ntype_pointer = \"/event\"\n",
        token.path().display()
    );
    let config = Config::from_toml(&toml).unwrap();
    let mut sources = Sources::from_config(&config.gateway, &config.sources).unwrap();
    sources.0.remove("shop").unwrap()
}

/// A body with a shared context of `context` bytes and `items` small items.
fn body(context: usize, items: usize) -> Vec<u8> {
    let items: Vec<_> = (0..items).map(|n| json!({"id": format!("i{n}")})).collect();
    let body = json!({"event": "order.updated", "context": "c".repeat(context), "items": items});
    serde_json::to_vec(&body).unwrap()
}

#[test]
fn a_large_context_times_many_items_is_refused_before_a_message_is_built() {
    // 200 items × a 20 KB context: 4 MB of messages from a 20 KB body.
    let refused = source("body_limit = 65536").extract(&verified(body(20_000, 200)));
    let Extracted::Refused(FanOutError::TooManyBytes {
        events,
        bytes,
        limit,
    }) = refused
    else {
        panic!("refused for its size: {refused:?}");
    };
    assert_eq!((events, limit), (200, 4 * 65_536));
    assert!(bytes > 200 * 20_000, "{bytes}");
}

#[test]
fn the_size_counted_is_the_size_published() {
    let shop = source("body_limit = 4194304");
    let Extracted::Events(events) = shop.extract(&verified(body(20_000, 200))) else {
        panic!("4 MB of messages are within 16 MiB");
    };
    let counted: usize = events.iter().map(|e| e.envelope_len("shop")).sum();
    let correlation = Correlation::from_headers(&HeaderMap::new());
    let published: usize = events
        .into_iter()
        .map(|e| {
            event_message(
                "x".into(),
                &SourceName::from_config_name("shop"),
                &correlation,
                SystemTime::now(),
                e,
            )
            .body
            .len()
        })
        .sum();
    assert_eq!(counted, published);
    assert!(counted > 200 * 20_000);
}

#[test]
fn more_events_than_the_gateway_takes_are_refused() {
    let shop = source("max_events_per_request = 10");
    let refused = shop.extract(&verified(body(10, 11)));
    let expected = FanOutError::TooManyEvents {
        events: 11,
        limit: 10,
    };
    assert_eq!(refused, Extracted::Refused(expected));
    assert!(matches!(
        shop.extract(&verified(body(10, 10))),
        Extracted::Events(events) if events.len() == 10
    ));
}
