//! What every source hands to the pipeline: the raw payload and where it came from.
//!
//! A source knows how to receive and how to settle; everything between (route, map,
//! deliver) works on this one shape. The metadata is also what log lines and
//! dead-letter records use to name a message's location.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Which kind of source a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Kafka,
    Mqtt,
    Http,
    /// The one-shot `event` and `heartbeat` commands.
    Cli,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kafka => "kafka",
            SourceKind::Mqtt => "mqtt",
            SourceKind::Http => "http",
            SourceKind::Cli => "cli",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message came from, as far as its source knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    pub source: SourceKind,
    /// Kafka or MQTT topic; for HTTP the request path. Shared: a Kafka source gives every
    /// message of a topic the same one, instead of a copy per message in its window.
    pub topic: Arc<str>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// The Kafka message key, if it has one and it is UTF-8.
    pub key: Option<String>,
    /// Row id in the SQLite queue, for queued messages.
    pub queue_id: Option<i64>,
    /// Kafka record headers or MQTT v5 user properties, as they arrived.
    pub headers: Vec<(String, Vec<u8>)>,
    /// When the agent received the message.
    pub received_at: SystemTime,
    /// When the producer (or broker) stamped the message, where the source has one.
    pub timestamp: Option<SystemTime>,
}

impl Metadata {
    /// Metadata for a message that has nothing but a topic.
    pub fn new(source: SourceKind, topic: impl Into<Arc<str>>) -> Self {
        Metadata {
            source,
            topic: topic.into(),
            partition: None,
            offset: None,
            key: None,
            queue_id: None,
            headers: Vec::new(),
            received_at: SystemTime::now(),
            timestamp: None,
        }
    }
}

/// The longest topic a location shows (MQTT allows 65,535 bytes).
const MAX_TOPIC_CHARS: usize = 256;

/// `kafka events[2]@1234`, `mqtt ilert/events`, `http /api/events#17`: the location
/// every log line about a message carries.
impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An MQTT topic comes from the publisher: escaped, so it cannot forge a log line.
        let topic = crate::printable::printable(&self.topic, MAX_TOPIC_CHARS);
        write!(f, "{} {topic}", self.source)?;
        if let Some(partition) = self.partition {
            write!(f, "[{partition}]")?;
        }
        if let Some(offset) = self.offset {
            write!(f, "@{offset}")?;
        }
        if let Some(id) = self.queue_id {
            write!(f, "#{id}")?;
        }
        Ok(())
    }
}

/// A received message: the payload exactly as it arrived, and its metadata.
#[derive(Clone, Debug)]
pub struct Message {
    pub payload: Vec<u8>,
    pub meta: Metadata,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_topic_partition_offset_and_queue_id() {
        let mut meta = Metadata::new(SourceKind::Kafka, "events");
        meta.partition = Some(2);
        meta.offset = Some(1234);
        assert_eq!(meta.to_string(), "kafka events[2]@1234");

        let mut queued = Metadata::new(SourceKind::Http, "/api/events");
        queued.queue_id = Some(17);
        assert_eq!(queued.to_string(), "http /api/events#17");
        assert_eq!(
            Metadata::new(SourceKind::Mqtt, "a/b").to_string(),
            "mqtt a/b"
        );
    }
}
