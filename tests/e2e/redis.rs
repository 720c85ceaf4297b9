//! Redis in trouble, and the two-phase dedup keys: a Redis outage follows the
//! `on_redis_error` policy; a key another request holds gives 503 with `Retry-After: 1`.

use std::time::Duration;

use sluice_gateway::dedup::{DedupKey, claim_script_hash};
use sluice_shared::config::RedisErrorPolicy;

use sluice_testkit::broker::Broker;
use sluice_testkit::private::PrivateRedis;
use sluice_testkit::{
    RunningGateway, SHARED_AMQP, SHARED_REDIS, TestEnv, eventually, metric, post_signed,
    upsert_body,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_publish_policy_accepts_and_counts_the_bypass_and_reject_answers_503() {
    let redis = PrivateRedis::start().await;
    let env = TestEnv::with_brokers("redisdown", SHARED_AMQP, &redis.url());
    let publish = RunningGateway::start(env.config("")).await;
    let mut config = env.config("");
    config.gateway.on_redis_error = RedisErrorPolicy::Reject;
    let reject = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let body = upsert_body(&format!("{}-1", env.prefix));

    let (status, answer) = post_signed(&client, &publish.url("whatzme"), &body).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(0)),
        "{answer}"
    );
    let (status, answer) = post_signed(&client, &publish.url("whatzme"), &body).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(1)),
        "dedup works while Redis is up"
    );

    redis.stop();
    let other = upsert_body(&format!("{}-2", env.prefix));
    let (status, answer) = post_signed(&client, &publish.url("whatzme"), &other).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "publish policy accepts: {answer}"
    );
    let bypass = metric(
        &client,
        publish.admin_addr,
        "sluice_gateway_dedup_bypass_total{source=\"whatzme\"}",
    )
    .await;
    assert_eq!(bypass, Some(1.0), "the bypass is counted");
    let (status, answer) = post_signed(&client, &reject.url("whatzme"), &other).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "reject policy refuses"
    );

    redis.boot().await;
    let third = upsert_body(&format!("{}-3", env.prefix));
    let recovered = eventually(Duration::from_secs(10), || async {
        post_signed(&client, &reject.url("whatzme"), &third).await.0 == 200
    })
    .await;
    assert!(recovered, "the gateway uses Redis again once it is back");
    let (_, answer) = post_signed(&client, &reject.url("whatzme"), &third).await;
    assert_eq!(answer["duplicates"], 1, "and deduplicates again");
    publish.stop().await;
    reject.stop().await;

    let broker = Broker::connect(&env.amqp_url).await;
    assert_eq!(
        broker.count(&env.topology().work_queue()).await,
        3,
        "events 1, 2 and 3, each once"
    );
    broker.delete(&env.topology()).await;
}

