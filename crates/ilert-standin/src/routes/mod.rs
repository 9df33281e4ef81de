//! The ilert side of the stand-in. Every non-control request goes through one pipeline that
//! records it, applies the misbehaviour knobs in a fixed order (script, latency, error rate,
//! key status, rate limit) and only then runs the endpoint's own logic, so a test knows
//! exactly which rule produced an answer.

mod events;
mod heartbeats;
mod policies;
pub(crate) mod reply;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value;

use crate::model::{Behaviour, RecordedRequest, RequestKind, Scripted};
use crate::server::ConnectionControl;
use crate::state::{RateDecision, Recording, Shared};

/// Bodies larger than this are refused (413); ilert documents no limit, this only bounds memory.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Retry-After dates are capped so that formatting them can never overflow.
const MAX_RETRY_AFTER_SECS: u64 = 100 * 365 * 24 * 3600;

/// Which ilert endpoint a method and path address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Event { path_key: Option<String> },
    HeartbeatPing { key: String },
    HeartbeatLegacy { key: String },
    UserSearch,
    PolicyResolve,
    PolicyLevelUpdate { id: String, level: String },
    Unknown,
}

impl Route {
    pub(crate) fn classify(method: &Method, path: &str) -> Route {
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let key = |k: &str| (!k.is_empty()).then(|| k.to_owned());
        let is = |m: &Method| method == m;
        let route = match segments.as_slice() {
            ["api", "events"] | ["api", "v1", "events"] if is(&Method::POST) => {
                Some(Route::Event { path_key: None })
            }
            ["api", "v1", "events", "kafka" | "mqtt", k] | ["api", "v1", "kafka" | "mqtt", k]
                if is(&Method::POST) =>
            {
                key(k).map(|k| Route::Event { path_key: Some(k) })
            }
            ["api", "pings", k] if is(&Method::HEAD) || is(&Method::GET) => {
                key(k).map(|key| Route::HeartbeatPing { key })
            }
            ["api", "heartbeats", k] | ["api", "v1", "heartbeats", k] if is(&Method::GET) => {
                key(k).map(|key| Route::HeartbeatLegacy { key })
            }
            ["api", "users", "search-email"] if is(&Method::POST) => Some(Route::UserSearch),
            ["api", "escalation-policies", "resolve"] if is(&Method::GET) => {
                Some(Route::PolicyResolve)
            }
            ["api", "escalation-policies", id, "levels", level] if is(&Method::PUT) => {
                Some(Route::PolicyLevelUpdate {
                    id: (*id).to_owned(),
                    level: (*level).to_owned(),
                })
            }
            _ => None,
        };
        route.unwrap_or(Route::Unknown)
    }

    pub(crate) fn kind(&self) -> RequestKind {
        match self {
            Route::Event { .. } => RequestKind::Event,
            Route::HeartbeatPing { .. } => RequestKind::HeartbeatPing,
            Route::HeartbeatLegacy { .. } => RequestKind::HeartbeatLegacy,
            Route::UserSearch => RequestKind::UserSearch,
            Route::PolicyResolve => RequestKind::PolicyResolve,
            Route::PolicyLevelUpdate { .. } => RequestKind::PolicyLevelUpdate,
            Route::Unknown => RequestKind::Unknown,
        }
    }
}

/// What the `Authorization` header holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bearer {
    Missing,
    /// Not a bearer credential, or an empty token.
    Malformed,
    /// `Bearer Bearer <key>`: the prefix was added twice.
    Doubled(String),
    Token(String),
}

impl Bearer {
    fn parse(headers: &HeaderMap) -> Bearer {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Bearer::Missing;
        };
        let value = String::from_utf8_lossy(value.as_bytes());
        match strip_bearer(value.trim()) {
            None => Bearer::Malformed,
            Some("") => Bearer::Malformed,
            Some(token) if strip_bearer(token).is_some() => Bearer::Doubled(token.to_owned()),
            Some(token) => Bearer::Token(token.to_owned()),
        }
    }

    fn key(&self) -> Option<String> {
        match self {
            Bearer::Doubled(token) | Bearer::Token(token) => Some(token.clone()),
            Bearer::Missing | Bearer::Malformed => None,
        }
    }
}

fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

/// What the endpoint logic needs to know about a request.
pub(crate) struct RequestCtx {
    pub(crate) route: Route,
    pub(crate) uri: Uri,
    pub(crate) json: Option<Value>,
    pub(crate) key: Option<String>,
    pub(crate) bearer: Bearer,
}

enum Outcome {
    Respond(Response),
    DropConnection,
}

/// Fallback handler for every non-control request.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let seq = shared.next_seq();
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let (parts, body) = request.into_parts();
    let control = parts.extensions.get::<ConnectionControl>().cloned();
    let (bytes, body_ok) = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => (bytes, true),
        Err(_) => (Bytes::new(), false),
    };
    let route = Route::classify(&parts.method, parts.uri.path());
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    let bearer = Bearer::parse(&parts.headers);
    let key = match &route {
        Route::Event { path_key } => events::event_key(json.as_ref(), path_key.as_deref()),
        Route::HeartbeatPing { key } | Route::HeartbeatLegacy { key } => Some(key.clone()),
        Route::UserSearch | Route::PolicyResolve | Route::PolicyLevelUpdate { .. } => bearer.key(),
        Route::Unknown => None,
    };
    let entry = RecordedRequest {
        seq,
        received_at_ms,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        json: json.clone(),
        key: key.clone(),
        kind: route.kind(),
        status: 0,
    };
    let recording = Recording::new(Arc::clone(&shared), entry);
    if !body_ok {
        let response = reply::status_error(StatusCode::PAYLOAD_TOO_LARGE);
        recording.finish(response.status().as_u16());
        return response;
    }
    let ctx = RequestCtx {
        route,
        uri: parts.uri,
        json,
        key,
        bearer,
    };
    match pipeline(&shared, &ctx).await {
        Outcome::Respond(response) => {
            recording.finish(response.status().as_u16());
            response
        }
        Outcome::DropConnection => match control {
            Some(control) => {
                recording.finish(0);
                control.drop_connection();
                // The connection task drops this future together with the connection.
                std::future::pending::<Response>().await
            }
            None => {
                let response = reply::status_error(StatusCode::INTERNAL_SERVER_ERROR);
                recording.finish(response.status().as_u16());
                response
            }
        },
    }
}

async fn pipeline(shared: &Shared, ctx: &RequestCtx) -> Outcome {
    if let Some(entry) = shared.pop_script() {
        match entry {
            Scripted::Status(status) => return Outcome::Respond(answer_status(ctx, status)),
            Scripted::RetryAfterSeconds { status, seconds } => {
                let response = answer_status(ctx, status);
                return Outcome::Respond(with_retry_after(response, seconds.to_string()));
            }
            Scripted::RetryAfterDate {
                status,
                seconds_from_now,
            } => {
                let secs = seconds_from_now.min(MAX_RETRY_AFTER_SECS);
                let now = SystemTime::now();
                let at = now.checked_add(Duration::from_secs(secs)).unwrap_or(now);
                let response = answer_status(ctx, status);
                return Outcome::Respond(with_retry_after(response, httpdate::fmt_http_date(at)));
            }
            Scripted::Delay { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Scripted::Drop => return Outcome::DropConnection,
        }
    }
    let behaviour = shared.behaviour();
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    if behaviour.error_rate > 0.0 && rand::random::<f64>() < behaviour.error_rate {
        return Outcome::Respond(reply::status_error(StatusCode::SERVICE_UNAVAILABLE));
    }
    if let Some(key) = &ctx.key {
        if let Some(&status) = behaviour.key_status.get(key) {
            return Outcome::Respond(answer_status(ctx, status));
        }
        let decision = match &behaviour.rate_limit {
            Some(limit) => shared.check_rate(key, limit),
            None => RateDecision::Allowed,
        };
        if let RateDecision::Limited { retry_after_secs } = decision {
            let response = reply::status_error(StatusCode::TOO_MANY_REQUESTS);
            return Outcome::Respond(with_retry_after(response, retry_after_secs.to_string()));
        }
    }
    Outcome::Respond(endpoint(shared, ctx, &behaviour))
}

fn endpoint(shared: &Shared, ctx: &RequestCtx, behaviour: &Behaviour) -> Response {
    match &ctx.route {
        Route::Event { path_key } => events::handle(ctx.json.as_ref(), path_key.as_deref()),
        Route::HeartbeatPing { .. } | Route::HeartbeatLegacy { .. } => heartbeats::handle(),
        Route::UserSearch | Route::PolicyResolve | Route::PolicyLevelUpdate { .. } => {
            policies::handle(shared, ctx, behaviour)
        }
        Route::Unknown => reply::error(StatusCode::NOT_FOUND, "No such endpoint", "NOT_FOUND"),
    }
}

/// A forced answer (script or key status): 2xx is treated as accepted, anything else is an
/// ilert-like error.
fn answer_status(ctx: &RequestCtx, status: u16) -> Response {
    let status = reply::status_code(status);
    if !status.is_success() {
        return reply::status_error(status);
    }
    match ctx.route {
        Route::Event { .. } => reply::event_accepted(status),
        _ => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = status;
            response
        }
    }
}

