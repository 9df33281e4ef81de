//! The rows of the queue and dead-letter tables as Rust values, and how a queued row turns
//! back into a [`Message`] for the pipeline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::message::{Message, Metadata, SourceKind};

/// What the `metadata` column holds besides topic and payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMeta {
    /// MQTT v5 user properties, HTTP headers worth keeping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The producer's timestamp, unix ms, where the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    /// A path template (`/api/v1/events/mqtt/{key}`) for an event that must be posted
    /// elsewhere than its worker posts: events imported from ilagent 0.9's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_path: Option<String>,
}

impl StoredMeta {
    pub fn from_metadata(meta: &Metadata) -> Self {
        StoredMeta {
            headers: meta
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            timestamp_ms: meta.timestamp.map(unix_ms),
            event_path: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// A damaged column reads as empty metadata rather than losing the message.
    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// A message to append to the queue.
#[derive(Clone, Debug)]
pub struct NewRow {
    pub source: SourceKind,
    pub topic: String,
    pub payload: Vec<u8>,
    pub meta: StoredMeta,
    /// Rows with the same key are delivered in insertion order; `None` orders nothing.
    pub order_key: Option<String>,
    pub created_at_ms: i64,
}

impl NewRow {
    /// About what the row takes in the file (without SQLite's overhead), for
    /// [`super::capacity`] to check before it is written.
    pub fn stored_bytes(&self) -> u64 {
        let key = self.order_key.as_ref().map_or(0, String::len);
        // The key is stored twice: in the row and in its index.
        (self.payload.len() + self.topic.len() + 2 * key) as u64
    }
}

/// A row of the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedRow {
    pub id: i64,
    pub source: SourceKind,
    pub topic: String,
    pub payload: Vec<u8>,
    pub meta: StoredMeta,
    /// Delivery attempts that failed transiently so far.
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub order_key: Option<String>,
}

impl QueuedRow {
    /// The message as the pipeline sees it: located by its queue id.
    pub fn to_message(&self) -> Message {
        let mut meta = Metadata::new(self.source, self.topic.clone());
        meta.queue_id = Some(self.id);
        meta.received_at = from_unix_ms(self.created_at_ms);
        meta.timestamp = self.meta.timestamp_ms.map(from_unix_ms);
        meta.headers = self
            .meta
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        Message {
            payload: self.payload.clone(),
            meta,
        }
    }
}

/// A message set aside for good, to record.
#[derive(Clone, Debug)]
pub struct NewDeadLetter {
    pub queue_id: Option<i64>,
    pub source: SourceKind,
    pub topic: String,
    pub payload: Vec<u8>,
    pub meta: StoredMeta,
    pub order_key: Option<String>,
    /// `invalid`, `permanent` or `exhausted`.
    pub kind: String,
    pub reason: String,
    pub attempts: u32,
    pub created_at_ms: i64,
}

/// A row of the dead-letter table.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterRow {
    pub id: i64,
    pub queue_id: Option<i64>,
    pub source: SourceKind,
    pub topic: String,
    pub payload: Vec<u8>,
    pub kind: String,
    pub reason: String,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub failed_at_ms: i64,
}

/// How full the file is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub queued: u64,
    /// Queued rows that failed at least once and wait for their next attempt.
    pub retrying: u64,
    pub dead_letters: u64,
    pub oldest_queued_at_ms: Option<i64>,
}

/// Which dead letters a command acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
}

pub fn source_from_str(text: &str) -> SourceKind {
    match text {
        "kafka" => SourceKind::Kafka,
        "mqtt" => SourceKind::Mqtt,
        "cli" => SourceKind::Cli,
        _ => SourceKind::Http,
    }
}

pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
