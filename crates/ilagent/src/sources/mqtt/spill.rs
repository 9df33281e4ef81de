//! Spilling to SQLite (direct mode), so that a slow or rate-limited key stalls neither the
//! other keys nor the broker.
//!
//! Acknowledgements go out in arrival order ([`super::ledger`]), so one message waiting for
//! ilert would hold back the acknowledgements of every message after it, and the broker,
//! whose in-flight window is full of them, would stop sending. So a message that is not
//! settled quickly is made durable in the queue table of the `-f` file (the one
//! `--mqtt_buffer` uses) and then counts as done for the acknowledgement order: when
//! `--mqtt_max_unacked` messages are unacknowledged, when the oldest is older than
//! `--mqtt_spill_after`, or when the dispatcher's window has no room, every unacknowledged
//! message that is only live is written, in arrival order (in transactions of at most 1 MiB,
//! each of which must fit in the queue as a whole). A message
//! that still finds no room is written for the worker instead; before that the intake may
//! wait for a slot, at most `--mqtt_spill_after` in all per spell of a full window (see
//! `intake::FullWindow`): waiting keeps a flood live, since its deliveries free slots all
//! the time, but the broker drops what it cannot hold while the intake waits.
//!
//! A spilled message's live delivery keeps running; its row is *held*: it is in the queue
//! worker's exclusion set, and since the worker only hands out the oldest row of an order
//! key, a held row also holds back its key's later rows. When the live delivery settles,
//! the row is deleted (delivered, skipped, coalesced), moved to the dead letters
//! (rejected), or released to the worker (interrupted).
//!
//! Rows not held (written while the window was full, released, or left from an earlier
//! run) belong to the worker; [`QueueKeys`] counts them per order key, and a new message of
//! such a key goes to the queue behind them instead of overtaking them live.
//!
//! Without spill pressure nothing touches the disk.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ledger::{Ledger, RowState, Tracked};
use crate::action::Outcome;
use crate::message::{Metadata, SourceKind};
use crate::observe::events;
use crate::pipeline::persist::until_written;
use crate::queue::settle::{Change, apply};
use crate::queue::worker::Wakeup;
use crate::queue::{NewRow, Queue, QueueError};

/// Rows per order key that the queue worker owns (not held).
#[derive(Default)]
pub(crate) struct QueueKeys(Mutex<HashMap<String, usize>>);

impl QueueKeys {
    pub(crate) fn add(&self, key: &str, rows: usize) {
        *lock(&self.0).entry(key.to_string()).or_default() += rows;
    }

    pub(crate) fn remove_one(&self, key: &str) {
        let mut keys = lock(&self.0);
        if let Some(count) = keys.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                keys.remove(key);
            }
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        lock(&self.0).contains_key(key)
    }
}

/// What spilling needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Spill {
    queue: Queue,
    /// The queue worker's exclusion set: held rows are in it.
    held: Arc<Mutex<HashSet<i64>>>,
    wake: Arc<Wakeup>,
    pub keys: Arc<QueueKeys>,
    /// Stops retrying the writes that settle a held row (end of the shutdown drain).
    abort: CancellationToken,
    /// Held rows whose live delivery succeeded (with their order keys), for
    /// [`delete_delivered`].
    deletes: mpsc::UnboundedSender<HeldRow>,
}

/// A held row's id and order key.
type HeldRow = (i64, Option<String>);

/// Most rows one delete transaction takes.
const DELETE_BATCH: usize = 512;

/// Deletes the rows of delivered held messages, many per transaction: one commit per
/// delivered message would make the spill writes (which the acknowledgements wait for)
/// queue up behind them on the queue thread. A row leaves the held set only once deleted.
async fn delete_delivered(
    mut delivered: mpsc::UnboundedReceiver<HeldRow>,
    queue: Queue,
    held: Arc<Mutex<HashSet<i64>>>,
    wake: Arc<Wakeup>,
    abort: CancellationToken,
) {
    let mut batch = Vec::with_capacity(DELETE_BATCH);
    while delivered.recv_many(&mut batch, DELETE_BATCH).await > 0 {
        let rows: Arc<Vec<i64>> = Arc::new(batch.iter().map(|(id, _)| *id).collect());
        let queue = &queue;
        let deleted = until_written(
            &abort,
            || {
                let rows = Arc::clone(&rows);
                async move {
                    queue
                        .run(move |store| store.delete_many(&rows))
                        .await
                        .map_err(QueueError::retryable)
                }
            },
            events::queue_error,
        )
        .await;
        if deleted.is_none() {
            // Stopping: the rows stay and are delivered again after the restart.
            tracing::debug!(
                rows = rows.len(),
                "delivered rows not deleted before the stop"
            );
        }
        let mut held = lock(&held);
        for id in rows.iter() {
            held.remove(id);
        }
        drop(held);
        for (_, key) in batch.drain(..) {
            wake.unblocked(key.as_deref());
        }
    }
}