fn with_retry_after(mut response: Response, value: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_ilert_endpoint() {
        let c = |m: Method, p: &str| Route::classify(&m, p).kind();
        assert_eq!(c(Method::POST, "/api/events"), RequestKind::Event);
        assert_eq!(c(Method::POST, "/api/v1/events"), RequestKind::Event);
        assert_eq!(
            Route::classify(&Method::POST, "/api/v1/events/kafka/k1"),
            Route::Event {
                path_key: Some("k1".into())
            }
        );
        assert_eq!(
            c(Method::POST, "/api/v1/events/mqtt/k1"),
            RequestKind::Event
        );
        assert_eq!(c(Method::POST, "/api/v1/kafka/k1"), RequestKind::Event);
        assert_eq!(c(Method::POST, "/api/v1/mqtt/k1"), RequestKind::Event);
        assert_eq!(c(Method::HEAD, "/api/pings/k"), RequestKind::HeartbeatPing);
        assert_eq!(c(Method::GET, "/api/pings/k"), RequestKind::HeartbeatPing);
        assert_eq!(
            c(Method::GET, "/api/heartbeats/k"),
            RequestKind::HeartbeatLegacy
        );
        assert_eq!(
            c(Method::GET, "/api/v1/heartbeats/k"),
            RequestKind::HeartbeatLegacy
        );
        assert_eq!(
            c(Method::POST, "/api/users/search-email"),
            RequestKind::UserSearch
        );
        assert_eq!(
            c(Method::GET, "/api/escalation-policies/resolve"),
            RequestKind::PolicyResolve
        );
        assert_eq!(
            c(Method::PUT, "/api/escalation-policies/3/levels/0"),
            RequestKind::PolicyLevelUpdate
        );
    }

    #[test]
    fn wrong_methods_and_paths_are_unknown() {
        let c = |m: Method, p: &str| Route::classify(&m, p).kind();
        assert_eq!(c(Method::GET, "/api/events"), RequestKind::Unknown);
        assert_eq!(
            c(Method::POST, "/api/v1/events/kafka/"),
            RequestKind::Unknown
        );
        assert_eq!(c(Method::POST, "/api/pings/k"), RequestKind::Unknown);
        assert_eq!(c(Method::POST, "/api/events/extra"), RequestKind::Unknown);
        assert_eq!(c(Method::GET, "/"), RequestKind::Unknown);
    }

    #[test]
    fn bearer_prefix_must_appear_exactly_once() {
        let parse = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            Bearer::parse(&headers)
        };
        assert_eq!(parse("Bearer abc"), Bearer::Token("abc".into()));
        assert_eq!(
            parse("Bearer Bearer abc"),
            Bearer::Doubled("Bearer abc".into())
        );
        assert_eq!(parse("abc"), Bearer::Malformed);
        assert_eq!(parse("Bearer "), Bearer::Malformed);
        assert_eq!(parse("Basic abc"), Bearer::Malformed);
        assert_eq!(Bearer::parse(&HeaderMap::new()), Bearer::Missing);
    }
}
