//! The HTTP client for the ilert API: one pooled, keep-alive connection set for the
//! whole process, with connect and request timeouts and an `ilagent/<version>` user agent.
//!
//! Each call makes exactly one request and returns a [`Verdict`]; retrying is the
//! delivery layer's job. URLs that carry keys never reach a log or an error message.

use std::time::{Duration, SystemTime};

use reqwest::{Method, Url};
use serde::Deserialize;

use super::classify::{Verdict, classify_response, classify_transport_error};
use super::event::Event;
use crate::observe::events;
use crate::secret::Secret;

/// The most of a response body the agent reads: enough for any ilert error message.
const MAX_BODY: usize = 64 * 1024;

/// Heartbeat keys of legacy heartbeat alert sources start with this and use the
/// legacy endpoint on the API host.
pub(crate) const LEGACY_HEARTBEAT_PREFIX: &str = "il1hbt";

/// Where events are posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventPath {
    /// `POST /api/events`, the generic events API (HTTP proxy, `event` command).
    Generic,
    /// A path with a `{key}` placeholder, e.g. `/api/v1/events/kafka/{key}` for Kafka
    /// alert sources. The key is percent-encoded into it.
    PerKey(String),
}

impl EventPath {
    pub const KAFKA: &'static str = "/api/v1/events/kafka/{key}";
    pub const MQTT: &'static str = "/api/v1/events/mqtt/{key}";
}

/// Connection settings of the client.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Events and management API, e.g. `https://api.ilert.com`.
    pub api_url: Url,
    /// Heartbeat pings of new monitors, e.g. `https://beat.ilert.com`.
    pub beat_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Failure to build the client: only a broken TLS setup can cause it.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// A user as the search endpoint returns it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct UserRef {
    pub id: i64,
}

/// An escalation policy as the resolve endpoint returns it (the parts the agent needs).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPolicy {
    pub id: i64,
    #[serde(default)]
    pub escalation_rules: Vec<EscalationRule>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EscalationRule {
    #[serde(default)]
    pub escalation_timeout: serde_json::Value,
}

/// Idle connections kept per ilert host, for the next requests. The pool keeps as many as
/// the largest burst of requests within its idle timeout used, so this is what a steady
/// stream with bursts holds open: at 32, the one-hour soak's first agent's descriptors rose
/// from 36 to 64; at 16 they stay at 53. 16 covers the concurrency of a steady stream of a
/// few hundred events a second at ilert's latency, and a burst beyond it reconnects
/// (tests/http_proxy.rs checks the cap after a burst of 50).
const MAX_IDLE_CONNECTIONS: usize = 16;

