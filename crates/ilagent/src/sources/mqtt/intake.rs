//! From a received publish to work: either straight into the dispatcher (acknowledged in
//! arrival order after delivery or a spill to SQLite), or into the SQLite queue
//! (`--mqtt_buffer`: acknowledged after the commit).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{AckToken, Received};
use super::ledger::{Ledger, RowState};
use super::settle::{Acker, MqttSettler, MqttTicket};
use super::spill::{CHUNK_BYTES, Spill, ToQueue};
use crate::message::{Message, Metadata, SourceKind};
use crate::observe::events;
use crate::pipeline::persist::until_written;
use crate::pipeline::{Dispatcher, Job, MessageRouter, Slot};
use crate::queue::worker::Wakeup;
use crate::queue::{NewRow, Queue, QueueError, StoredMeta, now_ms, order_key_column};

/// How many received messages one SQLite commit takes at most.
const BUFFER_BATCH: usize = 512;
/// How many received messages the direct intake takes at once (then checks for a spill).
const DIRECT_BATCH: usize = 512;

fn split(received: Received) -> (Message, Option<AckToken>, u64) {
    let mut meta = Metadata::new(SourceKind::Mqtt, received.topic);
    meta.headers = received
        .properties
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let message = Message {
        payload: received.payload,
        meta,
    };
    (message, received.ack, received.epoch)
}

/// What the non-buffered intake works with.
pub struct Direct {
    dispatcher: Dispatcher<MqttSettler>,
    router: MessageRouter,
    ledger: Arc<Ledger>,
    spill: Spill,
    /// `--mqtt_max_unacked` and `--mqtt_spill_after`.
    max_unacked: usize,
    spill_after: Duration,
    full_window: FullWindow,
}

impl Direct {
    pub fn new(
        dispatcher: Dispatcher<MqttSettler>,
        router: MessageRouter,
        ledger: Arc<Ledger>,
        spill: Spill,
        max_unacked: usize,
        spill_after: Duration,
    ) -> Self {
        Direct {
            dispatcher,
            router,
            ledger,
            spill,
            max_unacked,
            spill_after,
            full_window: FullWindow::new(spill_after),
        }
    }
}

/// How long the intake may still wait for room in a full dispatcher window.
///
/// Waiting for a slot keeps a message live while deliveries free slots quickly (a flood on
/// a healthy ilert), but the intake takes nothing else while it waits, and the broker holds
/// only so many messages for a client (Mosquitto: 1,000 queued) before it drops the rest.
/// So all the waits of one full spell together last at most `--mqtt_spill_after`; after
/// that a message that finds the window full goes to the queue at once, and the allowance
/// comes back only once the window has drained to half. Without this, a window of
/// deliveries that cannot finish (ilert down for a minute) cost every new key the whole
/// wait: the intake took one message a second and the broker dropped the overflow.
struct FullWindow {
    limit: Duration,
    left: Duration,
}

impl FullWindow {
    fn new(limit: Duration) -> Self {
        FullWindow { limit, left: limit }
    }

    /// A slot was free at once: with the window drained to half, the spell is over.
    fn had_room(&mut self, in_flight: usize, capacity: usize) {
        if in_flight <= capacity / 2 {
            self.left = self.limit;
        }
    }

    /// Waits up to what is left of the allowance for a slot.
    async fn wait_for_slot(
        &mut self,
        dispatcher: &Dispatcher<MqttSettler>,
        bytes: usize,
    ) -> Option<Slot> {
        if self.left.is_zero() {
            return None;
        }
        let started = Instant::now();
        let slot = tokio::time::timeout(self.left, dispatcher.reserve_for(bytes))
            .await
            .ok()
            .flatten();
        self.left = match slot {
            Some(_) => self.left.saturating_sub(started.elapsed()),
            None => Duration::ZERO,
        };
        slot
    }
}

