//! The `http` handler: POST the envelope, signed, to the route's URL.
//!
//! The body goes out byte for byte as it sits on the queue, with
//! `content-type: application/cloudevents+json` and the Standard Webhooks
//! headers (`webhook-id` = the event id, stable across retries so receivers
//! can be idempotent; `webhook-timestamp`; `webhook-signature`), plus
//! `x-request-id` and a W3C `traceparent` (the gateway's trace, a new span
//! per attempt) so the receiver can correlate it with Sluice's logs. Redirects are
//! not followed: a receiver that moved answers 3xx, which is a permanent
//! failure an operator must look at, and following one would send a signed
//! payload to a host nobody configured. The answer's body is never read.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Url, redirect};
use sluice_shared::envelope;
use sluice_shared::standard_webhooks::SigningKey;
use sluice_shared::trace::TRACEPARENT;

use crate::delivery_error::{self, DeliveryError};
use crate::message::SluiceEvent;

/// The one HTTP client every route shares (it pools connections per host).
pub fn client() -> Result<Client, reqwest::Error> {
    Client::builder().redirect(redirect::Policy::none()).build()
}

/// Where and how one `http` route delivers.
#[derive(Clone)]
pub struct HttpTarget {
    url: Url,
    key: SigningKey,
    timeout: Duration,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &self.url.as_str())
            .field("key", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpTarget {
    pub fn new(url: Url, key: SigningKey, timeout: Duration) -> Self {
        Self { url, key, timeout }
    }

    /// One attempt: POST and classify the answer (or its absence).
    pub async fn deliver(
        &self,
        client: &Client,
        event: &SluiceEvent,
        body: &[u8],
    ) -> Result<(), DeliveryError> {
        let headers = self.headers(event, body, unix_seconds(SystemTime::now()))?;
        let sent = client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(delivery_error::parse_retry_after);
                delivery_error::classify_status(response.status().as_u16(), retry_after)
            }
            Err(error) => Err(delivery_error::classify_transport(&error, self.timeout)),
        }
    }

    /// The signed headers for one attempt at `timestamp` (unix seconds).
    fn headers(
        &self,
        event: &SluiceEvent,
        body: &[u8],
        timestamp: i64,
    ) -> Result<HeaderMap, DeliveryError> {
        let id =
            HeaderValue::from_str(event.id.as_str()).map_err(|_| DeliveryError::Permanent {
                status: None,
                error: "the event id cannot be sent as a webhook-id header".into(),
            })?;
        let signature = self.key.sign(event.id.as_str(), timestamp, body);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(envelope::CONTENT_TYPE),
        );
        headers.insert("webhook-id", id);
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert("webhook-signature", value);
        }
        // A request id that is not a valid header value is only a lost
        // correlation, never a reason to fail the delivery.
        if let Some(value) = event
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert("x-request-id", value);
        }
        if let Ok(value) = HeaderValue::from_str(&event.trace_context().child().header_value()) {
            headers.insert(TRACEPARENT, value);
        }
        Ok(headers)
    }
}

fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "http_target_tests.rs"]
mod tests;
