//! The queue worker: hands due rows to the shared dispatcher, one attempt at a time.
//!
//! When to look for rows:
//! - a new row or a settled one wakes the worker at once (so the idle interval never adds
//!   latency, and a key's next row follows its predecessor without waiting); after a
//!   settle only the next row of that key is looked up, through the index, so a busy
//!   queue is not scanned once per delivery;
//! - while rows are found it looks again at least every 500 ms ("active");
//! - with nothing due it sleeps until the earliest scheduled retry, at most `idle_poll`
//!   (10 s for the MQTT buffer, 5 s for the HTTP proxy: "idle");
//! - failing rows wait in the table for their own exponential backoff (up to
//!   `--backoff_max`, 60 s by default), so one failing key never slows the others.
//!
//! Each worker hands out the rows of its own source only (`source`), so the MQTT buffer and
//! the HTTP proxy can share one file; per-key order still holds across them (see
//! [`super::store::Store::fetch_heads`]).
//!
//! Memory stays bounded: at most the dispatcher's window (messages and bytes) is handed
//! out, and at most 128 rows are read per query.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::settle::{QueueSettler, QueueTicket};
use super::{Queue, now_ms};
use crate::message::SourceKind;
use crate::observe::events;
use crate::pipeline::{Dispatcher, Job, MessageRouter};

/// The MQTT buffer's idle interval (the HTTP proxy's is 5 s, see `Worker::idle_poll`).
pub const IDLE_POLL: Duration = Duration::from_secs(10);
pub const ACTIVE_POLL: Duration = Duration::from_millis(500);
/// Rows read per query at most: bounds the memory a query can take with large payloads.
const MAX_ROWS_PER_FETCH: usize = 128;
/// After the shutdown deadline, how long interrupted deliveries get to report back.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Why the worker should look again: new rows (scan the queue), or rows that left it
/// (look for the next row of their keys only, through the index).
#[derive(Default)]
pub struct Wakeup {
    notify: Notify,
    rescan: AtomicBool,
    keys: Mutex<Vec<String>>,
    /// Told the order key of every row that left the queue (the MQTT source counts the
    /// rows of each key it has handed to the queue, see `sources::mqtt::spill`).
    on_left: std::sync::OnceLock<RowLeft>,
}

type RowLeft = Box<dyn Fn(&str) + Send + Sync>;

impl Wakeup {
    /// Rows were added (or a slot freed that any row may take).
    pub fn new_rows(&self) {
        self.rescan.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Calls `listener` with the order key of every row that leaves the queue from now on
    /// (only the first listener set counts).
    pub fn on_row_left(&self, listener: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_left.set(Box::new(listener));
    }

    /// A row left the queue; its key's next row may now be due.
    pub fn settled(&self, order_key: Option<&str>) {
        match order_key {
            Some(key) => {
                if let Some(listener) = self.on_left.get() {
                    listener(key);
                }
                if let Ok(mut keys) = self.keys.lock() {
                    keys.push(key.to_string());
                }
                self.notify.notify_one();
            }
            None => self.new_rows(),
        }
    }

    /// A row the worker had to leave out (one that a source's live delivery held) left the
    /// queue: its key's next row may now be due. Unlike [`Wakeup::settled`], the source's
    /// count of the rows it handed to the queue is not told: a held row was never counted.
    pub fn unblocked(&self, order_key: Option<&str>) {
        match order_key {
            Some(key) => {
                if let Ok(mut keys) = self.keys.lock() {
                    keys.push(key.to_string());
                }
                self.notify.notify_one();
            }
            None => self.new_rows(),
        }
    }

    /// A row stays (retry scheduled, or interrupted): only a slot is free.
    pub fn slot_freed(&self) {
        self.notify.notify_one();
    }
}

pub struct Worker {
    pub queue: Queue,
    pub dispatcher: Dispatcher<QueueSettler>,
    /// Route and map, as the source did when it received the message.
    pub router: MessageRouter,
    /// Shared with the settler: rows being delivered.
    pub in_flight: Arc<Mutex<HashSet<i64>>>,
    /// Notified by writers and the settler.
    pub wake: Arc<Wakeup>,
    /// Cancelled by the worker itself when the drain deadline passes.
    pub abort: CancellationToken,
    /// Whose rows this worker hands out; `None`: every row.
    pub source: Option<SourceKind>,
    /// The longest sleep with nothing due.
    pub idle_poll: Duration,
}

impl Worker {
    /// Delivers until `shutdown`, then lets in-flight rows finish for up to
    /// `shutdown_timeout`; what is still in flight then stays queued for the next start.
    pub async fn run(self, shutdown: CancellationToken, shutdown_timeout: Duration) {
        let mut failures = 0u32;
        // The first round scans: rows may be waiting from before the start.
        self.wake.rescan.store(true, Ordering::Release);
        while !shutdown.is_cancelled() {
            let wait = match self.hand_out().await {
                Ok(handed_out) if handed_out > 0 => {
                    failures = 0;
                    ACTIVE_POLL
                }
                Ok(_) => {
                    failures = 0;
                    self.until_next_retry().await
                }
                Err(error) => {
                    failures += 1;
                    events::queue_error(&error);
                    Duration::from_millis(500)
                        .saturating_mul(1 << failures.min(6))
                        .min(self.idle_poll)
                }
            };
            tokio::select! {
                () = self.wake.notify.notified() => {}
                () = tokio::time::sleep(wait) => {
                    // The timer always scans: retries that came due, rows from elsewhere.
                    self.wake.rescan.store(true, Ordering::Release);
                }
                () = shutdown.cancelled() => {}
            }
        }
        self.drain(shutdown_timeout).await;
    }