/// Non-buffered: each message goes to the dispatcher and is acknowledged, in arrival order,
/// once settled or spilled ([`super::spill`]); a message the dispatcher has no room for,
/// or whose key has rows waiting in the queue, goes to the queue behind them. Stops taking
/// messages at `shutdown`; what it did not take stays unacknowledged and comes back from
/// the broker.
pub async fn direct(
    mut received: mpsc::UnboundedReceiver<Received>,
    mut intake: Direct,
    shutdown: CancellationToken,
) {
    // Far enough away to mean "never"; re-computed after every batch.
    const NEVER: Duration = Duration::from_secs(3600);
    let mut batch = Vec::with_capacity(DIRECT_BATCH);
    loop {
        let spill_at = intake.ledger.next_spill_at(intake.spill_after);
        let count = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            count = received.recv_many(&mut batch, DIRECT_BATCH) => count,
            () = tokio::time::sleep_until(spill_at.unwrap_or_else(|| Instant::now() + NEVER)),
                if spill_at.is_some() => {
                intake.spill.spill(&intake.ledger, Vec::new(), &shutdown).await;
                continue;
            }
        };
        if count == 0 {
            break;
        }
        // Messages for the queue, written together at the end of the batch.
        let mut to_queue = Vec::new();
        for next in batch.drain(..) {
            intake.take(next, &mut to_queue, &shutdown).await;
        }
        // Checked per batch, so that one spill takes everything that arrived together
        // (and the age here too: under steady traffic the timer above may never win).
        let overdue = intake
            .ledger
            .next_spill_at(intake.spill_after)
            .is_some_and(|at| at <= Instant::now());
        if !to_queue.is_empty() || overdue || intake.ledger.unacked() >= intake.max_unacked {
            intake
                .spill
                .spill(&intake.ledger, to_queue, &shutdown)
                .await;
        }
    }
}

impl Direct {
    /// Submits `next`, or adds it to `to_queue` (with its key counted, so that the rest of
    /// the batch of that key follows it there).
    async fn take(
        &mut self,
        next: Received,
        to_queue: &mut Vec<ToQueue>,
        shutdown: &CancellationToken,
    ) {
        let (message, ack, epoch) = split(next);
        events::received(&message.meta, self.router.topic_label(&message));
        let action = self.router.action_for(&message);
        let order_key = order_key_column(&action);
        let row = NewRow {
            source: SourceKind::Mqtt,
            meta: StoredMeta::from_metadata(&message.meta),
            topic: message.meta.topic.to_string(),
            payload: message.payload.clone(),
            order_key: order_key.clone(),
            created_at_ms: now_ms(),
        };
        let behind_queued_rows = order_key
            .as_deref()
            .is_some_and(|key| self.spill.keys.contains(key));
        let slot = if behind_queued_rows {
            None
        } else if let Some(slot) = self.dispatcher.try_reserve_for(message.payload.len()) {
            self.full_window
                .had_room(self.dispatcher.in_flight(), self.dispatcher.capacity());
            Some(slot)
        } else if self.full_window.left.is_zero() {
            // Out of waiting for this full spell: to the queue, written with the batch.
            None
        } else {
            // The window is full. What is unacknowledged goes to disk now, so the broker
            // keeps sending; then a slot freed soon keeps this message live (under a
            // flood deliveries free slots all the time), within the spell's allowance.
            self.spill
                .spill(&self.ledger, std::mem::take(to_queue), shutdown)
                .await;
            self.full_window
                .wait_for_slot(&self.dispatcher, message.payload.len())
                .await
        };
        let Some(slot) = slot else {
            // The spill at the end of the batch writes everything older that is
            // unacknowledged first, then this one behind it, so nothing overtakes within a
            // key. Counted now: later messages of the key in this batch must follow it,
            // and the worker may deliver and delete the row before the next batch.
            if let Some(key) = &row.order_key {
                self.spill.keys.add(key, 1);
            }
            let tracked = ack.map(|ack| self.ledger.push(epoch, ack, row.clone(), RowState::Done));
            to_queue.push(ToQueue { tracked, row });
            return;
        };
        let tracked = ack.map(|ack| self.ledger.push(epoch, ack, row, RowState::Live));
        self.dispatcher.submit(
            slot,
            Job {
                ticket: MqttTicket { tracked },
                message,
                action,
            },
        );
    }
}