/// One message of a spill: held (its live delivery goes on) or for the worker.
enum Piece {
    Held(Arc<Tracked>, NewRow),
    Queued(ToQueue),
}

impl Piece {
    fn row(&self) -> &NewRow {
        match self {
            Piece::Held(_, row) => row,
            Piece::Queued(queued) => &queued.row,
        }
    }
}

/// Payload bytes one write to the queue takes at most (a larger message alone), for the
/// spill and the buffered intake alike: a write must fit in the queue as a whole, and one
/// of a few large messages fits where a whole batch of them might never (see
/// `crate::queue::capacity`).
pub(crate) const CHUNK_BYTES: u64 = 1 << 20;

/// How many of `pieces` (at least one) the next transaction takes.
fn chunk_len(pieces: &[Piece]) -> usize {
    let mut bytes = 0;
    for (index, piece) in pieces.iter().enumerate() {
        bytes += piece.row().stored_bytes();
        if bytes > CHUNK_BYTES && index > 0 {
            return index;
        }
    }
    pieces.len()
}

/// A message that goes straight to the queue (not held), acknowledged once written.
pub(crate) struct ToQueue {
    pub tracked: Option<Arc<Tracked>>,
    pub row: NewRow,
}

impl Spill {
    /// The spill step and the task that deletes delivered rows (it ends once every clone
    /// of the spill step is dropped and the deletes sent are done).
    pub(crate) fn new(
        queue: Queue,
        held: Arc<Mutex<HashSet<i64>>>,
        wake: Arc<Wakeup>,
        abort: CancellationToken,
    ) -> (Spill, tokio::task::JoinHandle<()>) {
        let (deletes, delivered) = mpsc::unbounded_channel();
        let deleter = tokio::spawn(delete_delivered(
            delivered,
            queue.clone(),
            Arc::clone(&held),
            Arc::clone(&wake),
            abort.clone(),
        ));
        let spill = Spill {
            queue,
            held,
            wake,
            keys: Arc::default(),
            abort,
            deletes,
        };
        (spill, deleter)
    }

    /// Loads the order keys of the MQTT rows left in the file, and counts rows that leave
    /// the queue from now on.
    pub(crate) async fn load_keys(&self) -> Result<(), QueueError> {
        let keys = Arc::clone(&self.keys);
        self.wake.on_row_left(move |key| keys.remove_one(key));
        let counts = self
            .queue
            .run(|store| store.rows_per_order_key(SourceKind::Mqtt))
            .await?;
        for (key, rows) in counts {
            self.keys.add(&key, rows);
        }
        Ok(())
    }

    /// Writes every spillable message of `ledger` (held) and then `extra` (for the worker)
    /// in transactions that each fit the queue, and acknowledges them through the ledger. The caller has
    /// counted the keys of `extra` in [`Spill::keys`] already (so that later messages of
    /// those keys follow them). Gives up only at `stop`: then nothing is acknowledged and
    /// the broker sends the messages again.
    pub(crate) async fn spill(
        &self,
        ledger: &Ledger,
        extra: Vec<ToQueue>,
        stop: &CancellationToken,
    ) {
        let taken = ledger.take_spillable();
        if taken.is_empty() && extra.is_empty() {
            return;
        }
        // In arrival order: the held ones, then those for the worker (the caller made
        // sure they are the newer ones). Written in pieces of at most CHUNK_BYTES: one
        // write must fit in the queue as a whole (see `crate::queue::capacity`), and a
        // window of large messages in one transaction might never fit a nearly full file.
        let mut pending: Vec<Piece> = taken
            .into_iter()
            .map(|(tracked, row)| Piece::Held(tracked, row))
            .chain(extra.into_iter().map(Piece::Queued))
            .collect();
        while !pending.is_empty() {
            let cut = chunk_len(&pending);
            let rest = pending.split_off(cut);
            if !self.write_piece(ledger, pending, stop).await {
                self.give_up(&rest);
                return;
            }
            pending = rest;
        }
    }