/// Makes ring the process's TLS crypto provider, which reqwest takes for HTTPS to ilert (as
/// MQTT over TLS does, see `sources::mqtt::tls`). The certificates are the system's, as
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` may point elsewhere. Only the first call counts.
fn install_crypto_provider() {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The ilert API client. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct IlertClient {
    http: reqwest::Client,
    api_url: Url,
    beat_url: Url,
}

impl IlertClient {
    pub fn new(settings: &ClientSettings) -> Result<Self, ClientBuildError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ilagent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // A burst (a rate-limit window opening on many keys, a backlog after an outage)
            // opens as many connections as requests run in parallel; keeping them all idle
            // afterwards held about a hundred sockets for nothing. Beyond this many idle
            // ones, a returned connection is closed.
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
            .tcp_keepalive(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientBuildError(e.without_url().to_string()))?;
        Ok(IlertClient {
            http,
            api_url: settings.api_url.clone(),
            beat_url: settings.beat_url.clone(),
        })
    }

    /// Posts one event.
    /// Posts `event` to `path`, or to the event's own path where it has one.
    pub async fn send_event(&self, event: &Event, path: &EventPath) -> Verdict {
        let url = match event.path.as_ref().unwrap_or(path) {
            EventPath::Generic => join(&self.api_url, &["api", "events"]),
            EventPath::PerKey(template) => {
                per_key_url(&self.api_url, template, event.integration_key.expose())
            }
        };
        let request = self.http.post(url).json(event);
        self.execute(request).await.0
    }

    /// Pings a heartbeat: legacy keys (`il1hbt…`) on the API host, others on the beat host.
    pub async fn ping_heartbeat(&self, key: &Secret) -> Verdict {
        let url = if key.expose().starts_with(LEGACY_HEARTBEAT_PREFIX) {
            join(&self.api_url, &["api", "heartbeats", key.expose()])
        } else {
            join(&self.beat_url, &["api", "pings", key.expose()])
        };
        self.execute(self.http.get(url)).await.0
    }

    /// `POST /api/users/search-email`. `Ok(None)` when ilert knows no such user.
    pub async fn search_user(
        &self,
        api_key: &Secret,
        email: &str,
    ) -> Result<Option<UserRef>, Verdict> {
        let url = join(&self.api_url, &["api", "users", "search-email"]);
        let request = self
            .authorized(Method::POST, url, api_key)
            .json(&serde_json::json!({ "email": email }));
        self.fetch_json(request).await
    }

    /// `GET /api/escalation-policies/resolve?routing-key=…`. `Ok(None)` when no policy
    /// has that routing key.
    pub async fn resolve_policy(
        &self,
        api_key: &Secret,
        routing_key: &str,
    ) -> Result<Option<EscalationPolicy>, Verdict> {
        let mut url = join(&self.api_url, &["api", "escalation-policies", "resolve"]);
        url.query_pairs_mut()
            .append_pair("routing-key", routing_key);
        self.fetch_json(self.authorized(Method::GET, url, api_key))
            .await
    }

    /// `PUT /api/escalation-policies/{id}/levels/{level}`: puts `user_id` alone on the
    /// (zero-based) level, keeping the given escalation timeout.
    pub async fn update_level(
        &self,
        api_key: &Secret,
        policy_id: i64,
        level: u32,
        escalation_timeout: &serde_json::Value,
        user_id: i64,
    ) -> Verdict {
        let url = join(
            &self.api_url,
            &[
                "api",
                "escalation-policies",
                &policy_id.to_string(),
                "levels",
                &level.to_string(),
            ],
        );
        let body = serde_json::json!({
            "escalationTimeout": escalation_timeout,
            "users": [{ "id": user_id }],
        });
        let request = self.authorized(Method::PUT, url, api_key).json(&body);
        self.execute(request).await.0
    }

    fn authorized(&self, method: Method, url: Url, api_key: &Secret) -> reqwest::RequestBuilder {
        let key = api_key.expose();
        let key = key.strip_prefix("Bearer ").unwrap_or(key);
        self.http.request(method, url).bearer_auth(key)
    }

    /// For lookups: 200 with a JSON body is `Some`, 404 is `None`, the rest a verdict.
    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<T>, Verdict> {
        let (verdict, body) = self.execute(request).await;
        match verdict {
            Verdict::Delivered { status, .. } => {
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| Verdict::Transient {
                        status: Some(status),
                        reason: format!("ilert answered {status} with an unexpected body: {e}"),
                        retry_after: None,
                    })
            }
            Verdict::Permanent {
                status: Some(404), ..
            } => Ok(None),
            other => Err(other),
        }
    }

    async fn execute(&self, request: reqwest::RequestBuilder) -> (Verdict, Vec<u8>) {
        let _in_flight = events::ilert_request_started();
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                events::ilert_response(None);
                return (classify_transport_error(error), Vec::new());
            }
        };
        events::ilert_response(Some(response.status().as_u16()));
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                // A body cut short still has its status: classify by that.
                Err(_) => break,
            }
        }
        let verdict = classify_response(
            response.status(),
            response.headers(),
            &body,
            SystemTime::now(),
        );
        (verdict, body)
    }
}

/// `base` + segments, each percent-encoded; keeps any path prefix of `base` (a proxy).
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Fills `{key}` in a path template such as `/api/v1/events/kafka/{key}`.
fn per_key_url(base: &Url, template: &str, key: &str) -> Url {
    let segments: Vec<&str> = template
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| if s == "{key}" { key } else { s })
        .collect();
    join(base, &segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_proxy_prefix_and_encode_keys() {
        let base = Url::parse("http://proxy.local/ilert/").unwrap();
        assert_eq!(
            join(&base, &["api", "events"]).as_str(),
            "http://proxy.local/ilert/api/events"
        );
        assert_eq!(
            per_key_url(&base, EventPath::KAFKA, "a/b c").as_str(),
            "http://proxy.local/ilert/api/v1/events/kafka/a%2Fb%20c"
        );
    }
}
