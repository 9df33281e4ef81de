//! The ilert event as the API takes it (`POST /api/events`), and its enumerations.
//!
//! Mapping builds these from message payloads and the `event` command builds them from
//! flags; the client serializes them. Field names and casing follow ILERT_API.md.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::secret::Secret;

/// What the event does to the alert with its alertKey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Alert,
    Accept,
    Resolve,
    Comment,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Alert,
        EventType::Accept,
        EventType::Resolve,
        EventType::Comment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Alert => "ALERT",
            EventType::Accept => "ACCEPT",
            EventType::Resolve => "RESOLVE",
            EventType::Comment => "COMMENT",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepts any letter case: ilert itself is case-sensitive, so the agent normalizes.
impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("expected ALERT, ACCEPT, RESOLVE or COMMENT, got `{s}`"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    High,
    Low,
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HIGH" => Ok(Priority::High),
            "LOW" => Ok(Priority::Low),
            _ => Err(format!("expected HIGH or LOW, got `{s}`")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub src: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    pub creator: String,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub alias: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// An event's `customDetails`: a JSON object, kept as its text. Custom details are only ever
/// sent, never read again, and as text they take a fraction of the memory of a parsed map
/// (five entries: about 100 bytes instead of 800), which counts in the thousands of events a
/// full window holds.
#[derive(Clone, Debug)]
pub struct CustomDetails(Box<serde_json::value::RawValue>);

impl CustomDetails {
    /// The object, parsed again.
    #[cfg(test)]
    pub(crate) fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for CustomDetails {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Self {
        // Serializing a map of JSON values cannot fail; were it to, the event would go
        // with `null` details rather than not at all.
        let raw = serde_json::value::to_raw_value(&map)
            .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
        CustomDetails(raw)
    }
}

/// Same object text, same details: a map's text is canonical (keys in order).
impl PartialEq for CustomDetails {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for CustomDetails {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// One ilert event, ready to send.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(serialize_with = "expose_secret")]
    pub integration_key: Secret,
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<Comment>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_details: Option<CustomDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Where to post this event when it is not where its deliverer posts (an event that
    /// ilagent 0.9 queued for an MQTT or Kafka alert source); not part of the body.
    #[serde(skip)]
    pub path: Option<super::EventPath>,
    /// The event's idempotency id, if its route or its request gave it one; not part of
    /// the body. Boxed: most events have none, and an event may wait in a source's window
    /// with its message (MQTT's); 296 bytes fit jemalloc's 320-byte class, 352 took 384.
    #[serde(skip)]
    pub dedupe: Option<Box<crate::action::DedupeId>>,
}

impl Event {
    /// An event with only the required fields set.
    pub fn new(integration_key: Secret, event_type: EventType) -> Self {
        Event {
            integration_key,
            event_type,
            summary: None,
            details: None,
            alert_key: None,
            priority: None,
            severity: None,
            images: Vec::new(),
            links: Vec::new(),
            comments: Vec::new(),
            labels: BTreeMap::new(),
            services: Vec::new(),
            custom_details: None,
            routing_key: None,
            path: None,
            dedupe: None,
        }
    }
}

fn expose_secret<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_ilert_field_names_and_omits_empty_fields() {
        let mut event = Event::new(Secret::new("il1api123"), EventType::Alert);
        event.summary = Some("disk full".into());
        event.priority = Some(Priority::Low);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "integrationKey": "il1api123",
                "eventType": "ALERT",
                "summary": "disk full",
                "priority": "LOW"
            })
        );
    }

    #[test]
    fn event_type_and_priority_parse_in_any_case() {
        assert_eq!("resolve".parse::<EventType>(), Ok(EventType::Resolve));
        assert_eq!("Comment".parse::<EventType>(), Ok(EventType::Comment));
        assert!("CLOSE".parse::<EventType>().is_err());
        assert_eq!("high".parse::<Priority>(), Ok(Priority::High));
        assert!("MEDIUM".parse::<Priority>().is_err());
    }

    #[test]
    fn debug_output_does_not_leak_the_integration_key() {
        let event = Event::new(
            Secret::new("il1api-very-secret-key-0000"),
            EventType::Accept,
        );
        assert!(!format!("{event:?}").contains("very-secret"));
    }
}
