//! The stand-in's vocabulary: what a test can configure (behaviour, scripts, users, policies)
//! and what it can observe (recorded requests). Kept apart from the server so that tests,
//! benchmarks and the control API all share one serde-compatible description.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One request the stand-in received on an ilert endpoint, with the answer it gave.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Arrival order, assigned when the request arrived (starts at 1).
    pub seq: u64,
    /// Arrival time, unix epoch milliseconds.
    pub received_at_ms: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names are lower-case; values are lossily decoded.
    pub headers: Vec<(String, String)>,
    /// Body as lossy UTF-8.
    pub body: String,
    /// Body parsed as JSON, when it is JSON.
    pub json: Option<serde_json::Value>,
    /// Integration key (body `integrationKey`/`apiKey`, or the path key), heartbeat key,
    /// or bearer API key, depending on the endpoint.
    pub key: Option<String>,
    pub kind: RequestKind,
    /// The status the stand-in answered; 0 when the connection was dropped without an answer.
    pub status: u16,
}

impl RecordedRequest {
    /// Value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Which ilert endpoint a request addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    Event,
    HeartbeatPing,
    HeartbeatLegacy,
    UserSearch,
    PolicyResolve,
    PolicyLevelUpdate,
    Unknown,
}

/// Standing behaviour, applied to every ilert request that no script entry answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Added to every ilert request before answering.
    pub latency_ms: u64,
    /// Share (0.0..=1.0) of requests answered 503, at random.
    pub error_rate: f64,
    /// Per-key fixed-window limits, like ilert's.
    pub rate_limit: Option<RateLimit>,
    /// Answer this status for this key, with an ilert-like error body.
    pub key_status: HashMap<String, u16>,
    /// When set, policy endpoints require `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
}

/// Per-key fixed-window rate limit. ilert allows 50 per integration key per 60 s window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_key: u32,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

fn default_window_ms() -> u64 {
    60_000
}

/// One scripted answer; each ilert request takes the next entry before standing behaviour.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Scripted {
    /// Answer this status (2xx counts as accepted; errors carry an ilert-like body).
    Status(u16),
    /// Answer this status with `Retry-After: <seconds>`.
    RetryAfterSeconds { status: u16, seconds: u64 },
    /// Answer this status with `Retry-After` as an HTTP-date this far in the future.
    RetryAfterDate { status: u16, seconds_from_now: u64 },
    /// Wait this long, then answer normally.
    Delay { ms: u64 },
    /// Close the TCP connection without any response.
    Drop,
}

/// A user known to the user-search endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub email: String,
}

/// An escalation policy, found by its routing key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub id: i64,
    pub routing_key: String,
    pub levels: Vec<Level>,
}

/// One escalation level (ilert: escalation rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub escalation_timeout: u64,
    pub user_ids: Vec<i64>,
}
