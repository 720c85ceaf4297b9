//! How the `/dlq` routes refuse: always JSON `{"error": <code>, "message":
//! <what to do>}` with a precise status, whether the operation refused
//! ([`DlqError::status`], [`DlqError::code`]) or the request could not be read
//! at all (a body that is not JSON, a field of the wrong type or one no route
//! knows, a query string that does not parse).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::json;

use crate::dlq::error::DlqError;

/// A refusal or a failure, as the admin port answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<DlqError> for ApiError {
    fn from(error: DlqError) -> Self {
        let status = error.status();
        if status.is_server_error() {
            tracing::warn!(error = %error, "dlq request failed");
        }
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), "invalid_body", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(rejection.status(), "invalid_query", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body; one that cannot be read is an [`ApiError`].
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// Query parameters; ones that cannot be read are an [`ApiError`].
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The fields of a JSON body that its route does not read (flattened into
/// the body's type, after the filter).
pub type UnknownFields = BTreeMap<String, IgnoredAny>;

/// Refuses a body with fields no route reads: a misspelt filter (`"sorce"`)
/// must not widen a replay or a purge to the whole queue.
pub fn refuse_unknown(unknown: &UnknownFields) -> Result<(), ApiError> {
    if unknown.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = unknown.keys().map(String::as_str).collect();
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "unknown_field",
        format!(
            "unknown field(s) {names:?}: filters are source, type, route, reason, status, since, \
             until and id; see docs/operations.md for each route's options"
        ),
    ))
}
