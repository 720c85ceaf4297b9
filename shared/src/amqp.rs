//! Connecting to RabbitMQ, with a time limit (lapin has none of its own).

use std::time::Duration;

use lapin::types::LongString;
use lapin::{Channel, Connection, ConnectionProperties};

/// Why a connection or channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("RabbitMQ did not answer within {0:?}: is it running at the configured amqp.url?")]
    Timeout(Duration),
    #[error("cannot connect to RabbitMQ (check amqp.url and that the broker runs): {0}")]
    Broker(#[from] lapin::Error),
}

/// Opens a connection named `name` (shown in the RabbitMQ management UI).
pub async fn connect(url: &str, name: &str, limit: Duration) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    tokio::time::timeout(limit, Connection::connect(url, properties))
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
