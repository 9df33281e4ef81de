//! The HTTP proxy's request parsing, without a server: the Content-Type check, the body
//! mapped to an event as `POST /api/events` maps it (the ilert schema, source `http`), the
//! queue row's order key, the JSON error body of a refusal, and the key of
//! `/api/heartbeats/{key}`. Must never panic; a refusal's message must be printable.
//!
//! Input: byte 0 picks the route (bits 0-1: `/api/events`, `/api/v1/events`,
//! `/api/heartbeats/{key}`, `/api/v1/heartbeats/{key}`); then the Content-Type value up
//! to the first `\n`; the rest is the body (for a heartbeat route, the path's key).

#![no_main]

use std::sync::{Arc, LazyLock};

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use ilagent::action::Action;
use ilagent::mapping::{MappingConfig, MessageKind};
use ilagent::message::{Message, Metadata, SourceKind};
use ilagent::pipeline::MessageRouter;
use ilagent::queue::order_key_column;
use ilagent::sources::http::{error_body, event_of, is_json, path_key};
use libfuzzer_sys::fuzz_target;

const EVENT_ROUTES: [&str; 2] = ["/api/events", "/api/v1/events"];

/// The proxy's router: every body is an event, in ilert's schema (no mapping flags).
static ROUTER: LazyLock<MessageRouter> =
    LazyLock::new(|| MessageRouter::fixed(MessageKind::Event, Arc::new(MappingConfig::default())));

fn assert_printable(text: &str) {
    let bad = text.chars().find(|&c| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    });
    assert!(bad.is_none(), "unprintable {bad:?} in {text:?}");
}

fn post_event(path: &str, content_type: &[u8], body: &[u8]) {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    let _ = is_json(&headers);
    let message = Message {
        payload: body.to_vec(),
        meta: Metadata::new(SourceKind::Http, path),
    };
    match event_of(&ROUTER, &message) {
        Ok(event) => {
            let _ = serde_json::to_vec(&event);
            let _ = order_key_column(&Action::Event(event));
        }
        Err(reason) => {
            assert_printable(&reason);
            let body = error_body(StatusCode::BAD_REQUEST, "INVALID_EVENT", &reason);
            if let Some(field) = body.get("field").and_then(|f| f.as_str()) {
                assert!(reason.contains(field), "field {field:?} not in {reason:?}");
            }
        }
    }
}

fn heartbeat(key: &[u8]) {
    // axum percent-decodes the path segment and refuses one that is not UTF-8.
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    if let Some(key) = path_key(key) {
        assert!(!key.is_empty());
        let _ = key.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let [route, rest @ ..] = data else {
        return;
    };
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    match route & 3 {
        r @ (0 | 1) => post_event(EVENT_ROUTES[usize::from(r)], content_type, body),
        _ => heartbeat(body),
    }
});
