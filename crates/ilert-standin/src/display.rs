//! One-line, human-readable rendering of a recorded request, for `ilert-standin --print`
//! (the README demo shows events arriving). Keys are shortened so a screen never shows a
//! whole credential.

use serde_json::Value;

use crate::model::{RecordedRequest, RequestKind};

/// Characters of a key shown before the ellipsis.
const KEY_PREFIX_CHARS: usize = 8;
/// Longest summary shown before it is cut.
const SUMMARY_CHARS: usize = 80;

/// The first few characters of a key followed by "…".
pub fn mask_key(key: &str) -> String {
    let prefix: String = key.chars().take(KEY_PREFIX_CHARS).collect();
    format!("{prefix}…")
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

impl RecordedRequest {
    /// E.g. `202 POST /api/events key=il1api12… eventType=ALERT alertKey=a1 summary="Disk full"`;
    /// dropped connections show `drop` instead of a status.
    pub fn summary_line(&self) -> String {
        let status = match self.status {
            0 => "drop".to_owned(),
            s => s.to_string(),
        };
        let mut path = self.path.clone();
        if let Some(key) = self.key.as_deref().filter(|k| !k.is_empty()) {
            path = path.replace(key, &mask_key(key));
        }
        let mut line = format!("{status} {} {path}", self.method);
        if let Some(query) = &self.query {
            line.push('?');
            line.push_str(query);
        }
        if let Some(key) = &self.key {
            line.push_str(&format!(" key={}", mask_key(key)));
        }
        let event_json = self
            .json
            .as_ref()
            .filter(|_| self.kind == RequestKind::Event);
        if let Some(json) = event_json {
            for field in ["eventType", "alertKey"] {
                if let Some(value) = json.get(field).and_then(Value::as_str) {
                    line.push_str(&format!(" {field}={value}"));
                }
            }
            if let Some(summary) = json.get("summary").and_then(Value::as_str) {
                line.push_str(&format!(" summary={:?}", shorten(summary, SUMMARY_CHARS)));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(kind: RequestKind, path: &str, key: &str, json: Option<Value>) -> RecordedRequest {
        RecordedRequest {
            seq: 1,
            received_at_ms: 0,
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers: vec![],
            body: String::new(),
            json,
            key: Some(key.into()),
            kind,
            status: 202,
        }
    }

    #[test]
    fn event_line_shows_short_key_and_event_fields() {
        let body = json!({"eventType": "ALERT", "alertKey": "a1", "summary": "Disk \"full\""});
        let line = request(
            RequestKind::Event,
            "/api/events",
            "il1api1234567890",
            Some(body),
        )
        .summary_line();
        assert_eq!(
            line,
            r#"202 POST /api/events key=il1api12… eventType=ALERT alertKey=a1 summary="Disk \"full\"""#
        );
    }

    #[test]
    fn key_in_path_is_masked_too() {
        let mut r = request(
            RequestKind::HeartbeatPing,
            "/api/pings/il1hbt0987654321",
            "il1hbt0987654321",
            None,
        );
        r.method = "HEAD".into();
        r.status = 0;
        assert_eq!(
            r.summary_line(),
            "drop HEAD /api/pings/il1hbt09… key=il1hbt09…"
        );
    }
}
