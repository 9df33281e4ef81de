//! The dead-letter table's statements: rows moved there from the queue, letters of live
//! messages, and the operator's list, requeue and purge.

use rusqlite::{Connection, OptionalExtension, params};

use super::{QueueError, Store, sql};
use crate::queue::record::{DeadLetterRow, NewDeadLetter, Selection, now_ms, source_from_str};

impl Store {
    /// Moves a queued row to the dead letters, in one transaction. Not held to the mark
    /// for new data: a move frees what it takes, and it may use the reserve kept for
    /// draining (see [`crate::queue::capacity`]), so a full queue can still set rows aside.
    pub fn dead_letter_queued(
        &mut self,
        id: i64,
        kind: &str,
        reason: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        self.draining(|connection| {
            let tx = connection
                .transaction()
                .map_err(sql("begin dead letter"))?;
            tx.execute(
                "INSERT INTO dead_letters
                     (queue_id, source, topic, payload, metadata, order_key, kind, reason, attempts, created_at, failed_at)
                 SELECT id, source, topic, payload, metadata, order_key, ?2, ?3, ?4, created_at, ?5
                 FROM queue WHERE id = ?1",
                params![id, kind, reason, attempts, now_ms()],
            )
            .map_err(sql("write the dead letter"))?;
            tx.execute("DELETE FROM queue WHERE id = ?1", [id])
                .map_err(sql("delete the dead-lettered row"))?;
            tx.commit().map_err(sql("commit dead letter"))
        })
    }

    /// Records a message that never was in the queue (a non-buffered source's), if it
    /// fits ([`QueueError::Full`] if not).
    pub fn add_dead_letter(&mut self, letter: &NewDeadLetter) -> Result<i64, QueueError> {
        self.sync(true)?;
        let incoming = (letter.payload.len() + letter.reason.len() + letter.topic.len()) as u64;
        self.capacity
            .write_new(&mut self.connection, incoming, |tx| {
                tx.execute(
                    "INSERT INTO dead_letters
                         (queue_id, source, topic, payload, metadata, order_key, kind, reason, attempts, created_at, failed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        letter.queue_id,
                        letter.source.as_str(),
                        letter.topic,
                        letter.payload,
                        letter.meta.to_json(),
                        letter.order_key,
                        letter.kind,
                        letter.reason,
                        letter.attempts,
                        letter.created_at_ms,
                        now_ms()
                    ],
                )
                .map_err(sql("write the dead letter"))?;
                Ok(tx.last_insert_rowid())
            })
    }

    /// The oldest `limit` dead letters.
    pub fn list_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRow>, QueueError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, queue_id, source, topic, payload, kind, reason, attempts, created_at, failed_at
                 FROM dead_letters ORDER BY id LIMIT ?1",
            )
            .map_err(sql("prepare list"))?;
        let rows = statement
            .query_map([limit], |row| {
                Ok(DeadLetterRow {
                    id: row.get(0)?,
                    queue_id: row.get(1)?,
                    source: source_from_str(&row.get::<_, String>(2)?),
                    topic: row.get(3)?,
                    payload: row.get(4)?,
                    kind: row.get(5)?,
                    reason: row.get(6)?,
                    attempts: row.get(7)?,
                    created_at_ms: row.get(8)?,
                    failed_at_ms: row.get(9)?,
                })
            })
            .map_err(sql("list the dead letters"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("list the dead letters"))
    }

    /// Moves dead letters back into the queue with their attempts reset. A letter goes
    /// back under its old queue id when it had one, so it is again ahead of the later
    /// messages of its key; others are appended.
    pub fn requeue(&mut self, selection: &Selection) -> Result<usize, QueueError> {
        let tx = self
            .connection
            .transaction()
            .map_err(sql("begin requeue"))?;
        let ids = selected_ids(&tx, selection)?;
        for id in &ids {
            let queue_id: Option<i64> = tx
                .query_row(
                    "SELECT queue_id FROM dead_letters WHERE id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .map_err(sql("read the dead letter"))?;
            let free = match queue_id {
                Some(queue_id) => tx
                    .query_row("SELECT 1 FROM queue WHERE id = ?1", [queue_id], |_| Ok(()))
                    .optional()
                    .map_err(sql("check the queue id"))?
                    .is_none(),
                None => false,
            };
            tx.execute(
                "INSERT INTO queue (id, source, topic, payload, metadata, order_key, created_at)
                 SELECT CASE WHEN ?2 THEN queue_id END, source, topic, payload, metadata, order_key, created_at
                 FROM dead_letters WHERE id = ?1",
                params![id, free],
            )
            .map_err(sql("requeue"))?;
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                .map_err(sql("requeue"))?;
        }
        tx.commit().map_err(sql("commit requeue"))?;
        Ok(ids.len())
    }

    /// Deletes dead letters for good.
    pub fn purge(&mut self, selection: &Selection) -> Result<usize, QueueError> {
        let tx = self.connection.transaction().map_err(sql("begin purge"))?;
        let ids = selected_ids(&tx, selection)?;
        for id in &ids {
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                .map_err(sql("purge"))?;
        }
        tx.commit().map_err(sql("commit purge"))?;
        Ok(ids.len())
    }
}

/// The ids of the selected dead letters that exist.
fn selected_ids(tx: &Connection, selection: &Selection) -> Result<Vec<i64>, QueueError> {
    let all: Vec<i64> = {
        let mut statement = tx
            .prepare("SELECT id FROM dead_letters ORDER BY id")
            .map_err(sql("list the dead letters"))?;
        let ids = statement
            .query_map([], |row| row.get(0))
            .map_err(sql("list the dead letters"))?;
        ids.collect::<Result<_, _>>()
            .map_err(sql("list the dead letters"))?
    };
    Ok(match selection {
        Selection::All => all,
        Selection::Ids(wanted) => all.into_iter().filter(|id| wanted.contains(id)).collect(),
    })
}
