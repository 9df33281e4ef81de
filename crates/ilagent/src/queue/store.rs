//! Every SQL statement of the queue, as blocking calls on one connection.
//!
//! The per-key order lives here, in [`Store::fetch_heads`]: only the oldest row of each
//! order key is ever handed out, whether it is new, failing and waiting for its retry, or
//! waiting for a restart. A later row of the same key becomes eligible only when the one
//! before it has left the table (delivered or dead-lettered), so no retry, restart or
//! second worker can let it overtake.

use std::path::Path;

use rusqlite::{Connection, Row, params};

use super::QueueError;
use super::capacity::{Capacity, Limits};
use super::record::{NewRow, QueuedRow, Stats, StoredMeta, source_from_str};
use super::schema;
use crate::message::SourceKind;

pub struct Store {
    connection: Connection,
    /// Whether commits currently wait for the disk (`synchronous = FULL`).
    full_sync: bool,
    /// Whether new rows and dead letters fit (see [`super::capacity`]).
    capacity: Capacity,
}

const QUEUED_COLUMNS: &str = "id, source, topic, payload, metadata, attempts, next_attempt_at, last_error, created_at, order_key";

impl Store {
    /// Opens the file without a cap (`ilagent queue`).
    pub fn open(path: &Path) -> Result<Store, QueueError> {
        Store::open_with(path, Limits::UNLIMITED)
    }

    /// Opens the file; new data must fit `limits`.
    pub fn open_with(path: &Path, limits: Limits) -> Result<Store, QueueError> {
        let connection = schema::open(path)?;
        let capacity = Capacity::new(&connection, path, limits)?;
        Ok(Store {
            connection,
            full_sync: true,
            capacity,
        })
    }

