//! `POST /api/events` and the source-specific event paths: validates a body the way ilert
//! does, so that tests catch events the real API would reject with 400.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::reply;

const EVENT_TYPES: [&str; 4] = ["ALERT", "ACCEPT", "RESOLVE", "COMMENT"];

/// Why an event body was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) message: String,
    pub(crate) code: &'static str,
}

fn invalid(message: impl Into<String>, code: &'static str) -> Invalid {
    Invalid {
        message: message.into(),
        code,
    }
}

/// The integration key: body `integrationKey`, else its alias `apiKey`, else the path key.
pub(crate) fn event_key(json: Option<&Value>, path_key: Option<&str>) -> Option<String> {
    let body_key = |name: &str| {
        json.and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
    };
    body_key("integrationKey")
        .or_else(|| body_key("apiKey"))
        .or(path_key)
        .map(str::to_owned)
}

pub(crate) fn handle(json: Option<&Value>, path_key: Option<&str>) -> Response {
    match validate(json, path_key) {
        Ok(()) => reply::event_accepted(StatusCode::ACCEPTED),
        Err(Invalid { message, code }) => reply::error(StatusCode::BAD_REQUEST, message, code),
    }
}

pub(crate) fn validate(json: Option<&Value>, path_key: Option<&str>) -> Result<(), Invalid> {
    let Some(json) = json else {
        return Err(invalid("Request body is not valid JSON", "INVALID_JSON"));
    };
    let Some(body) = json.as_object() else {
        return Err(invalid(
            "Request body must be a JSON object",
            "INVALID_JSON",
        ));
    };
    let present = |name: &str| body.get(name).filter(|v| !v.is_null());

    for name in ["integrationKey", "apiKey"] {
        if present(name).is_some_and(|v| !v.is_string()) {
            return Err(invalid(
                format!("{name} must be a string"),
                "INVALID_INTEGRATION_KEY",
            ));
        }
    }
    if event_key(Some(json), path_key).is_none() {
        return Err(invalid(
            "integrationKey is required",
            "MISSING_INTEGRATION_KEY",
        ));
    }

    let event_type = match present("eventType") {
        None => return Err(invalid("eventType is required", "MISSING_EVENT_TYPE")),
        Some(v) => v.as_str().unwrap_or_default(),
    };
    if !EVENT_TYPES.contains(&event_type) {
        return Err(invalid(
            format!("eventType must be one of {}", EVENT_TYPES.join(", ")),
            "INVALID_EVENT_TYPE",
        ));
    }

    for name in ["summary", "details", "alertKey", "routingKey"] {
        if present(name).is_some_and(|v| !v.is_string()) {
            return Err(invalid(format!("{name} must be a string"), "INVALID_FIELD"));
        }
    }
    if event_type == "ALERT" {
        let summary = present("summary")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if summary.trim().is_empty() {
            return Err(invalid(
                "summary is required for ALERT events",
                "MISSING_SUMMARY",
            ));
        }
    }

    if present("priority").is_some_and(|p| !matches!(p.as_str(), Some("HIGH" | "LOW"))) {
        return Err(invalid("priority must be HIGH or LOW", "INVALID_PRIORITY"));
    }
    if present("severity").is_some_and(|s| !matches!(s.as_i64(), Some(1..=5))) {
        return Err(invalid(
            "severity must be an integer from 1 to 5",
            "INVALID_SEVERITY",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value) -> Result<(), &'static str> {
        validate(Some(&body), None).map_err(|e| e.code)
    }

    #[test]
    fn accepts_complete_alert_and_minimal_resolve() {
        let alert = json!({"integrationKey": "k", "eventType": "ALERT", "summary": "down",
            "priority": "HIGH", "severity": 2, "alertKey": "a", "labels": {"x": "y"}});
        assert_eq!(check(alert), Ok(()));
        assert_eq!(
            check(json!({"apiKey": "k", "eventType": "RESOLVE"})),
            Ok(())
        );
        let by_path = json!({"eventType": "ACCEPT"});
        assert_eq!(validate(Some(&by_path), Some("pk")), Ok(()));
    }

    #[test]
    fn rejects_what_ilert_rejects() {
        assert_eq!(check(json!([1])), Err("INVALID_JSON"));
        assert_eq!(
            check(json!({"eventType": "ALERT", "summary": "s"})),
            Err("MISSING_INTEGRATION_KEY")
        );
        assert_eq!(
            check(json!({"integrationKey": 5, "eventType": "ALERT"})),
            Err("INVALID_INTEGRATION_KEY")
        );
        assert_eq!(
            check(json!({"integrationKey": "k"})),
            Err("MISSING_EVENT_TYPE")
        );
        assert_eq!(
            check(json!({"integrationKey": "k", "eventType": "alert", "summary": "s"})),
            Err("INVALID_EVENT_TYPE")
        );
        assert_eq!(
            check(json!({"integrationKey": "k", "eventType": "ALERT"})),
            Err("MISSING_SUMMARY")
        );
        assert_eq!(
            check(json!({"integrationKey": "k", "eventType": "ALERT", "summary": " "})),
            Err("MISSING_SUMMARY")
        );
        assert_eq!(
            check(json!({"integrationKey": "k", "eventType": "RESOLVE", "priority": "MEDIUM"})),
            Err("INVALID_PRIORITY")
        );
        assert_eq!(
            check(json!({"integrationKey": "k", "eventType": "RESOLVE", "severity": 6})),
            Err("INVALID_SEVERITY")
        );
        assert_eq!(
            check(json!({"integrationKey": "k", "eventType": "RESOLVE", "severity": "3"})),
            Err("INVALID_SEVERITY")
        );
        assert_eq!(
            validate(None, Some("k")).map_err(|e| e.code),
            Err("INVALID_JSON")
        );
    }

    #[test]
    fn body_key_wins_over_alias_and_path() {
        let body = json!({"integrationKey": "a", "apiKey": "b"});
        assert_eq!(event_key(Some(&body), Some("c")).as_deref(), Some("a"));
        assert_eq!(
            event_key(Some(&json!({"apiKey": "b"})), Some("c")).as_deref(),
            Some("b")
        );
        assert_eq!(event_key(Some(&json!({})), Some("c")).as_deref(), Some("c"));
        assert_eq!(event_key(None, None), None);
    }
}
