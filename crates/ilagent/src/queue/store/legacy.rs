//! Upgrade in place from ilagent 0.9: rows that 0.9 left pending in its own tables of the
//! `-f` file are moved into the queue, so that switching binaries during an ilert outage
//! loses nothing.
//!
//! The tables 0.9 writes (its migrations renamed two columns, both names are read):
//!
//! ```sql
//! CREATE TABLE event_items (            -- events waiting for delivery
//!   id TEXT PRIMARY KEY,
//!   integration_key TEXT NOT NULL,      -- api_key before 0.9's migration v4
//!   event_type TEXT NOT NULL,
//!   alert_key TEXT NULL,                -- incident_key before migration v2
//!   summary TEXT NOT NULL,
//!   created_at TEXT NOT NULL,
//!   priority TEXT NULL,
//!   images TEXT NULL, links TEXT NULL, custom_details TEXT NULL,   -- JSON text
//!   details TEXT NULL,
//!   inserted_at DATETIME,               -- delivery order
//!   event_api_path TEXT NULL            -- e.g. /v1/events/mqtt/{key}; NULL: /events
//! );
//! CREATE TABLE mqtt_queue (             -- raw MQTT messages of --mqtt_buffer
//!   id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload TEXT NOT NULL, inserted_at DATETIME
//! );
//! ```
//!
//! Each event becomes a row of the HTTP proxy's kind (an ilert event as it is, posted to
//! the path 0.9 would have used); each MQTT message a row of the MQTT buffer's kind (the raw
//! message, mapped at delivery like any other). Rows keep their order (`inserted_at`) and
//! start with no attempts counted (0.9 kept no count). All of it is one transaction: a crash
//! half-way leaves 0.9's tables as they were, and the next start tries again.

use rusqlite::OptionalExtension;
use serde_json::{Map, Value};

use super::{Store, insert_rows, sql};
use crate::message::SourceKind;
use crate::queue::QueueError;
use crate::queue::record::{NewRow, StoredMeta, now_ms};

/// How many rows were moved, per 0.9 table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub events: usize,
    pub mqtt_messages: usize,
}

impl Imported {
    pub fn total(&self) -> usize {
        self.events + self.mqtt_messages
    }
}

/// `inserted_at` (SQLite's text datetime, UTC) as unix ms; now when it cannot be read.
const INSERTED_AT_MS: &str =
    "COALESCE(CAST((julianday(inserted_at) - 2440587.5) * 86400000.0 AS INTEGER), ?1)";

impl Store {
    /// Moves the rows pending in 0.9's tables into the queue (see the module docs).
    /// `order_key` gives each new row its order key, as the source's route-and-map would.
    pub fn import_ilagent_09(
        &mut self,
        order_key: &dyn Fn(&NewRow) -> Option<String>,
    ) -> Result<Imported, QueueError> {
        let tables = self.legacy_tables()?;
        if tables.is_empty() {
            return Ok(Imported::default());
        }
        let mut rows = Vec::new();
        let mut imported = Imported::default();
        if tables.iter().any(|t| t == "event_items") {
            let events = self.legacy_events()?;
            imported.events = events.len();
            rows.extend(events);
        }
        if tables.iter().any(|t| t == "mqtt_queue") {
            let messages = self.legacy_mqtt_messages()?;
            imported.mqtt_messages = messages.len();
            rows.extend(messages);
        }
        if imported.total() == 0 {
            return Ok(imported);
        }
        for row in &mut rows {
            row.order_key = order_key(row);
        }
        self.sync(true)?;
        let tx = self
            .connection
            .transaction()
            .map_err(sql("begin the 0.9 import"))?;
        {
            insert_rows(&tx, &rows)?;
            for table in &tables {
                tx.execute(&format!("DELETE FROM {table}"), [])
                    .map_err(sql("empty a 0.9 table"))?;
            }
        }
        tx.commit().map_err(sql("commit the 0.9 import"))?;
        Ok(imported)
    }

