//! The accepted-ids table's statements: which idempotency ids ilert has accepted, until
//! when they count, and the pruning that keeps the table within its window and its cap.
//!
//! Writes here only record progress (an id ilert already took), so they do not wait for
//! the disk: in WAL mode they survive a crash of the process, and a power cut can at worst
//! forget the last ids, which means a duplicate delivery, never a loss.

use rusqlite::{OptionalExtension, params};

use super::{QueueError, Store, sql};

/// An id ilert accepted, to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedId {
    /// [`crate::action::DedupeId::key`].
    pub key: [u8; 16],
    pub accepted_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What one pruning removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ids whose window had passed.
    pub expired: u64,
    /// Ids still inside their window, dropped (those nearest the end of their window
    /// first) to keep the cap.
    pub evicted: u64,
    /// Ids kept.
    pub kept: u64,
}

/// Most rows one pruning statement deletes, so that other work does not wait long behind it.
const PRUNE_BATCH: i64 = 10_000;

impl Store {
    /// When ilert accepted the id with `key`, if that still counts at `now_ms`.
    pub fn accepted_at(&self, key: &[u8; 16], now_ms: i64) -> Result<Option<i64>, QueueError> {
        // Prepared once per connection: this runs for every event with an id.
        self.connection
            .prepare_cached(
                "SELECT accepted_at FROM accepted_ids WHERE key = ?1 AND expires_at > ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![&key[..], now_ms], |row| row.get(0))
                    .optional()
            })
            .map_err(sql("read the accepted ids"))
    }

    /// Records every id in one transaction (ids accepted at about the same time share a
    /// commit, as queue rows do).
    pub fn remember_all(&mut self, ids: &[AcceptedId]) -> Result<(), QueueError> {
        self.draining(|connection| {
            let tx = connection
                .transaction()
                .map_err(sql("begin recording accepted ids"))?;
            {
                let mut statement = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO accepted_ids (key, accepted_at, expires_at)
                         VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sql("record the accepted id"))?;
                for id in ids {
                    statement
                        .execute(params![&id.key[..], id.accepted_at_ms, id.expires_at_ms])
                        .map_err(sql("record the accepted id"))?;
                }
            }
            tx.commit().map_err(sql("commit the accepted ids"))
        })
    }

    /// Deletes the ids that no longer count at `now_ms`, then, beyond `max_ids`, those
    /// nearest the end of their window.
    pub fn prune_accepted(&mut self, now_ms: i64, max_ids: u64) -> Result<Pruned, QueueError> {
        let mut pruned = Pruned::default();
        self.draining(|connection| {
            loop {
                let deleted = connection
                    .execute(
                        "DELETE FROM accepted_ids WHERE key IN
                         (SELECT key FROM accepted_ids WHERE expires_at <= ?1 LIMIT ?2)",
                        params![now_ms, PRUNE_BATCH],
                    )
                    .map_err(sql("prune the accepted ids"))?;
                pruned.expired += deleted as u64;
                if (deleted as i64) < PRUNE_BATCH {
                    break;
                }
            }
            let count: i64 = connection
                .query_row("SELECT COUNT(*) FROM accepted_ids", [], |row| row.get(0))
                .map_err(sql("count the accepted ids"))?;
            let count = u64::try_from(count).unwrap_or(0);
            let excess = i64::try_from(count.saturating_sub(max_ids)).unwrap_or(i64::MAX);
            if excess > 0 {
                pruned.evicted = connection
                    .execute(
                        "DELETE FROM accepted_ids WHERE key IN
                         (SELECT key FROM accepted_ids ORDER BY expires_at LIMIT ?1)",
                        [excess],
                    )
                    .map_err(sql("prune the accepted ids"))?
                    as u64;
            }
            pruned.kept = count.saturating_sub(pruned.evicted);
            Ok(())
        })?;
        Ok(pruned)
    }

    /// How many ids are kept.
    pub fn accepted_count(&self) -> Result<u64, QueueError> {
        let count: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM accepted_ids", [], |row| row.get(0))
            .map_err(sql("count the accepted ids"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
