//! Response shapes shared by the ilert endpoints: ilert-like error bodies, accepted events
//! with a `correlation-id`, and a safe mapping from configured numbers to HTTP statuses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Maps a configured status to one hyper can send; anything outside 200..=599 becomes 500.
pub(crate) fn status_code(status: u16) -> StatusCode {
    match status {
        200..=599 => StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"status":N,"message":"...","code":"..."}`, like ilert's error bodies.
pub(crate) fn error(status: StatusCode, message: impl Into<String>, code: &str) -> Response {
    let body = json!({
        "status": status.as_u16(),
        "message": message.into(),
        "code": code,
    });
    (status, Json(body)).into_response()
}

/// An error answer with a message and code chosen by status alone.
pub(crate) fn status_error(status: StatusCode) -> Response {
    let (message, code) = match status.as_u16() {
        400 => ("Bad request", "BAD_REQUEST"),
        401 => ("Unauthorized: missing or invalid API key", "UNAUTHORIZED"),
        403 => ("Forbidden", "FORBIDDEN"),
        404 => ("Not found: unknown key or resource", "NOT_FOUND"),
        408 => ("Request timeout", "REQUEST_TIMEOUT"),
        413 => ("Payload too large", "PAYLOAD_TOO_LARGE"),
        429 => (
            "Too many requests: rate limit exceeded",
            "RATE_LIMIT_EXCEEDED",
        ),
        500 => ("Internal server error", "INTERNAL_ERROR"),
        502 => ("Bad gateway", "BAD_GATEWAY"),
        503 => ("Service unavailable", "SERVICE_UNAVAILABLE"),
        504 => ("Gateway timeout", "GATEWAY_TIMEOUT"),
        s if s < 500 => ("Client error", "CLIENT_ERROR"),
        _ => ("Server error", "SERVER_ERROR"),
    };
    error(status, message, code)
}

/// An accepted event: the given 2xx status, a fresh `correlation-id` header and a small body.
pub(crate) fn event_accepted(status: StatusCode) -> Response {
    let id = correlation_id();
    let body = json!({ "status": "ACCEPTED", "correlationId": id });
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("correlation-id", value);
    }
    response
}

/// A random UUID-shaped (version 4 layout) identifier.
pub(crate) fn correlation_id() -> String {
    let n: u128 = rand::random();
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_uuid_shaped_and_distinct() {
        let a = correlation_id();
        let b = correlation_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }

    #[test]
    fn out_of_range_statuses_become_500() {
        assert_eq!(status_code(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_code(1000), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_code(429), StatusCode::TOO_MANY_REQUESTS);
    }
}
