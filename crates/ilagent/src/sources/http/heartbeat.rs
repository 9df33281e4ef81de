//! `GET`, `HEAD` or `POST /api/heartbeats/{key}`: forwarded to ilert at once and answered
//! with ilert's status. Not queued: a heartbeat says "alive now", and a late one is worse
//! than none. Each request is its own task with its own deadline, so a slow ilert holds up
//! only this client, never the event requests beside it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::reply::error;
use crate::ilert::Verdict;
use crate::observe::events;
use crate::secret::Secret;

/// How long ilert gets to answer a forwarded ping.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn forward(State(api): State<ApiState>, Path(key): Path<String>) -> Response {
    let response = match path_key(&key) {
        None => error(
            StatusCode::BAD_REQUEST,
            "INVALID_KEY",
            "the heartbeat key in the path is empty",
        ),
        Some(key) => ping(&api, &key).await,
    };
    events::http_request("heartbeats", response.status().as_u16());
    response
}

/// The heartbeat key of a path (`{key}`, already percent-decoded), or `None` when it is
/// blank. Pure, so that it can be fuzzed without a server (`fuzz/`).
pub fn path_key(raw: &str) -> Option<Secret> {
    let key = raw.trim();
    (!key.is_empty()).then(|| Secret::new(key))
}

async fn ping(api: &ApiState, key: &Secret) -> Response {
    let verdict = tokio::time::timeout(FORWARD_TIMEOUT, api.client.ping_heartbeat(key)).await;
    let (status, reason) = match verdict {
        Ok(Verdict::Delivered { status, .. }) => (status, None),
        Ok(Verdict::Transient { status, reason, .. } | Verdict::Permanent { status, reason }) => {
            (status.unwrap_or(502), Some(reason))
        }
        Err(_) => (
            504,
            Some(format!(
                "ilert did not answer within {}s",
                FORWARD_TIMEOUT.as_secs()
            )),
        ),
    };
    events::http_heartbeat_forwarded(key, status, reason.as_deref());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    match reason {
        None => (status, Body::empty()).into_response(),
        Some(reason) => error(status, "HEARTBEAT_NOT_ACCEPTED", &reason),
    }
}
