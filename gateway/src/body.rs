//! Reading a webhook's body within its limits: `body_limit`, the read
//! deadline and the shared body memory.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::error::{GatewayError, Overload};
use crate::limits::{BodyReservation, LoadLimits};

/// Reads the body without ever holding more than `limit` bytes, waiting
/// past `deadline`, or taking more than the shared body budget has left.
/// The reservation is held until the request is answered.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Instant,
    limits: &LoadLimits,
) -> Result<(Bytes, BodyReservation), GatewayError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::TooLarge { limit });
    }
    let mut held = limits.body_reservation();
    // The chunks are kept as they arrive and joined once at the end: memory
    // follows the bytes received, never the size a client declares, and a
    // body that came in one chunk is never copied.
    let read = async {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| GatewayError::BodyRead)?;
            total += chunk.len();
            if total > limit {
                return Err(GatewayError::TooLarge { limit });
            }
            if !held.grow(chunk.len()) {
                return Err(GatewayError::Overloaded(Overload::BodyMemory));
            }
            chunks.push(chunk);
        }
        Ok(join(chunks, total))
    };
    let bytes = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| GatewayError::BodyTimeout)??;
    Ok((bytes, held))
}

/// The body length a request declares, if it does.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// One buffer of `total` bytes from `chunks`, copying only when there are several.
fn join(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(total);
    for chunk in &chunks {
        joined.extend_from_slice(chunk);
    }
    joined.freeze()
}
