//! `POST /api/events` (and `/api/v1/events`): validate as ilert would, commit to SQLite,
//! and only then answer 202.
//!
//! Validation is mapping's own ([`crate::mapping::map`] with the ilert schema as it is),
//! so the proxy and the queue worker can never disagree about what a valid event is: a
//! body refused here would have been rejected by ilert, and a body stored here maps to
//! the same event when it is delivered. Nothing is stored for a refused request; a queue
//! that is full (`--queue_max_size`, or the disk) or failing answers 503 with `Retry-After`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use super::limits;
use super::reply::error;
use crate::action::Action;
use crate::ilert::Event;
use crate::message::{Message, Metadata, SourceKind};
use crate::observe::events;
use crate::pipeline::IDEMPOTENCY_KEY;
use crate::pipeline::MessageRouter;
use crate::queue::{NewRow, StoredMeta, now_ms, order_key_column};

/// What a path takes: ilert's own event schema, or whatever a configured route maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    IlertEvents,
    Routed,
}

pub async fn post_event(
    State(api): State<ApiState>,
    path: MatchedPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&api, &path, Takes::IlertEvents, &headers, body).await
}

/// A path of an http route (`[[route]] source = "http"`): any body the route can map (JSON
/// or text), mapped and validated here as the worker will map it.
pub async fn post_routed(
    State(api): State<ApiState>,
    path: MatchedPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&api, &path, Takes::Routed, &headers, body).await
}

/// [`accept`], counted by what the path takes.
async fn answer(
    api: &ApiState,
    path: &MatchedPath,
    takes: Takes,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = accept(api, path.as_str(), takes, headers, body).await;
    let label = match takes {
        Takes::IlertEvents => "events",
        Takes::Routed => "routed",
    };
    events::http_request(label, response.status().as_u16());
    response
}

