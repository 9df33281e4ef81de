//! Turns one ilert response (or transport failure) into a decision: delivered, retry, or reject.
//!
//! This is the single place that knows which statuses ilert means as "try again"
//! (network errors, timeouts, 408, 429, 5xx) and which as "never" (other 4xx). The reason
//! kept here is what logs and dead-letter records show.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest body excerpt kept in a reason.
const MAX_REASON_BODY: usize = 300;

/// The result of one attempt at an ilert call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// ilert accepted it (any 2xx).
    Delivered {
        status: u16,
        correlation_id: Option<String>,
    },
    /// Worth trying again: network error, timeout, 408, 429 or 5xx.
    Transient {
        status: Option<u16>,
        reason: String,
        /// What the response's `Retry-After` asked for, if anything.
        retry_after: Option<Duration>,
    },
    /// Will never succeed as it is: other 4xx, or an invalid request.
    Permanent { status: Option<u16>, reason: String },
}

impl Verdict {
    pub fn status(&self) -> Option<u16> {
        match self {
            Verdict::Delivered { status, .. } => Some(*status),
            Verdict::Transient { status, .. } | Verdict::Permanent { status, .. } => *status,
        }
    }
}

/// Classifies a complete HTTP response.
pub fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Verdict {
    let code = status.as_u16();
    if status.is_success() {
        let correlation_id = headers
            .get("correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return Verdict::Delivered {
            status: code,
            correlation_id,
        };
    }
    let reason = describe(status, body);
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        return Verdict::Transient {
            status: Some(code),
            reason,
            retry_after,
        };
    }
    Verdict::Permanent {
        status: Some(code),
        reason,
    }
}

/// Classifies a request that got no response: always transient, never with the URL
/// (which can hold a heartbeat or integration key).
pub fn classify_transport_error(error: reqwest::Error) -> Verdict {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut reason = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Verdict::Transient {
        status: None,
        reason,
        retry_after: None,
    }
}

/// `Retry-After` in either form: delay-seconds (`120`) or an HTTP-date. A date in the
/// past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `404 Not Found: <ilert's message>`; falls back to a body excerpt.
fn describe(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| {
            json.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.trim().to_string());
    let message: String = message.chars().take(MAX_REASON_BODY).collect();
    if message.is_empty() {
        status.to_string()
    } else {
        // The body is the peer's text: escaped like a message's, for logs and dead letters.
        crate::printable::reason(format!("{status}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn verdict(code: u16, body: &str) -> Verdict {
        classify_response(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            SystemTime::now(),
        )
    }

    #[test]
    fn any_2xx_is_delivered() {
        for code in [200, 201, 202, 204] {
            assert!(
                matches!(verdict(code, ""), Verdict::Delivered { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn timeouts_rate_limits_and_server_errors_are_transient() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(verdict(code, ""), Verdict::Transient { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_permanent_with_ilerts_message() {
        for code in [400, 401, 403, 404, 413, 422, 409] {
            assert!(
                matches!(verdict(code, ""), Verdict::Permanent { .. }),
                "{code}"
            );
        }
        let v = verdict(
            400,
            r#"{"status":400,"message":"summary is required","code":"X"}"#,
        );
        assert_eq!(
            v,
            Verdict::Permanent {
                status: Some(400),
                reason: "400 Bad Request: summary is required".into()
            }
        );
    }

    #[test]
    fn correlation_id_is_kept_from_a_202() {
        let mut headers = HeaderMap::new();
        headers.insert("correlation-id", HeaderValue::from_static("abc-1"));
        let v = classify_response(StatusCode::ACCEPTED, &headers, b"", SystemTime::now());
        assert_eq!(
            v,
            Verdict::Delivered {
                status: 202,
                correlation_id: Some("abc-1".into())
            }
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_form() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let v = classify_response(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            b"",
            SystemTime::now(),
        );
        assert!(
            matches!(v, Verdict::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
    }

    #[test]
    fn retry_after_is_read_in_http_date_form() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn long_bodies_are_cut_in_the_reason() {
        let body = "x".repeat(5000);
        let Verdict::Permanent { reason, .. } = verdict(400, &body) else {
            panic!("400 must be permanent")
        };
        assert!(reason.len() < 400);
    }
}
