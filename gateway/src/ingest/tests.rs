use super::*;

fn event(id: &str) -> Event {
    Event {
        id: EventId::from_provider(id),
        event_type: EventType::unknown(),
        data: crate::extract::EventData::from_value(&serde_json::Value::Null),
    }
}

#[test]
fn repeats_inside_one_request_count_as_duplicates() {
    let (unique, repeated) = first_of_each_id(vec![event("a"), event("b"), event("a")]);
    assert_eq!(repeated, 1);
    let ids: Vec<_> = unique.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
}

/// An ingestor with no broker behind it (Redis on a closed port, a
/// publisher that never connects), under `policy`, and a `shop` source.
fn offline(policy: &str) -> (Ingestor, crate::source::Sources, GatewayMetrics) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = dir.path().join("token");
    std::fs::write(&token, "shop-token").expect("a token file");
    let toml = format!(
        "[gateway]\non_redis_error = \"{policy}\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n\
         [sources.shop]\nscheme = \"token\"\ntokens = [\"file:{}\"]\n",
        token.display()
    );
    let config = sluice_shared::config::Config::from_toml(&toml).expect("the test config");
    let sources =
        crate::source::Sources::from_config(&config.gateway, &config.sources).expect("the sources");
    let metrics = GatewayMetrics::new().expect("a registry");
    let dedup = DedupStore::new(&config.redis).expect("a lazy Redis client");
    let publisher =
        ConfirmedPublisher::unconnected(&config.amqp, &config.routes, 1, metrics.clone());
    let policy = Policy::from_config(&config.gateway);
    let ingestor = Ingestor::new(dedup, publisher, metrics.clone(), policy);
    (ingestor, sources, metrics)
}

fn context<'a>(
    sources: &'a crate::source::Sources,
    correlation: &'a Correlation,
) -> RequestContext<'a> {
    RequestContext {
        source: sources.get("shop").expect("the shop source"),
        correlation,
        received: SystemTime::now(),
        deadline: Instant::now() + Duration::from_millis(1500),
    }
}

#[tokio::test]
async fn redis_down_under_reject_refuses_with_the_retry_after_of_the_policy() {
    let (ingestor, sources, metrics) = offline("reject");
    let correlation = Correlation::from_headers(&Default::default());
    let ctx = context(&sources, &correlation);
    let refused = ingestor.ingest(&ctx, vec![event("a")]).await;
    let Err(IngestError::Unavailable { cause, retry_after }) = refused else {
        panic!("refused for Redis: {refused:?}");
    };
    assert!(matches!(cause, Unavailable::Redis(_)), "{cause}");
    assert_eq!(retry_after, Duration::from_secs(5));
    assert_eq!(metrics.dedup_bypass.with_label_values(&["shop"]).get(), 0);
}

#[tokio::test]
async fn redis_down_under_publish_goes_without_dedup_until_the_publish_fails() {
    let (ingestor, sources, metrics) = offline("publish");
    let correlation = Correlation::from_headers(&Default::default());
    let ctx = context(&sources, &correlation);
    let events = vec![event("a"), event("b"), event("a")];
    let refused = ingestor.ingest(&ctx, events).await;
    let Err(IngestError::Unavailable { cause, .. }) = refused else {
        panic!("refused for RabbitMQ: {refused:?}");
    };
    assert!(
        matches!(cause, Unavailable::Publish(PublishError::NotConnected)),
        "{cause}"
    );
    // The repeat was dropped before Redis was asked.
    assert_eq!(metrics.dedup_bypass.with_label_values(&["shop"]).get(), 2);
    let published = metrics.events.with_label_values(&["shop", "published"]);
    assert_eq!(published.get(), 0);
}

#[tokio::test]
async fn an_unparseable_body_not_kept_is_not_counted_as_dead_lettered() {
    let (ingestor, sources, metrics) = offline("publish");
    let correlation = Correlation::from_headers(&Default::default());
    let ctx = context(&sources, &correlation);
    let body = crate::signature::tests_support::verified(b"{not json".to_vec());
    let id = EventId::digest_of(b"{not json");
    let refused = ingestor.dead_letter_unparseable(&ctx, id, &body).await;
    assert!(
        matches!(refused, Err(IngestError::Unavailable { .. })),
        "{refused:?}"
    );
    let kept = metrics.events.with_label_values(&["shop", "dead_lettered"]);
    assert_eq!(kept.get(), 0);
}