    /// Which of 0.9's tables the file has.
    fn legacy_tables(&self) -> Result<Vec<String>, QueueError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name IN ('event_items', 'mqtt_queue') ORDER BY name",
            )
            .map_err(sql("look for ilagent 0.9's tables"))?;
        let names = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql("look for ilagent 0.9's tables"))?;
        names
            .collect::<Result<_, _>>()
            .map_err(sql("look for ilagent 0.9's tables"))
    }

    fn has_column(&self, table: &str, column: &str) -> Result<bool, QueueError> {
        self.connection
            .query_row(
                &format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(sql("read ilagent 0.9's columns"))
    }

    /// The events of `event_items`, oldest first, as ilert event bodies.
    fn legacy_events(&self) -> Result<Vec<NewRow>, QueueError> {
        let key_column = if self.has_column("event_items", "integration_key")? {
            "integration_key"
        } else {
            "api_key"
        };
        let alert_key_column = if self.has_column("event_items", "alert_key")? {
            "alert_key"
        } else {
            "incident_key"
        };
        let path_column = if self.has_column("event_items", "event_api_path")? {
            "event_api_path"
        } else {
            "NULL"
        };
        let query = format!(
            "SELECT {key_column}, event_type, {alert_key_column}, summary, priority, images,
                    links, custom_details, details, {path_column}, {INSERTED_AT_MS}
             FROM event_items ORDER BY inserted_at, rowid"
        );
        let mut statement = self
            .connection
            .prepare(&query)
            .map_err(sql("read ilagent 0.9's event_items"))?;
        let rows = statement
            .query_map([now_ms()], |row| {
                let text = |i: usize| row.get::<_, Option<String>>(i);
                let mut body = Map::new();
                body.insert(
                    "integrationKey".into(),
                    Value::from(text(0)?.unwrap_or_default()),
                );
                body.insert(
                    "eventType".into(),
                    Value::from(text(1)?.unwrap_or_default()),
                );
                for (i, name) in [
                    (2, "alertKey"),
                    (3, "summary"),
                    (4, "priority"),
                    (8, "details"),
                ] {
                    if let Some(value) = text(i)? {
                        body.insert(name.into(), Value::from(value));
                    }
                }
                for (i, name) in [(5, "images"), (6, "links"), (7, "customDetails")] {
                    if let Some(json) = text(i)? {
                        // Kept as text if it is not JSON: mapping then sets the event aside
                        // with the reason, instead of it being lost here.
                        let value =
                            serde_json::from_str::<Value>(&json).unwrap_or(Value::from(json));
                        if !value.is_null() {
                            body.insert(name.into(), value);
                        }
                    }
                }
                let path = text(9)?.and_then(|p| ilert_path(&p));
                Ok(NewRow {
                    source: SourceKind::Http,
                    topic: "/api/events".into(),
                    payload: Value::Object(body).to_string().into_bytes(),
                    meta: StoredMeta {
                        event_path: path,
                        ..StoredMeta::default()
                    },
                    order_key: None,
                    created_at_ms: row.get(10)?,
                })
            })
            .map_err(sql("read ilagent 0.9's event_items"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("read ilagent 0.9's event_items"))
    }

    /// The raw messages of `mqtt_queue`, oldest first.
    fn legacy_mqtt_messages(&self) -> Result<Vec<NewRow>, QueueError> {
        let query = format!(
            "SELECT topic, payload, {INSERTED_AT_MS} FROM mqtt_queue ORDER BY inserted_at, rowid"
        );
        let mut statement = self
            .connection
            .prepare(&query)
            .map_err(sql("read ilagent 0.9's mqtt_queue"))?;
        let rows = statement
            .query_map([now_ms()], |row| {
                // 0.9 stored the payload as text; a BLOB is taken as it is.
                let payload = match row.get_ref(1)? {
                    rusqlite::types::ValueRef::Blob(bytes) => bytes.to_vec(),
                    rusqlite::types::ValueRef::Text(bytes) => bytes.to_vec(),
                    other => other
                        .as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .unwrap_or_default(),
                };
                Ok(NewRow {
                    source: SourceKind::Mqtt,
                    topic: row.get(0)?,
                    payload,
                    meta: StoredMeta::default(),
                    order_key: None,
                    created_at_ms: row.get(2)?,
                })
            })
            .map_err(sql("read ilagent 0.9's mqtt_queue"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("read ilagent 0.9's mqtt_queue"))
    }
}

/// 0.9's `event_api_path` (`/v1/events/mqtt/{key}`, relative to `/api`) as a path template
/// of ours; `None` for the generic `/events`, which is where the proxy's rows go anyway.
fn ilert_path(path: &str) -> Option<String> {
    let path = path.trim();
    if path.is_empty() || path == "/events" || path == "/api/events" {
        return None;
    }
    let path = if path.starts_with("/api/") {
        path.to_string()
    } else {
        format!("/api{path}")
    };
    // A path with the key already in it is turned back into a template: the integration
    // key of the body goes in its place, as 0.9 put it there.
    if path.contains("{key}") {
        return Some(path);
    }
    let (prefix, _) = path.rsplit_once('/')?;
    Some(format!("{prefix}/{{key}}"))
}

#[cfg(test)]
mod tests {
    use super::ilert_path;
    use crate::message::SourceKind;
    use crate::queue::store::Store;

    /// A file as ilagent 0.9 leaves it: its schema (after its column renames), two events
    /// and two MQTT messages pending.
    fn file_of_0_9(path: &std::path::Path) {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE ilagent (key TEXT PRIMARY KEY, val TEXT NOT NULL, created_at TEXT NOT NULL);
             CREATE TABLE event_items (id TEXT PRIMARY KEY, integration_key TEXT NOT NULL,
               event_type TEXT NOT NULL, alert_key TEXT NULL, summary TEXT NOT NULL,
               created_at TEXT NOT NULL, priority TEXT NULL, images TEXT NULL, links TEXT NULL,
               custom_details TEXT NULL, details TEXT NULL,
               inserted_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')),
               event_api_path TEXT NULL);
             CREATE TABLE mqtt_queue (id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload TEXT NOT NULL,
               inserted_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
             INSERT INTO event_items VALUES ('b', 'il1api-k', 'RESOLVE', 'disk', 'ok', '', NULL,
               NULL, NULL, NULL, NULL, '2026-11-30 10:00:02.000', NULL);
             INSERT INTO event_items VALUES ('a', 'il1api-k', 'ALERT', 'disk', 'full', '', 'HIGH',
               NULL, '[{\"href\":\"https://x\",\"text\":\"x\"}]', '{\"n\":1}', NULL,
               '2026-11-30 10:00:01.000', '/v1/events/mqtt/{key}');
             INSERT INTO mqtt_queue VALUES ('m2', 'ilert/events', '{\"seq\":2}', '2026-11-30 10:00:04.000');
             INSERT INTO mqtt_queue VALUES ('m1', 'ilert/events', '{\"seq\":1}', '2026-11-30 10:00:03.000');",
        )
        .unwrap();
    }

    #[test]
    fn pending_rows_of_0_9_move_into_the_queue_in_their_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ilagent.db3");
        file_of_0_9(&path);
        let mut store = Store::open(&path).unwrap();
        let imported = store.import_ilagent_09(&|_| Some("k".into())).unwrap();
        assert_eq!((imported.events, imported.mqtt_messages), (2, 2));
        let rows = store.fetch_heads(None, i64::MAX, 10, &[]).unwrap();
        assert_eq!(
            rows.len(),
            1,
            "one order key: only the oldest row is handed out"
        );
        let first: serde_json::Value = serde_json::from_slice(&rows[0].payload).unwrap();
        assert_eq!(first["eventType"], "ALERT");
        assert_eq!(first["priority"], "HIGH");
        assert_eq!(first["links"][0]["href"], "https://x");
        assert_eq!(first["customDetails"]["n"], 1);
        assert_eq!(rows[0].source, SourceKind::Http);
        assert_eq!(
            rows[0].meta.event_path.as_deref(),
            Some("/api/v1/events/mqtt/{key}")
        );
        let all = store.fetch_heads(None, i64::MAX, 10, &[]).unwrap();
        assert_eq!(all.len(), 1);
        // A second start finds 0.9's tables empty and imports nothing again.
        assert_eq!(store.import_ilagent_09(&|_| None).unwrap().total(), 0);
        let c = rusqlite::Connection::open(&path).unwrap();
        let queued: i64 = c
            .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
            .unwrap();
        assert_eq!(queued, 4);
        let order: Vec<String> = c
            .prepare("SELECT CAST(payload AS TEXT) FROM queue WHERE source = 'mqtt' ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(order, vec![r#"{"seq":1}"#, r#"{"seq":2}"#]);
    }

    #[test]
    fn the_paths_of_0_9_become_templates_of_ours() {
        assert_eq!(ilert_path("/events"), None);
        assert_eq!(
            ilert_path("/v1/events/mqtt/{key}").as_deref(),
            Some("/api/v1/events/mqtt/{key}")
        );
        assert_eq!(
            ilert_path("/v1/events/kafka/il1abc").as_deref(),
            Some("/api/v1/events/kafka/{key}")
        );
    }
}