    /// Writes that acknowledge something to the outside world (a row the broker or an HTTP
    /// client is told is safe, a dead letter whose message is then acknowledged) wait for
    /// the disk. Writes that only record progress (a delivered row deleted, a retry
    /// counted) do not: in WAL mode they survive a crash of the process, and a power cut
    /// can at worst undo the last of them, which means a duplicate delivery or an extra
    /// attempt, never a loss. One fsync per delivered message would cap throughput.
    fn sync(&mut self, full: bool) -> Result<(), QueueError> {
        if self.full_sync != full {
            self.connection
                .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })
                .map_err(sql("configure"))?;
            self.full_sync = full;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Appends the rows in one transaction, if they fit ([`QueueError::Full`] if not);
    /// returns their ids in the same order.
    pub fn insert<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a NewRow> + Clone,
    ) -> Result<Vec<i64>, QueueError> {
        self.sync(true)?;
        let incoming = rows.clone().into_iter().map(NewRow::stored_bytes).sum();
        self.capacity
            .write_new(&mut self.connection, incoming, |tx| insert_rows(tx, rows))
    }

    /// Up to `limit` rows that are due at `now_ms` and are the oldest of their order key,
    /// in id order, leaving out `exclude` (rows already being delivered). With `source`, only
    /// that source's rows: each source's worker hands out its own rows, while the head of a
    /// key is still the oldest row of the key from any source, so order holds across them.
    pub fn fetch_heads(
        &self,
        source: Option<SourceKind>,
        now_ms: i64,
        limit: usize,
        exclude: &[i64],
    ) -> Result<Vec<QueuedRow>, QueueError> {
        let exclude = serde_json::to_string(exclude).unwrap_or_else(|_| "[]".into());
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {QUEUED_COLUMNS} FROM queue AS q
                 WHERE q.next_attempt_at <= ?1
                   AND q.id NOT IN (SELECT value FROM json_each(?3))
                   AND (?4 IS NULL OR q.source = ?4)
                   AND (q.order_key IS NULL
                        OR q.id = (SELECT MIN(p.id) FROM queue AS p WHERE p.order_key = q.order_key))
                 ORDER BY q.id
                 LIMIT ?2"
            ))
            .map_err(sql("prepare fetch"))?;
        let rows = statement
            .query_map(
                params![
                    now_ms,
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    exclude,
                    source.map(SourceKind::as_str)
                ],
                queued_row,
            )
            .map_err(sql("fetch"))?;
        rows.collect::<Result<_, _>>().map_err(sql("fetch"))
    }

    /// The due head rows of the given keys only: after a row of a key settles, its
    /// successor is found through the index instead of a scan of the whole queue.
    pub fn fetch_heads_of(
        &self,
        source: Option<SourceKind>,
        now_ms: i64,
        keys: &[String],
        exclude: &[i64],
    ) -> Result<Vec<QueuedRow>, QueueError> {
        let keys = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        let exclude = serde_json::to_string(exclude).unwrap_or_else(|_| "[]".into());
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {QUEUED_COLUMNS} FROM queue AS q
                 WHERE q.id IN (SELECT (SELECT MIN(p.id) FROM queue AS p WHERE p.order_key = k.value)
                                FROM json_each(?2) AS k)
                   AND q.next_attempt_at <= ?1
                   AND q.id NOT IN (SELECT value FROM json_each(?3))
                   AND (?4 IS NULL OR q.source = ?4)
                 ORDER BY q.id"
            ))
            .map_err(sql("prepare fetch"))?;
        let rows = statement
            .query_map(
                params![now_ms, keys, exclude, source.map(SourceKind::as_str)],
                queued_row,
            )
            .map_err(sql("fetch"))?;
        rows.collect::<Result<_, _>>().map_err(sql("fetch"))
    }

    /// How many rows of `source` each order key has in the queue (rows without a key are
    /// not counted).
    pub fn rows_per_order_key(
        &self,
        source: SourceKind,
    ) -> Result<Vec<(String, usize)>, QueueError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT order_key, COUNT(*) FROM queue
                 WHERE source = ?1 AND order_key IS NOT NULL GROUP BY order_key",
            )
            .map_err(sql("prepare count"))?;
        let rows = statement
            .query_map([source.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .map_err(sql("count the rows per key"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("count the rows per key"))
    }

    /// When the earliest waiting retry (of `source`'s rows, or all) is due, if any.
    pub fn next_retry_at(
        &self,
        source: Option<SourceKind>,
        now_ms: i64,
    ) -> Result<Option<i64>, QueueError> {
        self.connection
            .query_row(
                "SELECT MIN(next_attempt_at) FROM queue
                 WHERE next_attempt_at > ?1 AND (?2 IS NULL OR source = ?2)",
                params![now_ms, source.map(SourceKind::as_str)],
                |row| row.get(0),
            )
            .map_err(sql("find the next retry"))
    }

    /// Removes a delivered (or skipped) row.
    pub fn delete(&mut self, id: i64) -> Result<(), QueueError> {
        self.draining(|connection| {
            connection
                .execute("DELETE FROM queue WHERE id = ?1", [id])
                .map_err(sql("delete"))?;
            Ok(())
        })
    }

    /// Removes delivered rows, in one transaction.
    pub fn delete_many(&mut self, ids: &[i64]) -> Result<(), QueueError> {
        self.draining(|connection| {
            let tx = connection.transaction().map_err(sql("begin delete"))?;
            {
                let mut statement = tx
                    .prepare_cached("DELETE FROM queue WHERE id = ?1")
                    .map_err(sql("prepare delete"))?;
                for id in ids {
                    statement.execute([id]).map_err(sql("delete"))?;
                }
            }
            tx.commit().map_err(sql("commit delete"))
        })
    }

    /// Records a failed attempt and when to try again.
    pub fn schedule_retry(
        &mut self,
        id: i64,
        attempts: u32,
        next_attempt_at_ms: i64,
        error: &str,
    ) -> Result<(), QueueError> {
        self.draining(|connection| {
            connection
                .execute(
                    "UPDATE queue SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1",
                    params![id, attempts, next_attempt_at_ms, error],
                )
                .map_err(sql("schedule a retry"))?;
            Ok(())
        })
    }

    /// Runs a write that settles queued rows (no new data, no wait for the disk): one that
    /// meets a full disk or file marks the queue full as a refused insert does, and one
    /// that succeeds while it is full looks whether there is room again.
    fn draining<T>(
        &mut self,
        write: impl FnOnce(&mut Connection) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        self.sync(false)?;
        let result = write(&mut self.connection);
        self.capacity.note(&self.connection, &result);
        result
    }

    /// Readiness: takes the write lock and lets it go (a file that cannot be written, or
    /// that another process keeps locked, fails here), then counts the rows.
    pub fn probe(&mut self) -> Result<Stats, QueueError> {
        self.connection
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(sql("take the write lock"))?;
        self.capacity.refresh(&self.connection);
        self.stats()
    }

    pub fn stats(&self) -> Result<Stats, QueueError> {
        let (queued, retrying, oldest) = self
            .connection
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(attempts > 0), 0), MIN(created_at) FROM queue",
                [],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .map_err(sql("count the queue"))?;
        let dead_letters: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |row| row.get(0))
            .map_err(sql("count the dead letters"))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Stats {
            queued: count(queued),
            retrying: count(retrying),
            dead_letters: count(dead_letters),
            oldest_queued_at_ms: oldest,
        })
    }

    /// Whether any row of `source` is queued.
    pub fn has_rows_of(&self, source: SourceKind) -> Result<bool, QueueError> {
        self.connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM queue WHERE source = ?1)",
                [source.as_str()],
                |row| row.get(0),
            )
            .map_err(sql("look for queued rows"))
    }

    /// The oldest `limit` queued rows.
    pub fn list_queued(&self, limit: u32) -> Result<Vec<QueuedRow>, QueueError> {
        let mut statement = self
            .connection
            .prepare(&format!(
                "SELECT {QUEUED_COLUMNS} FROM queue ORDER BY id LIMIT ?1"
            ))
            .map_err(sql("prepare list"))?;
        let rows = statement
            .query_map([limit], queued_row)
            .map_err(sql("list the queue"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("list the queue"))
    }
}

