//! The gateway's hot pure functions: the signature check, extracting a
//! 1,000-update WhatsApp batch, and building the envelopes it publishes.
//! `cargo bench -p sluice-gateway`; figures in docs/benchmarks.md.

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_gateway::correlation::{Correlation, REQUEST_ID_HEADER};
use sluice_gateway::extract::Extracted;
use sluice_gateway::extract::whatsapp::WhatsAppExtractor;
use sluice_gateway::ingest::event_message;
use sluice_gateway::signature::{Authenticator, HmacSignature, Scheme, hex_hmac_sha256};
use sluice_shared::config::DigestEncoding;
use sluice_shared::message::SourceName;
use sluice_shared::secret::Secret;

const SECRET: &str = "bench-secret";

fn batch(size: usize) -> String {
    let messages: Vec<String> = (0..size)
        .map(|n| format!(r#"{{"from":"5215500000001","id":"wamid.B-{n}","timestamp":"1763700001","type":"text","text":{{"body":"hello {n}"}}}}"#))
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111","phone_number_id":"1"}},"contacts":[{{"profile":{{"name":"A"}},"wa_id":"5215500000001"}}],"messages":[{}]}}}}]}}]}}"#,
        messages.join(",")
    )
}

fn meta_auth() -> Authenticator {
    Authenticator {
        scheme: Scheme::Hmac(HmacSignature::new(
            HeaderName::from_static("x-hub-signature-256"),
            Some("sha256=".into()),
            DigestEncoding::Hex,
            &[Secret::new(SECRET)],
        )),
        token: None,
    }
}

fn signed(body: &str) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let value = format!("sha256={}", hex_hmac_sha256(SECRET, body.as_bytes()));
    headers.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&value).unwrap_or_else(|_| unreachable!()),
    );
    (headers, Bytes::from(body.to_owned()))
}

fn benches(c: &mut Criterion) {
    let auth = meta_auth();
    // Each message's correlation as a request with `X-Request-Id: req-1` gets it.
    let mut ids = HeaderMap::new();
    ids.insert(REQUEST_ID_HEADER, HeaderValue::from_static("req-1"));
    for size in [1, 1000] {
        let (headers, body) = signed(&batch(size));
        let mut group = c.benchmark_group(format!("batch of {size}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("verify signature", |b| {
            b.iter(|| auth.verify(&headers, body.clone()).is_ok())
        });
        let verified = auth
            .verify(&headers, body.clone())
            .unwrap_or_else(|_| unreachable!());
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function("extract events", |b| {
            b.iter(|| WhatsAppExtractor.extract(&verified, size))
        });
        group.bench_function("extract and build envelopes", |b| {
            b.iter(|| {
                let Extracted::Events(events) = WhatsAppExtractor.extract(&verified, size) else {
                    unreachable!()
                };
                events
                    .into_iter()
                    .map(|e| {
                        event_message(
                            "sluice.events".into(),
                            &SourceName::from_config_name("whatsapp"),
                            &Correlation::from_headers(&ids),
                            SystemTime::now(),
                            e,
                        )
                        .body
                        .len()
                    })
                    .sum::<usize>()
            })
        });
        group.finish();
    }
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
