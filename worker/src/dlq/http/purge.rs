//! `POST /dlq/purge`: a preview, then a confirmation that removes exactly
//! the previewed events (see [`crate::dlq::confirm`]).
//!
//! - `{<filter>}` or `{"all": true}`: nothing is removed; 400
//!   `confirmation_required` with what would go (`matched`), the token
//!   (`confirm`) and how many matching events the token leaves out
//!   (`not_covered`, past [`MAX_CONFIRMED`]).
//! - the same, plus `"yes": true, "confirm": <token>`: removes the previewed
//!   events still there; 200 with `removed`, `already_gone` and `kept`.
//! - neither a filter nor `"all": true`: 400, nothing read.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::answer::{ApiError, JsonBody, UnknownFields, refuse_unknown};
use super::{DlqApi, parse};
use crate::dlq::confirm::{Confirmation, MAX_CONFIRMED};
use crate::dlq::filter::FilterArgs;
use crate::dlq::purge::{self, Previewed, PurgeScope};

/// `POST /dlq/purge` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PurgeRequest {
    #[serde(flatten)]
    filter: FilterArgs,
    /// The whole dead queue; only without a filter.
    all: bool,
    yes: bool,
    /// The token of the preview being confirmed.
    confirm: Option<String>,
    #[serde(flatten)]
    unknown: UnknownFields,
}

pub(super) async fn purge_route(
    State(api): State<DlqApi>,
    JsonBody(request): JsonBody<PurgeRequest>,
) -> Result<Response, ApiError> {
    refuse_unknown(&request.unknown)?;
    let filter = parse(&request.filter)?;
    let scope = PurgeScope::new(&request.filter, &filter, request.all)?;
    if let (true, Some(token)) = (request.yes, &request.confirm) {
        let confirmation = Confirmation::decode(token, scope.as_str())?;
        let purged = api
            .with_queue(async |q| purge::confirmed(q, &filter, &confirmation).await)
            .await?;
        return Ok(Json(purged).into_response());
    }
    let previewed = api
        .with_queue(async |q| purge::preview(q, &filter, &scope).await)
        .await?;
    let body = confirmation_required(&previewed, request.confirm.is_some());
    Ok((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

fn confirmation_required(previewed: &Previewed, had_token: bool) -> serde_json::Value {
    let count = previewed.matched.count;
    let mut message = format!(
        "nothing was removed; to remove exactly the {count} events previewed here (none that \
         arrive later), send the same request with \"yes\": true and \"confirm\": the `confirm` \
         of this answer"
    );
    if had_token {
        message.push_str("; a confirm without \"yes\": true is only a preview");
    }
    if previewed.not_covered > 0 {
        message.push_str(&format!(
            "; {} more events match but one confirmation covers at most {MAX_CONFIRMED}: \
             purge again for them",
            previewed.not_covered
        ));
    }
    json!({
        "error": "confirmation_required",
        "message": message,
        "matched": previewed.matched,
        "confirm": previewed.confirmation.encode(),
        "not_covered": previewed.not_covered,
    })
}