fn queued_row(row: &Row<'_>) -> rusqlite::Result<QueuedRow> {
    Ok(QueuedRow {
        id: row.get(0)?,
        source: source_from_str(&row.get::<_, String>(1)?),
        topic: row.get(2)?,
        payload: row.get(3)?,
        meta: StoredMeta::from_json(&row.get::<_, String>(4)?),
        attempts: row.get(5)?,
        next_attempt_at_ms: row.get(6)?,
        last_error: row.get(7)?,
        created_at_ms: row.get(8)?,
        order_key: row.get(9)?,
    })
}

/// Appends `rows` inside `tx`; their ids in the same order.
fn insert_rows<'a>(
    tx: &rusqlite::Transaction<'_>,
    rows: impl IntoIterator<Item = &'a NewRow>,
) -> Result<Vec<i64>, QueueError> {
    let mut statement = tx
        .prepare_cached(
            "INSERT INTO queue (source, topic, payload, metadata, order_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql("prepare insert"))?;
    let mut ids = Vec::new();
    for row in rows {
        statement
            .execute(params![
                row.source.as_str(),
                row.topic,
                row.payload,
                row.meta.to_json(),
                row.order_key,
                row.created_at_ms
            ])
            .map_err(sql("insert"))?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

fn sql(what: &'static str) -> impl Fn(rusqlite::Error) -> QueueError {
    move |error| QueueError::sqlite(what.to_string(), error)
}

mod accepted_ids;
mod dead_letters;
mod legacy;

pub use accepted_ids::{AcceptedId, Pruned};
pub use legacy::Imported;

#[cfg(test)]
mod tests;
