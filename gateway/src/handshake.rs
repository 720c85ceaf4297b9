//! `GET /webhooks/{source}`: Meta's subscription handshake, the challenge
//! echoed when the source's `verify_token` matches; every refusal is a
//! [`GatewayError`], counted under the source like a POST.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::metrics::UNKNOWN_SOURCE;
use crate::source::{HandshakeError, Source};
use crate::state::AppState;
use crate::webhook::{client_allowed, text_response};

pub async fn handshake(
    State(state): State<Arc<AppState>>,
    source: Result<Path<String>, PathRejection>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let name = source.map(|Path(name)| name).unwrap_or_default();
    // A query string that does not decode holds no hub.* parameters: refused below.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let found = state.sources.get(&name);
    // Unknown names are tenant-supplied text: never a metric label.
    let label = if found.is_some() {
        name.as_str()
    } else {
        UNKNOWN_SOURCE
    };
    let (outcome, response) = match challenge(&state, found, peer, &headers, &query) {
        Ok(challenge) => ("handshake", text_response(challenge)),
        Err(error) => (error.outcome(), error.into_response()),
    };
    state
        .metrics
        .requests
        .with_label_values(&[label, outcome])
        .inc();
    response
}

/// The challenge to echo, or why not.
fn challenge(
    state: &AppState,
    source: Option<&Source>,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<String, GatewayError> {
    let source = source.ok_or(GatewayError::UnknownSource)?;
    if !client_allowed(state, source, peer, headers) {
        return Err(GatewayError::ForbiddenAddress);
    }
    let param = |key: &str| query.get(key).map(String::as_str);
    let result = source.handshake(
        param("hub.mode"),
        param("hub.verify_token"),
        param("hub.challenge"),
    );
    result.map_err(|refusal| {
        if refusal != HandshakeError::NotSupported {
            let name = source.name.as_str();
            tracing::info!(source = %name, reason = %refusal, "handshake refused");
        }
        GatewayError::Handshake(refusal)
    })
}
