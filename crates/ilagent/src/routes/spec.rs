//! The `[[route]]` tables of the configuration file, as written: names, topics, kind,
//! condition, field expressions and route tests. [`super::RouteTable::compile`] turns them
//! into routes; nothing here is checked beyond its TOML type.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceName {
    Kafka,
    Mqtt,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KindName {
    #[default]
    Event,
    Heartbeat,
    #[serde(alias = "policy")]
    PolicyUpdate,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSpec {
    pub name: Spanned<String>,
    pub source: Spanned<SourceName>,
    pub topics: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub kind: KindName,
    /// The activation condition: the route takes a message only where it is true.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// Field expressions; without them the flag mapping applies (`--map_key_*`).
    #[serde(default)]
    pub fields: Option<Spanned<FieldSpecs>>,
    /// The idempotency id of an event (e.g. `.id`): ilert gets each id once per window.
    #[serde(default)]
    pub dedupe: Option<Spanned<String>>,
    /// How long an accepted id suppresses its duplicates (default 24h).
    #[serde(default)]
    pub dedupe_window: Option<Spanned<String>>,
    #[serde(default)]
    pub test: Vec<TestSpec>,
}

/// The ilert fields a route computes, each a jq expression (snake_case names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldSpecs {
    // events (and heartbeats: integration_key)
    pub integration_key: Option<Spanned<String>>,
    pub event_type: Option<Spanned<String>>,
    pub summary: Option<Spanned<String>>,
    pub details: Option<Spanned<String>>,
    pub alert_key: Option<Spanned<String>>,
    pub priority: Option<Spanned<String>>,
    pub severity: Option<Spanned<String>>,
    pub links: Option<Spanned<String>>,
    pub images: Option<Spanned<String>>,
    pub comments: Option<Spanned<String>>,
    pub labels: Option<Spanned<String>>,
    pub custom_details: Option<Spanned<String>>,
    pub routing_key: Option<Spanned<String>>,
    // escalation-policy updates (and routing_key)
    pub email: Option<Spanned<String>>,
    pub shift: Option<Spanned<String>>,
}

impl FieldSpecs {
    /// Every field that is set, with its name in the file and in ilert's schema.
    pub(crate) fn set(&self) -> Vec<(&'static str, &'static str, &Spanned<String>)> {
        [
            ("integration_key", "integrationKey", &self.integration_key),
            ("event_type", "eventType", &self.event_type),
            ("summary", "summary", &self.summary),
            ("details", "details", &self.details),
            ("alert_key", "alertKey", &self.alert_key),
            ("priority", "priority", &self.priority),
            ("severity", "severity", &self.severity),
            ("links", "links", &self.links),
            ("images", "images", &self.images),
            ("comments", "comments", &self.comments),
            ("labels", "labels", &self.labels),
            ("custom_details", "customDetails", &self.custom_details),
            ("routing_key", "routingKey", &self.routing_key),
            ("email", "email", &self.email),
            ("shift", "shift", &self.shift),
        ]
        .into_iter()
        .filter_map(|(file, ilert, spec)| spec.as_ref().map(|s| (file, ilert, s)))
        .collect()
    }
}

/// One `[[route.test]]`: a message and what the agent must make of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Defaults to the route's first topic (which must then have no wildcard).
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The payload as a TOML value, sent as its JSON text...
    #[serde(default)]
    pub value: Option<toml::Value>,
    /// ... or as these exact bytes.
    #[serde(default)]
    pub raw: Option<String>,
    pub expect: Spanned<Expectation>,
}

/// What a route test expects: a request (method, path, body), an escalation-policy update,
/// a skip or an invalid message (each a substring of the reason), and optionally which
/// route took it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expectation {
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub body: Option<toml::Value>,
    /// An escalation-policy update: `{routingKey, email, level}`.
    #[serde(default)]
    pub policy_update: Option<toml::Value>,
    #[serde(default)]
    pub skip: Option<String>,
    #[serde(default)]
    pub invalid: Option<String>,
    /// The event's idempotency id (the route's `dedupe`).
    #[serde(default)]
    pub dedupe: Option<String>,
}
