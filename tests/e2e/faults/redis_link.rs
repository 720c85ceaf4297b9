//! Redis connections that stop being useful without failing: one whose peer
//! went silent is replaced after `redis.reconnect_after_timeouts` timeouts
//! in a row, one to a primary demoted by a failover (`READONLY`) at once.
//! The gateway runs `on_redis_error = "reject"`, so a 200 proves Redis works.

use std::time::Duration;

use sluice_shared::config::RedisErrorPolicy;

use sluice_testkit::private::PrivateRedis;
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{
    RunningGateway, SHARED_AMQP, TestEnv, eventually, metric, post_signed, upsert_body,
};

/// A gateway that needs Redis, reaching it through `proxy`.
async fn gateway_through(proxy: &Proxy, name: &str) -> (TestEnv, RunningGateway) {
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let env = TestEnv::with_brokers(name, SHARED_AMQP, &url);
    let mut config = env.config("");
    config.gateway.on_redis_error = RedisErrorPolicy::Reject;
    let gateway = RunningGateway::start(config).await;
    (env, gateway)
}

/// Posts new events until one is accepted (or `limit` passes).
async fn accepted_within(limit: Duration, env: &TestEnv, gateway: &RunningGateway) -> bool {
    let client = reqwest::Client::new();
    let mut n = 0;
    eventually(limit, || {
        n += 1;
        let body = upsert_body(&format!("{}-{n}", env.prefix));
        let (client, url) = (client.clone(), gateway.url("whatzme"));
        async move { post_signed(&client, &url, &body).await.0 == 200 }
    })
    .await
}

async fn reconnects(gateway: &RunningGateway, reason: &str) -> Option<f64> {
    let series = format!("sluice_gateway_redis_reconnects_total{{reason=\"{reason}\"}}");
    metric(&reqwest::Client::new(), gateway.admin_addr, &series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_connection_gone_silent_is_replaced_after_timeouts_in_a_row() {
    let redis = PrivateRedis::start().await;
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let (env, gateway) = gateway_through(&proxy, "redissilent").await;
    assert!(accepted_within(Duration::from_secs(5), &env, &gateway).await);

    // The connection in use goes silent; a new one would be carried.
    proxy.silence_existing();
    let body = upsert_body(&format!("{}-silent", env.prefix));
    let (status, answer) =
        post_signed(&reqwest::Client::new(), &gateway.url("whatzme"), &body).await;
    assert_eq!(status, 503, "the silent connection times out: {answer}");
    assert!(
        accepted_within(Duration::from_secs(10), &env, &gateway).await,
        "a new connection replaces the silent one"
    );
    assert!(reconnects(&gateway, "timeouts").await >= Some(1.0));
    gateway.stop().await;
    env.delete_topology().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_demoted_to_replica_is_left_at_once_for_the_new_primary() {
    let old_primary = PrivateRedis::start().await;
    let new_primary = PrivateRedis::start().await;
    let proxy = Proxy::start(([127, 0, 0, 1], old_primary.port).into()).await;
    let (env, gateway) = gateway_through(&proxy, "redisfailover").await;
    assert!(accepted_within(Duration::from_secs(5), &env, &gateway).await);

    // A failover: the address now leads to the new primary, and the old one
    // (where the open connection still goes) is a replica answering READONLY.
    proxy.redirect(([127, 0, 0, 1], new_primary.port).into());
    old_primary.replica_of(new_primary.port).await;
    let body = upsert_body(&format!("{}-readonly", env.prefix));
    let (status, answer) =
        post_signed(&reqwest::Client::new(), &gateway.url("whatzme"), &body).await;
    assert_eq!(
        status, 503,
        "the demoted primary refuses the claim: {answer}"
    );
    assert!(
        accepted_within(Duration::from_secs(5), &env, &gateway).await,
        "the next requests reach the new primary"
    );
    assert_eq!(reconnects(&gateway, "read_only").await, Some(1.0));
    gateway.stop().await;
    env.delete_topology().await;
}
