//! `GET /dlq/export`: the matching dead events as JSON lines, streamed as
//! the pass reads them, at most `limit` (default
//! [`DEFAULT_STREAMED`], at most [`MAX_STREAMED`]); never removes. The last
//! line is always `{"end": {...}}` ([`ExportEnd`]): `complete` says whether
//! the answer holds every matching event. The lock and the pass are taken
//! before the answer starts, so a busy or missing dead queue is a plain
//! 409 or 503.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::answer::{ApiError, QueryArgs};
use super::{DlqApi, parse};
use crate::dlq::export::{DEFAULT_STREAMED, MAX_STREAMED, stream_matching};
use crate::dlq::filter::FilterArgs;
use crate::dlq::queue::DeadQueue;

/// Lines waiting for a slow reader; past that the pass waits too.
const BUFFERED_LINES: usize = 64;

/// `GET /dlq/export` options besides the filters.
#[derive(Debug, Deserialize)]
pub(super) struct ExportQuery {
    limit: Option<u64>,
}

pub(super) async fn export_route(
    State(api): State<DlqApi>,
    QueryArgs(args): QueryArgs<FilterArgs>,
    QueryArgs(options): QueryArgs<ExportQuery>,
) -> Result<Response, ApiError> {
    let filter = parse(&args)?;
    let limit = options.limit.unwrap_or(DEFAULT_STREAMED);
    if !(1..=MAX_STREAMED).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "limit {limit}: from 1 to {MAX_STREAMED} events (default {DEFAULT_STREAMED}); \
                 for more, use `sluice-worker dlq export`"
            ),
        ));
    }
    let queue = DeadQueue::open(&api.amqp, api.scan_batch).await?;
    let scan = match queue.scan().await {
        Ok(scan) => scan,
        Err(e) => {
            queue.close().await;
            return Err(e.into());
        }
    };
    let (lines, reader) = mpsc::channel(BUFFERED_LINES);
    tokio::spawn(async move {
        let end = stream_matching(&queue, scan, &filter, limit, &lines).await;
        // The lock goes before the last line: a reader that sees it can run the next command.
        queue.close().await;
        if let Some(end) = end {
            let _ = lines.send(end.line()).await;
        }
    });
    let body = stream::unfold(reader, |mut reader| async move {
        let line = reader.recv().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line)), reader))
    });
    let content_type = [(header::CONTENT_TYPE, "application/x-ndjson")];
    Ok((content_type, Body::from_stream(body)).into_response())
}