/// Claims name their script by its hash; a Redis that lost its scripts
/// (a restart, `SCRIPT FLUSH`) answers `NOSCRIPT` and the claim sends the
/// text once: no request fails for it, and dedup goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_scripts_still_claims_every_event() {
    let redis = PrivateRedis::start().await;
    let env = TestEnv::with_brokers("noscript", SHARED_AMQP, &redis.url());
    let mut config = env.config("");
    config.gateway.on_redis_error = RedisErrorPolicy::Reject;
    let gateway = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let first = upsert_body(&format!("{}-1", env.prefix));
    let (status, answer) = post_signed(&client, &gateway.url("whatzme"), &first).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    let mut direct = redis::Client::open(redis.url())
        .expect("the private Redis's URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the private Redis answers");
    let mut exists = redis::cmd("SCRIPT");
    exists.arg("EXISTS").arg(claim_script_hash());
    let cached: Vec<bool> = exists.query_async(&mut direct).await.expect("EXISTS");
    assert_eq!(cached, [true], "the first claim cached the script");
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut direct)
        .await
        .expect("SCRIPT FLUSH");

    let second = upsert_body(&format!("{}-2", env.prefix));
    for (body, accepted, duplicates) in [(&second, 1, 0), (&second, 0, 1), (&first, 0, 1)] {
        let (status, answer) = post_signed(&client, &gateway.url("whatzme"), body).await;
        assert_eq!(
            (
                status,
                answer["accepted"].as_u64(),
                answer["duplicates"].as_u64()
            ),
            (200, Some(accepted), Some(duplicates)),
            "with reject, a claim that failed would be a 503: {answer}"
        );
    }
    let cached: Vec<bool> = exists.query_async(&mut direct).await.expect("EXISTS");
    assert_eq!(cached, [true], "the claim after the flush cached it again");
    gateway.stop().await;
    let broker = Broker::connect(&env.amqp_url).await;
    assert_eq!(
        broker.count(&env.topology().work_queue()).await,
        2,
        "events 1 and 2, each once"
    );
    broker.delete(&env.topology()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_pending_elsewhere_gets_503_retry_after_1_and_its_retry_finds_it_done() {
    let env = TestEnv::new("inflight");
    let gateway = RunningGateway::start(env.config("")).await;
    let client = reqwest::Client::new();
    let id = format!("{}-busy", env.prefix);
    let key = DedupKey::new(&env.prefix, "whatzme", &id)
        .as_str()
        .to_owned();
    let mut redis = redis::Client::open(SHARED_REDIS)
        .and_then(|c| c.get_connection())
        .expect("Redis");
    redis::cmd("SET")
        .arg(&key)
        .arg("pending")
        .arg("EX")
        .arg(60)
        .exec(&mut redis)
        .expect("SET");

    let response = client
        .post(gateway.url("whatzme"))
        .header(
            "X-Signature",
            sluice_testkit::signature(upsert_body(&id).as_bytes()),
        )
        .body(upsert_body(&id))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["in_flight"], 1, "{answer}");

    redis::cmd("SET")
        .arg(&key)
        .arg("done")
        .arg("EX")
        .arg(60)
        .exec(&mut redis)
        .expect("SET");
    let (status, answer) = post_signed(&client, &gateway.url("whatzme"), &upsert_body(&id)).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    gateway.stop().await;
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis).expect("DEL");

    let broker = Broker::connect(&env.amqp_url).await;
    assert_eq!(
        broker.count(&env.topology().work_queue()).await,
        0,
        "the other request's event is not published twice"
    );
    broker.delete(&env.topology()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_in_the_old_form_still_decide_and_new_keys_hold_no_id() {
    let env = TestEnv::new("oldkeys");
    let gateway = RunningGateway::start(env.config("")).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");
    let mut redis = redis::Client::open(SHARED_REDIS)
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let key = |name: &str| {
        DedupKey::new(
            &env.prefix,
            "whatzme",
            &format!("{}-16505551234-{name}", env.prefix),
        )
    };
    let (done, pending, fresh) = (key("done"), key("pending"), key("fresh"));
    // What a gateway before the digests left: the id in the key name.
    for (old, value) in [(&done, "done"), (&pending, "pending")] {
        redis::cmd("SET")
            .arg(old.old_form())
            .arg(value)
            .arg("EX")
            .arg(60)
            .exec(&mut redis)
            .expect("SET");
    }
    let body = |name: &str| upsert_body(&format!("{}-16505551234-{name}", env.prefix));

    let (status, answer) = post_signed(&client, &url, &body("done")).await;
    assert_eq!(
        (
            status,
            answer["duplicates"].as_u64(),
            answer["accepted"].as_u64()
        ),
        (200, Some(1), Some(0)),
        "an old-form done key is a duplicate: {answer}"
    );
    let (status, answer) = post_signed(&client, &url, &body("pending")).await;
    assert_eq!(
        (status, answer["in_flight"].as_u64()),
        (503, Some(1)),
        "an old-form pending key is in flight: {answer}"
    );
    let (status, answer) = post_signed(&client, &url, &body("fresh")).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    gateway.stop().await;

    let exists = |redis: &mut redis::Connection, name: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(name)
            .query::<i64>(redis)
            .expect("EXISTS")
            == 1
    };
    assert!(
        !exists(&mut redis, done.as_str()),
        "no new key beside an old done one"
    );
    assert!(
        !exists(&mut redis, pending.as_str()),
        "nor beside an old pending one"
    );
    let value: Option<String> = redis::cmd("GET")
        .arg(fresh.as_str())
        .query(&mut redis)
        .expect("GET");
    assert_eq!(value.as_deref(), Some("done"));
    assert!(
        !exists(&mut redis, fresh.old_form()),
        "nothing is written in the old form"
    );
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.prefix))
        .query(&mut redis)
        .expect("KEYS");
    let with_phone: Vec<&String> = names.iter().filter(|n| n.contains("16505551234")).collect();
    assert_eq!(
        with_phone.len(),
        2,
        "only the two old-form keys hold the id: {names:?}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&names)
        .query(&mut redis)
        .expect("DEL");

    let broker = Broker::connect(&env.amqp_url).await;
    assert_eq!(
        broker.count(&env.topology().work_queue()).await,
        1,
        "only the fresh event is published"
    );
    broker.delete(&env.topology()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_old_form_keys_no_longer_read_an_old_done_key_decides_nothing() {
    let env = TestEnv::new("oldkeysoff");
    let mut config = env.config("");
    config.redis.read_old_form_keys = false;
    let gateway = RunningGateway::start(config).await;
    let id = format!("{}-expired-window", env.prefix);
    let key = DedupKey::new(&env.prefix, "whatzme", &id);
    let mut redis = redis::Client::open(SHARED_REDIS)
        .and_then(|c| c.get_connection())
        .expect("Redis");
    redis::cmd("SET")
        .arg(key.old_form())
        .arg("done")
        .arg("EX")
        .arg(60)
        .exec(&mut redis)
        .expect("SET");

    let client = reqwest::Client::new();
    let (status, answer) = post_signed(&client, &gateway.url("whatzme"), &upsert_body(&id)).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "only the digest key counts: {answer}"
    );
    gateway.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(key.old_form())
        .arg(key.as_str())
        .query(&mut redis)
        .expect("DEL");
    let broker = Broker::connect(&env.amqp_url).await;
    assert_eq!(broker.count(&env.topology().work_queue()).await, 1);
    broker.delete(&env.topology()).await;
}