    /// Reads as many due rows as the window has room for and submits them.
    async fn hand_out(&self) -> Result<usize, super::QueueError> {
        let room = self
            .dispatcher
            .capacity()
            .saturating_sub(self.dispatcher.in_flight())
            .min(MAX_ROWS_PER_FETCH);
        if room == 0 {
            return Ok(0);
        }
        let keys: Vec<String> = match self.wake.keys.lock() {
            Ok(mut keys) => std::mem::take(&mut *keys),
            Err(_) => Vec::new(),
        };
        let rescan = self.wake.rescan.swap(false, Ordering::AcqRel);
        let source = self.source;
        if !rescan && keys.is_empty() {
            return Ok(0);
        }
        let in_flight = Arc::clone(&self.in_flight);
        let rows = self
            .queue
            .run(move |store| {
                // Read on the queue thread: a source that writes rows and marks them held
                // (in this set) in one job of this thread is then seen either before the
                // write or after the mark, never in between.
                let exclude: Vec<i64> = match in_flight.lock() {
                    Ok(ids) => ids.iter().copied().collect(),
                    Err(poisoned) => poisoned.into_inner().iter().copied().collect(),
                };
                if rescan {
                    store.fetch_heads(source, now_ms(), room, &exclude)
                } else {
                    store.fetch_heads_of(source, now_ms(), &keys, &exclude)
                }
            })
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                self.wake.rescan.store(true, Ordering::Release);
                return Err(error);
            }
        };
        if rows.len() >= room {
            // There may be more than fitted: look again soon.
            self.wake.rescan.store(true, Ordering::Release);
        }
        let mut handed_out = 0;
        for row in rows {
            // Rows that do not fit the window's byte budget now are read again later.
            let Some(slot) = self.dispatcher.try_reserve_for(row.payload.len()) else {
                self.wake.rescan.store(true, Ordering::Release);
                break;
            };
            if let Ok(mut ids) = self.in_flight.lock() {
                ids.insert(row.id);
            }
            let message = row.to_message();
            let mut action = self.router.action_for(&message);
            if let (Some(path), crate::action::Action::Event(event)) =
                (&row.meta.event_path, &mut action)
            {
                event.path = Some(crate::ilert::EventPath::PerKey(path.clone()));
            }
            let ticket = QueueTicket {
                id: row.id,
                attempts: row.attempts,
                order_key: row.order_key.clone(),
            };
            self.dispatcher.submit(
                slot,
                Job {
                    ticket,
                    message,
                    action,
                },
            );
            handed_out += 1;
        }
        Ok(handed_out)
    }

    /// How long to sleep with nothing due: until the earliest retry, at most `idle_poll`.
    async fn until_next_retry(&self) -> Duration {
        let (now, source) = (now_ms(), self.source);
        match self
            .queue
            .run(move |store| store.next_retry_at(source, now))
            .await
        {
            Ok(Some(at)) => {
                let millis = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
                Duration::from_millis(millis).min(self.idle_poll)
            }
            Ok(None) => self.idle_poll,
            Err(error) => {
                events::queue_error(&error);
                self.idle_poll
            }
        }
    }

    async fn drain(self, shutdown_timeout: Duration) {
        self.dispatcher.stop_waiting();
        let in_flight = self.dispatcher.in_flight();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = ?shutdown_timeout, "queue worker stopping: finishing in-flight deliveries");
        }
        if tokio::time::timeout(shutdown_timeout, self.dispatcher.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.dispatcher.in_flight(),
                "--shutdown_timeout passed: the remaining messages stay in the queue and are delivered after the restart"
            );
            self.abort.cancel();
            let _ = tokio::time::timeout(ABORT_GRACE, self.dispatcher.drained()).await;
        }
    }
}
