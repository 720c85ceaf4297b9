//! Connecting to RabbitMQ, with a time limit (lapin has none of its own)
//! and a heartbeat, so a broker that goes silent without closing the
//! connection (a dropped route, a frozen VM) is noticed: lapin closes a
//! connection that heard nothing for two heartbeats.

use std::time::Duration;

use lapin::types::LongString;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

/// The heartbeat of [`connect`]: `amqp.heartbeat`'s default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Why a connection or channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("RabbitMQ did not answer within {0:?}: is it running at the configured amqp.url?")]
    Timeout(Duration),
    #[error("cannot connect to RabbitMQ (check amqp.url and that the broker runs): {0}")]
    Broker(#[from] lapin::Error),
    #[error(
        "amqp.url is not a usable AMQP URL ({0}): write it as amqp://user:pass@host:port/vhost"
    )]
    Url(String),
}

/// Opens a connection named `name` (shown in the RabbitMQ management UI)
/// with the default heartbeat.
pub async fn connect(url: &str, name: &str, limit: Duration) -> Result<Connection, ConnectError> {
    connect_with_heartbeat(url, name, limit, DEFAULT_HEARTBEAT).await
}

/// Opens a connection named `name` asking for `heartbeat` (whole seconds,
/// at least 1; it replaces any `heartbeat=` in `url`). The connection uses
/// the lower of this and the broker's proposal (RabbitMQ's default is 60 s).
pub async fn connect_with_heartbeat(
    url: &str,
    name: &str,
    limit: Duration,
    heartbeat: Duration,
) -> Result<Connection, ConnectError> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| ConnectError::Url(e.replace(url, &redact_url(url))))?;
    let seconds = u16::try_from(heartbeat.as_secs())
        .unwrap_or(u16::MAX)
        .max(1);
    uri.query.heartbeat = Some(seconds);
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    tokio::time::timeout(limit, Connection::connect_uri(uri, properties))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
        .map_err(ConnectError::Broker)
}

/// Opens a channel in confirm mode: every publish on it gets an ack or nack.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// The URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_a_log() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
