//! The proxy's answers: ilert-shaped JSON errors (`{status, code, message}`, plus `field`
//! when the message names one), and the bearer-token check in front of `/api/*`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::observe::events;
use crate::secret::Secret;

/// A JSON error answer. `message` never holds a secret: callers pass mapping's reasons,
/// which name fields, not values of keys.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(error_body(status, code, message))).into_response()
}

/// The body of [`error`], apart so that it can be fuzzed without a response (`fuzz/`).
pub fn error_body(status: StatusCode, code: &str, message: &str) -> serde_json::Value {
    let mut body = json!({ "status": status.as_u16(), "code": code, "message": message });
    if let Some(field) = field_named(message) {
        body["field"] = json!(field);
    }
    body
}

/// The first name in backquotes: mapping's reasons read "field `summary` must be …".
fn field_named(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len]).filter(|f| !f.is_empty())
}

/// `--http_token`: every `/api/*` request must carry `Authorization: Bearer <token>`.
pub async fn require_token(
    State(token): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if same(given.as_bytes(), token.expose().as_bytes()) => next.run(request).await,
        _ => {
            events::http_request("unauthorized", 401);
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "missing or wrong token: send the header Authorization: Bearer <the --http_token value>",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Compares without stopping at the first difference, so timing reveals nothing but
/// the length.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_the_first_quoted_name() {
        assert_eq!(
            field_named("field `severity` must be an integer"),
            Some("severity")
        );
        assert_eq!(
            field_named("missing event type: the payload has no `eventType` field"),
            Some("eventType")
        );
        assert_eq!(field_named("payload is not valid JSON"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
