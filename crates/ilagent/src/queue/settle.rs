//! Settling a queued row: delete it when delivered, reschedule it when an attempt failed
//! transiently, move it to the dead letters when it can never be delivered.
//!
//! The worker's deliverer makes exactly one attempt per hand-out, so every failed attempt
//! is counted here, in the row, before the next one: a restart continues the count instead
//! of starting over, and `--max_retries` bounds attempts across restarts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::worker::Wakeup;
use super::{Queue, QueueError, now_ms};
use crate::action::{Outcome, RejectKind};
use crate::delivery::Backoff;
use crate::message::Metadata;
use crate::observe::events::{self, Disposition};
use crate::pipeline::{Job, Settle};

/// ilert asks clients that got a 429 without `Retry-After` to wait 10 to 30 s.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(10);

/// When the next attempt of a failing row is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    pub backoff: Backoff,
    /// Attempts before a row is dead-lettered; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl RetrySchedule {
    /// `None` once `attempts` failed attempts use up the budget, else the wait before the
    /// next one: the jittered backoff, at least ilert's advice after a 429.
    pub fn next_wait(&self, attempts: u32, status: Option<u16>) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempts >= max) {
            return None;
        }
        let wait = self.backoff.delay(attempts, &mut rand::rng());
        Some(if status == Some(429) {
            wait.max(RATE_LIMITED_WAIT.min(self.backoff.max))
        } else {
            wait
        })
    }
}

/// The row a job came from, and how often it had failed before this attempt.
pub struct QueueTicket {
    pub id: i64,
    pub attempts: u32,
    pub order_key: Option<String>,
}

pub struct QueueSettler {
    pub queue: Queue,
    pub schedule: RetrySchedule,
    /// Rows handed to the dispatcher and not settled yet; the worker leaves them out.
    pub in_flight: Arc<Mutex<HashSet<i64>>>,
    /// Tells the worker a slot and perhaps the next row of a key are free.
    pub wake: Arc<Wakeup>,
    /// Stops retrying SQLite writes at the end of the shutdown drain.
    pub abort: CancellationToken,
}

enum Change {
    Delete,
    Retry {
        attempts: u32,
        at_ms: i64,
        error: String,
    },
    DeadLetter {
        kind: RejectKind,
        reason: String,
        attempts: u32,
    },
}

impl Settle for QueueSettler {
    type Ticket = QueueTicket;

    async fn settle(&self, job: Job<QueueTicket>, outcome: Outcome) {
        let meta = &job.message.meta;
        let id = job.ticket.id;
        let (change, reported) = match &outcome {
            Outcome::Delivered { .. } | Outcome::Skipped { .. } => (Some(Change::Delete), None),
            Outcome::Interrupted { .. } => (None, None),
            // One attempt failed transiently (the worker's deliverer tries once).
            Outcome::Rejected {
                kind: RejectKind::Exhausted,
                reason,
                status,
                ..
            } => {
                let attempts = job.ticket.attempts.saturating_add(1);
                let reason = last_failure(reason).to_string();
                match self.schedule.next_wait(attempts, *status) {
                    Some(wait) => {
                        events::queue_retry_scheduled(meta, attempts, &reason, wait);
                        let at_ms = now_ms()
                            .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                        let change = Change::Retry {
                            attempts,
                            at_ms,
                            error: reason,
                        };
                        (Some(change), None)
                    }
                    None => {
                        let reason = format!("gave up after {attempts} attempts: {reason}");
                        let reported = Outcome::Rejected {
                            kind: RejectKind::Exhausted,
                            reason: reason.clone(),
                            status: *status,
                            attempts,
                        };
                        let change = Change::DeadLetter {
                            kind: RejectKind::Exhausted,
                            reason,
                            attempts,
                        };
                        (Some(change), Some(reported))
                    }
                }
            }
            Outcome::Rejected {
                kind,
                reason,
                status,
                attempts,
            } => {
                let attempts = job.ticket.attempts.saturating_add(*attempts);
                let reported = Outcome::Rejected {
                    kind: *kind,
                    reason: reason.clone(),
                    status: *status,
                    attempts,
                };
                let change = Change::DeadLetter {
                    kind: *kind,
                    reason: reason.clone(),
                    attempts,
                };
                (Some(change), Some(reported))
            }
        };
        let leaves = matches!(change, Some(Change::Delete | Change::DeadLetter { .. }));
        let applied = match change {
            Some(change) => self.apply(id, change, meta).await,
            None => false,
        };
        match (&outcome, reported) {
            (_, Some(rejected)) if applied => {
                events::dead_lettered(meta);
                events::settled(meta, &rejected, Disposition::DeadLettered);
            }
            (Outcome::Delivered { .. } | Outcome::Skipped { .. }, _)
            | (Outcome::Interrupted { .. }, _) => {
                events::settled(meta, &outcome, Disposition::Normal)
            }
            _ => {}
        }
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.remove(&id);
        }
        if leaves && applied {
            self.wake.settled(job.ticket.order_key.as_deref());
        } else {
            self.wake.slot_freed();
        }
    }
}

impl QueueSettler {
    /// Writes the change, retrying a failing SQLite until it works or the drain deadline
    /// passes (then the row stays as it was and is delivered again after the restart).
    async fn apply(&self, id: i64, change: Change, meta: &Metadata) -> bool {
        let change = Arc::new(change);
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        };
        let mut failures = 0;
        loop {
            let work = Arc::clone(&change);
            let result = self
                .queue
                .run(move |store| match work.as_ref() {
                    Change::Delete => store.delete(id),
                    Change::Retry {
                        attempts,
                        at_ms,
                        error,
                    } => store.schedule_retry(id, *attempts, *at_ms, error),
                    Change::DeadLetter {
                        kind,
                        reason,
                        attempts,
                    } => store.dead_letter_queued(id, kind.as_str(), reason, *attempts),
                })
                .await;
            match result {
                Ok(()) => return true,
                Err(QueueError::Closed) => return false,
                Err(error) => {
                    failures += 1;
                    if matches!(change.as_ref(), Change::DeadLetter { .. }) {
                        events::dead_letter_failed(meta, &error);
                    } else {
                        events::queue_error(&error);
                    }
                    let wait = backoff.delay(failures, &mut rand::rng());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.abort.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// The reason of the last attempt, without the deliverer's "gave up after N attempts: ".
fn last_failure(reason: &str) -> &str {
    match reason.strip_prefix("gave up after ") {
        Some(rest) => rest
            .split_once(" attempts: ")
            .map_or(reason, |(_, last)| last),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_ends_at_max_attempts_and_429_waits_at_least_ten_seconds() {
        let schedule = RetrySchedule {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(60),
            },
            max_attempts: Some(3),
        };
        assert!(schedule.next_wait(2, Some(503)).unwrap() <= Duration::from_millis(200));
        assert!(schedule.next_wait(2, Some(429)).unwrap() >= Duration::from_secs(10));
        assert_eq!(schedule.next_wait(3, Some(503)), None);
        let forever = RetrySchedule {
            max_attempts: None,
            ..schedule
        };
        assert!(forever.next_wait(1_000, None).is_some());
    }

    #[test]
    fn the_deliverers_prefix_is_taken_off_the_reason() {
        assert_eq!(
            last_failure("gave up after 1 attempts: 503 Service Unavailable"),
            "503 Service Unavailable"
        );
        assert_eq!(last_failure("timeout"), "timeout");
    }
}