/// Buffered: messages are committed to SQLite in batches, then acknowledged, then the
/// worker is woken. A message is acknowledged only once its row is on disk.
pub async fn buffered(
    mut received: mpsc::UnboundedReceiver<Received>,
    queue: Queue,
    acker: Acker,
    router: MessageRouter,
    wake: Arc<Wakeup>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BUFFER_BATCH);
    loop {
        let count = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            count = received.recv_many(&mut batch, BUFFER_BATCH) => count,
        };
        if count == 0 {
            break;
        }
        let mut rows = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for next in batch.drain(..) {
            let (message, ack, epoch) = split(next);
            events::received(&message.meta, router.topic_label(&message));
            // The order key is fixed at the write, so the queue keeps the arrival order
            // of each alert key whatever happens later.
            let order_key = order_key_column(&router.action_for(&message));
            rows.push(NewRow {
                source: SourceKind::Mqtt,
                meta: StoredMeta::from_metadata(&message.meta),
                topic: message.meta.topic.to_string(),
                payload: message.payload,
                order_key,
                created_at_ms: now_ms(),
            });
            acks.push((ack, epoch));
        }
        let mut acks = acks.into_iter();
        for chunk in chunks(rows) {
            let written = chunk.len();
            if !write_until_committed(&queue, Arc::new(chunk), &shutdown).await {
                // Shutdown before the commit: nothing more is acknowledged, the broker
                // redelivers the rest.
                return;
            }
            events::queue_written(SourceKind::Mqtt, written);
            wake.new_rows();
            for (ack, epoch) in acks.by_ref().take(written) {
                if let Some(ack) = ack {
                    acker.ack(&ack, epoch, None).await;
                }
            }
        }
    }
}

/// `rows` in arrival order, cut into commits of at most [`CHUNK_BYTES`]: a commit must fit
/// in the queue as a whole, and one of a few large messages fits where a whole batch of
/// them might never (see `crate::queue::capacity`).
fn chunks(rows: Vec<NewRow>) -> Vec<Vec<NewRow>> {
    let mut chunks: Vec<Vec<NewRow>> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let size = row.stored_bytes();
        match chunks.last_mut() {
            Some(chunk) if bytes + size <= CHUNK_BYTES => chunk.push(row),
            _ => {
                bytes = 0;
                chunks.push(vec![row]);
            }
        }
        bytes += size;
    }
    chunks
}

/// Retries a failing commit (disk full, file locked) until it works or shutdown comes.
async fn write_until_committed(
    queue: &Queue,
    rows: Arc<Vec<NewRow>>,
    shutdown: &CancellationToken,
) -> bool {
    until_written(
        shutdown,
        || {
            let rows = Arc::clone(&rows);
            async move { queue.insert(rows).await.map_err(QueueError::retryable) }
        },
        events::queue_error,
    )
    .await
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bytes: usize) -> NewRow {
        NewRow {
            source: SourceKind::Mqtt,
            topic: String::new(),
            payload: vec![0; bytes],
            meta: StoredMeta::default(),
            order_key: None,
            created_at_ms: 0,
        }
    }

    #[test]
    fn buffered_commits_take_at_most_a_mebibyte_and_a_larger_message_alone_in_order() {
        let sizes = [400 << 10, 400 << 10, 400 << 10, 3 << 20, 10, 20];
        let cut = chunks(sizes.iter().map(|&n| row(n)).collect());
        let lengths: Vec<Vec<usize>> = cut
            .iter()
            .map(|c| c.iter().map(|r| r.payload.len()).collect())
            .collect();
        assert_eq!(
            lengths,
            [
                vec![400 << 10, 400 << 10],
                vec![400 << 10],
                vec![3 << 20],
                vec![10, 20]
            ]
        );
    }
}
