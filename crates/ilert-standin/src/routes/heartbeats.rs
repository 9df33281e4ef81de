//! Heartbeat pings (`HEAD`/`GET /api/pings/{key}`) and legacy heartbeat alert sources
//! (`GET /api/heartbeats/{key}`): ilert answers 202 to any well-formed ping.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

pub(crate) fn handle() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}
