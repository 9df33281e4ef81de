//! The SQLite file's layout and how a connection to it is set up.
//!
//! One file (`-f`, default `./ilagent.db3`) holds the queue of messages waiting for
//! delivery, the dead letters and the idempotency ids ilert accepted. WAL mode lets `ilagent queue` read and edit it while the
//! daemon writes; `synchronous = FULL` makes a committed row survive a power cut, not only
//! a crash, because "acknowledged" and "202" both promise that the message is on disk.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::QueueError;

/// The version this code writes; older files are migrated on open.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,  -- mqtt, http
    topic           TEXT    NOT NULL,  -- MQTT topic or HTTP path
    payload         BLOB    NOT NULL,  -- exactly as received
    metadata        TEXT    NOT NULL,  -- JSON: headers, producer timestamp
    order_key       TEXT,              -- rows with one key are delivered in id order; NULL: no order
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,  -- unix ms
    last_error      TEXT,
    created_at      INTEGER NOT NULL   -- unix ms
);
CREATE INDEX IF NOT EXISTS queue_by_order_key ON queue (order_key, id);
CREATE INDEX IF NOT EXISTS queue_by_next_attempt ON queue (next_attempt_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id   INTEGER,                -- the row it was in the queue, if it was queued
    source     TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    metadata   TEXT    NOT NULL,
    order_key  TEXT,
    kind       TEXT    NOT NULL,       -- invalid, permanent, exhausted
    reason     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,       -- when the message was received, unix ms
    failed_at  INTEGER NOT NULL        -- when it was set aside, unix ms
);
";

/// Tables added since version 1, created on every open. They do not raise the version: an
/// older ilagent ignores tables it does not know, so a downgrade still opens the file.
const ADDED_TABLES: &str = "
CREATE TABLE IF NOT EXISTS accepted_ids (
    key         BLOB    PRIMARY KEY,  -- 16 bytes of SHA-256 of (route or proxy and key, id)
    accepted_at INTEGER NOT NULL,     -- when ilert accepted it, unix ms
    expires_at  INTEGER NOT NULL      -- when it stops suppressing duplicates, unix ms
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accepted_ids_by_expiry ON accepted_ids (expires_at);
";

/// SQLite's `cache_size` for every connection: negative means KiB.
const PAGE_CACHE_KIB: i64 = -512;

/// Opens (creating if needed) the file and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, QueueError> {
    let context = |what: &str| format!("{what} {}", path.display());
    let connection = Connection::open(path).map_err(|e| QueueError::sqlite(context("open"), e))?;
    // Another process (the daemon, `ilagent queue`) may hold the write lock for a moment.
    connection
        .busy_timeout(Duration::from_secs(10))
        .map_err(|e| QueueError::sqlite(context("configure"), e))?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| QueueError::sqlite(context("switch to WAL mode"), e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::Other(format!(
            "{} cannot use WAL mode (it is in {mode} mode): put it on a local file system",
            path.display()
        )));
    }
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(|e| QueueError::sqlite(context("configure"), e))?;
    // At most 512 KiB of pages kept in memory per connection (SQLite's default is 2 MB),
    // as the operating system caches the file anyway. scripts/bench, two runs each:
    // `kafka-0ms-dedupe` (every event's id looked up and recorded) 33.6-33.9 -> 32.0-32.3
    // MB, the MQTT rows 1.1 to 2 MB less, at the same rates.
    connection
        .pragma_update(None, "cache_size", PAGE_CACHE_KIB)
        .map_err(|e| QueueError::sqlite(context("configure"), e))?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| QueueError::sqlite(context("read the schema version of"), e))?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::Other(format!(
            "{} was written by a newer ilagent (schema {version}, this one knows {SCHEMA_VERSION}): use that version",
            path.display()
        )));
    }
    if version < SCHEMA_VERSION {
        connection
            .execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| QueueError::sqlite(context("create the tables in"), e))?;
    }
    connection
        .execute_batch(ADDED_TABLES)
        .map_err(|e| QueueError::sqlite(context("create the tables in"), e))?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    /// The memory a connection may keep for pages is bounded, whatever the file's size.
    #[test]
    fn a_connection_keeps_at_most_512_kib_of_pages() {
        let dir = tempfile::tempdir().unwrap();
        let connection = super::open(&dir.path().join("q.db3")).unwrap();
        let cache: i64 = connection
            .query_row("PRAGMA cache_size", [], |row| row.get(0))
            .unwrap();
        assert_eq!(cache, -512);
    }
}
