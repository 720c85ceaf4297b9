//! At start: does RabbitMQ really dead-letter at-least-once?
//!
//! The work and retry queues ask for `x-dead-letter-strategy:
//! at-least-once`, which RabbitMQ 3.10 honours only while the
//! `stream_queue` feature flag is enabled. Without it the broker logs a
//! warning and silently dead-letters at-most-once: an event dead-lettered
//! while its target cannot take it is lost. AMQP cannot tell the two apart,
//! so the worker asks the management API (`amqp.management_url`) for the
//! feature flags, signing in as `amqp.url`'s user. Disabled: the worker
//! refuses to start and says how to enable it. Not checked (no
//! `management_url`, or the API did not answer): it starts, warns, and
//! reports 0 in `sluice_worker_dead_lettering_verified`.

use std::time::Duration;

use lapin::uri::AMQPUri;
use reqwest::Url;
use serde::Deserialize;
use sluice_shared::config::AmqpConfig;

/// The feature flag at-least-once dead-lettering needs on RabbitMQ 3.10.
const FLAG: &str = "stream_queue";

/// What the check found, when the worker may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLettering {
    /// The management API says the flag is enabled.
    Verified,
    /// Not known, and why.
    Unverified(String),
}

/// The broker dead-letters at-most-once: the worker must not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "RabbitMQ's feature flag `{FLAG}` is {state}, so its quorum queues dead-letter at-most-once \
     (events dead-lettered while the dead queue cannot take them are lost) although Sluice \
     declares them at-least-once: enable it with `rabbitmqctl enable_feature_flag {FLAG}` \
     (or `rabbitmqctl enable_feature_flag all`) and start the worker again"
)]
pub struct AtMostOnce {
    state: String,
}

#[derive(Deserialize)]
struct Flag {
    name: String,
    state: String,
}

/// Asks the management API whether [`FLAG`] is enabled.
pub async fn check(
    config: &AmqpConfig,
    client: &reqwest::Client,
) -> Result<DeadLettering, AtMostOnce> {
    let Some(base) = &config.management_url else {
        return Ok(DeadLettering::Unverified(
            "amqp.management_url is not set".into(),
        ));
    };
    match feature_flag(base, &config.url, client, config.connect_timeout).await {
        Ok(Some(state)) if state == "enabled" => Ok(DeadLettering::Verified),
        Ok(Some(state)) => Err(AtMostOnce { state }),
        Ok(None) => Ok(DeadLettering::Unverified(format!(
            "the management API lists no `{FLAG}` feature flag"
        ))),
        Err(why) => Ok(DeadLettering::Unverified(why)),
    }
}

/// The flag's state, `None` when the broker does not list it, or why the
/// API could not say.
async fn feature_flag(
    base: &Url,
    amqp_url: &str,
    client: &reqwest::Client,
    limit: Duration,
) -> Result<Option<String>, String> {
    let uri: AMQPUri = amqp_url
        .parse()
        .map_err(|_| "amqp.url cannot be read for its user".to_owned())?;
    let user = &uri.authority.userinfo;
    let url = format!("{}/api/feature-flags", base.as_str().trim_end_matches('/'));
    let response = client
        .get(&url)
        .basic_auth(&user.username, Some(&user.password))
        .timeout(limit)
        .send()
        .await
        .map_err(|e| format!("the management API at {base} did not answer: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "the management API at {base} answered {status} (does amqp.url's user have the \
             `monitoring` or `management` tag?)"
        ));
    }
    let flags: Vec<Flag> = response
        .json()
        .await
        .map_err(|e| format!("the management API's feature flags could not be read: {e}"))?;
    Ok(flags
        .into_iter()
        .find(|flag| flag.name == FLAG)
        .map(|flag| flag.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_management_url_nothing_is_checked_and_it_says_so() {
        let checked = check(&AmqpConfig::default(), &reqwest::Client::new()).await;
        assert_eq!(
            checked.expect("not refused"),
            DeadLettering::Unverified("amqp.management_url is not set".into())
        );
    }

    #[tokio::test]
    async fn an_unreachable_api_is_unverified_not_a_refusal() {
        let config = AmqpConfig {
            management_url: Some(Url::parse("http://127.0.0.1:1").expect("a URL")),
            connect_timeout: Duration::from_millis(500),
            ..AmqpConfig::default()
        };
        let checked = check(&config, &reqwest::Client::new()).await;
        assert!(
            matches!(checked, Ok(DeadLettering::Unverified(ref why)) if why.contains("did not answer")),
            "{checked:?}"
        );
    }
}