async fn accept(
    api: &ApiState,
    path: &str,
    takes: Takes,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let refuse = |status: StatusCode, code: &str, reason: &str| {
        events::http_event_refused(path, status.as_u16(), reason);
        error(status, code, reason)
    };
    if api.shutdown.is_cancelled() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the agent is shutting down: send the event again to another agent or after the restart",
        );
    }
    if takes == Takes::IlertEvents && !is_json(headers) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be JSON: send the header Content-Type: application/json",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let reason = format!(
                "the body is larger than {} bytes (--http_max_body)",
                api.max_body
            );
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", &reason);
        }
        Err(rejection) => {
            if let Some(timed_out) = limits::timed_out_body(&rejection) {
                let reason = timed_out.to_string();
                let mut response = refuse(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT", &reason);
                // The rest of the body may still be on its way: the connection is done.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
            let reason = format!("cannot read the body: {}", rejection.body_text());
            return refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", &reason);
        }
    };

    let mut meta = Metadata::new(SourceKind::Http, path);
    // With the window at 0 the header means nothing: not even checked.
    let key = match api.honours_idempotency_key {
        true => idempotency_key(headers),
        false => Ok(None),
    };
    match key {
        Ok(None) => {}
        Ok(Some(key)) => meta
            .headers
            .push((IDEMPOTENCY_KEY.to_string(), key.into_bytes())),
        Err(reason) => {
            return refuse(StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY", &reason);
        }
    }
    let message = Message {
        payload: body.to_vec(),
        meta,
    };
    let action = match takes {
        Takes::IlertEvents => match event_of(&api.router, &message) {
            Ok(event) => Action::Event(event),
            Err(reason) => return refuse(StatusCode::BAD_REQUEST, "INVALID_EVENT", &reason),
        },
        Takes::Routed => match api.router.action_for(&message) {
            action @ (Action::Event(_) | Action::PolicyUpdate(_)) => action,
            Action::Skip(reason) => {
                // Settled as the brokers' skipped messages are: counted, nothing stored.
                events::received(&message.meta, path.to_string());
                events::settled(
                    &message.meta,
                    &crate::action::Outcome::Skipped {
                        reason: reason.clone(),
                    },
                    events::Disposition::Normal,
                );
                let body = json!({"status": "skipped", "reason": reason});
                return (StatusCode::OK, axum::Json(body)).into_response();
            }
            Action::Invalid(reason) => {
                return refuse(StatusCode::BAD_REQUEST, "INVALID_MESSAGE", &reason);
            }
            Action::Heartbeat(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "INVALID_MESSAGE",
                    "this path's route makes heartbeat pings, which the proxy does not queue",
                );
            }
        },
    };
    let event_type = match &action {
        Action::Event(event) => Some(event.event_type.as_str()),
        _ => None,
    };
    let row = NewRow {
        source: SourceKind::Http,
        topic: path.to_string(),
        payload: message.payload,
        // The `Idempotency-Key`, if any: the worker maps the row again.
        meta: StoredMeta::from_metadata(&message.meta),
        // Fixed at the write, so the queue keeps the arrival order of each alert key.
        order_key: order_key_column(&action),
        created_at_ms: now_ms(),
    };
    match api.queue.insert(Arc::new(vec![row])).await {
        Ok(ids) => {
            let mut meta = message.meta;
            meta.queue_id = ids.first().copied();
            events::received(&meta, path.to_string());
            events::queue_written(SourceKind::Http, 1);
            events::http_event_queued(&meta);
            api.wake.new_rows();
            let mut body = json!({
                "status": "queued",
                "id": meta.queue_id,
            });
            if let Some(event_type) = event_type {
                body["eventType"] = json!(event_type);
            }
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(queue_error) => {
            // Nothing was committed, nothing is promised: the client sends it again.
            events::queue_error(&queue_error);
            let (code, reason) = if queue_error.is_full() {
                (
                    "QUEUE_FULL",
                    format!(
                        "the agent's queue is full, nothing was stored: send the event again later ({queue_error})"
                    ),
                )
            } else {
                (
                    "QUEUE_UNAVAILABLE",
                    format!("the event could not be stored, send it again: {queue_error}"),
                )
            };
            let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, code, &reason);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            response
        }
    }
}

/// The event a posted body holds, or why it is refused (400 `INVALID_EVENT`): the
/// router's mapping, which for the proxy is the ilert schema as it is. Pure (no queue, no
/// I/O), so that the proxy's parsing can be fuzzed without a server (`fuzz/`).
pub fn event_of(router: &MessageRouter, message: &Message) -> Result<Box<Event>, String> {
    match router.action_for(message) {
        Action::Event(event) => Ok(event),
        Action::Invalid(reason) => Err(reason),
        Action::Skip(_) | Action::Heartbeat(_) | Action::PolicyUpdate(_) => {
            Err("the body is not an event".into())
        }
    }
}

/// The longest `Idempotency-Key` taken.
const MAX_IDEMPOTENCY_KEY: usize = 512;

/// The request's `Idempotency-Key`: at most [`MAX_IDEMPOTENCY_KEY`] bytes of visible ASCII
/// (what a header value may hold without escaping).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("the request has more than one Idempotency-Key header: send one".into());
    }
    let key = value
        .to_str()
        .map_err(|_| "the Idempotency-Key header must be visible ASCII".to_string())?
        .trim();
    if key.is_empty() {
        return Err("the Idempotency-Key header is empty: send a unique id, or no header".into());
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "the Idempotency-Key header has {} bytes; at most {MAX_IDEMPOTENCY_KEY} are taken",
            key.len()
        ));
    }
    Ok(Some(key.to_string()))
}

/// What a client that got 503 because the queue could not take the event should wait
/// before it sends it again: long enough for deliveries to make room, short enough that
/// the event is not delayed much once there is.
const RETRY_AFTER_SECONDS: u32 = 10;

/// `application/json`, with or without parameters (`; charset=utf-8`), or `+json` types.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
}