    /// Writes one piece in one transaction and acknowledges it through the ledger;
    /// `false` (with the piece given up) only at `stop`.
    async fn write_piece(
        &self,
        ledger: &Ledger,
        piece: Vec<Piece>,
        stop: &CancellationToken,
    ) -> bool {
        let held_count = piece
            .iter()
            .filter(|p| matches!(p, Piece::Held(..)))
            .count();
        let rows: Arc<Vec<NewRow>> = Arc::new(piece.iter().map(|p| p.row().clone()).collect());
        let started = tokio::time::Instant::now();
        let written = until_written(
            stop,
            || {
                let (rows, held) = (Arc::clone(&rows), Arc::clone(&self.held));
                async move {
                    self.queue
                        .run(move |store| {
                            let ids = store.insert(rows.iter())?;
                            // Marked held in the same job of the queue thread as the write,
                            // so the worker never sees these rows unheld.
                            lock(&held).extend(ids.iter().take(held_count).copied());
                            Ok(ids)
                        })
                        .await
                        .map_err(QueueError::retryable)
                }
            },
            events::queue_error,
        )
        .await;
        let Some(ids) = written else {
            self.give_up(&piece);
            return false;
        };
        events::queue_written(SourceKind::Mqtt, ids.len());
        tracing::debug!(
            held = held_count,
            queued = piece.len() - held_count,
            took = ?started.elapsed(),
            "mqtt messages spilled to the queue"
        );
        // Held pieces come first, so their ids are the first ones.
        for (piece, id) in piece.iter().zip(&ids) {
            let Piece::Held(tracked, _) = piece else {
                continue;
            };
            let parked = {
                let mut state = tracked.state();
                match std::mem::replace(&mut *state, RowState::Held(*id)) {
                    RowState::Writing(Some(outcome)) => {
                        *state = RowState::Done;
                        Some(outcome)
                    }
                    _ => None,
                }
            };
            if let Some(outcome) = parked {
                // Settled while its row was being written: settle the row now, apart from
                // the intake.
                let (spill, tracked, id) = (self.clone(), Arc::clone(tracked), *id);
                tokio::spawn(async move { spill.settle_held(id, &tracked, &outcome).await });
            }
            ledger.done(tracked);
        }
        if held_count < piece.len() {
            self.wake.new_rows();
        }
        for piece in &piece {
            if let Piece::Queued(ToQueue {
                tracked: Some(tracked),
                ..
            }) = piece
            {
                ledger.done(tracked);
            }
        }
        true
    }

    /// Stopping before these were written: held ones go back to live (or are abandoned if
    /// they settled meanwhile), queued ones stop counting for their keys; none is
    /// acknowledged, so the broker sends them again.
    fn give_up(&self, pieces: &[Piece]) {
        for piece in pieces {
            match piece {
                Piece::Held(tracked, _) => {
                    let mut state = tracked.state();
                    *state = match *state {
                        RowState::Writing(None) => RowState::Live,
                        _ => RowState::Abandoned,
                    };
                }
                Piece::Queued(queued) => {
                    if let Some(key) = queued.row.order_key.as_deref() {
                        self.keys.remove_one(key);
                    }
                }
            }
        }
    }

    /// The live delivery of a held row settled: delete the row, dead-letter it, or hand
    /// it to the worker.
    pub(crate) async fn settle_held(&self, id: i64, tracked: &Tracked, outcome: &Outcome) {
        let meta = Metadata::new(SourceKind::Mqtt, tracked.topic.clone());
        let change = match outcome {
            Outcome::Delivered { .. }
            | Outcome::Skipped { .. }
            | Outcome::Duplicate { .. }
            | Outcome::Coalesced { .. } => {
                if let Err(unsent) = self.deletes.send((id, tracked.order_key.clone())) {
                    // The deleter has stopped (only while stopping): delete it here.
                    let (id, key) = unsent.0;
                    apply(&self.queue, id, Change::Delete, &meta, &self.abort).await;
                    lock(&self.held).remove(&id);
                    self.wake.unblocked(key.as_deref());
                }
                return;
            }
            Outcome::Rejected {
                kind,
                reason,
                attempts,
                ..
            } => Some(Change::DeadLetter {
                kind: *kind,
                reason: reason.clone(),
                attempts: *attempts,
            }),
            Outcome::Interrupted { .. } | Outcome::Failed { .. } => None,
        };
        match change {
            Some(change) => {
                let dead_letter = matches!(change, Change::DeadLetter { .. });
                // Removed from the held set only after the write, so the worker cannot
                // deliver a row that is being deleted.
                let applied = apply(&self.queue, id, change, &meta, &self.abort).await;
                if applied && dead_letter {
                    events::dead_lettered(&meta);
                }
                lock(&self.held).remove(&id);
                self.wake.unblocked(tracked.order_key.as_deref());
            }
            None => {
                // The row is the worker's now (or the next start's).
                if let Some(key) = &tracked.order_key {
                    self.keys.add(key, 1);
                }
                lock(&self.held).remove(&id);
                self.wake.new_rows();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a settle panicked; the data itself is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
