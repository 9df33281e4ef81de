//! Settling a queued row: delete it when delivered, reschedule it when an attempt failed
//! transiently, move it to the dead letters when it can never be delivered.
//!
//! The worker's deliverer makes exactly one attempt per hand-out
//! ([`crate::delivery::Deliverer::single_attempt`]), so every failed attempt is counted
//! here, in the row, before the next one: a restart continues the count instead of
//! starting over, and `--max_retries` bounds attempts across restarts. When the next
//! attempt is due is the one [`RetryPolicy`] of live deliveries (`Retry-After`, the 429
//! floor, jittered backoff).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::worker::Wakeup;
use super::{Queue, QueueError, now_ms};
use crate::action::{Outcome, RejectKind};
use crate::delivery::RetryPolicy;
use crate::message::Metadata;
use crate::observe::events::{self, Disposition};
use crate::pipeline::persist::until_written;
use crate::pipeline::{Job, Settle};

/// The row a job came from, and how often it had failed before this attempt.
pub struct QueueTicket {
    pub id: i64,
    pub attempts: u32,
    pub order_key: Option<String>,
}

pub struct QueueSettler {
    pub queue: Queue,
    pub policy: RetryPolicy,
    /// Rows handed to the dispatcher and not settled yet; the worker leaves them out.
    pub in_flight: Arc<Mutex<HashSet<i64>>>,
    /// Tells the worker a slot and perhaps the next row of a key are free.
    pub wake: Arc<Wakeup>,
    /// Stops retrying SQLite writes at the end of the shutdown drain.
    pub abort: CancellationToken,
}

/// What happens to the row.
pub(crate) enum Change {
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

impl Change {
    /// The change for `outcome` of a row that had failed `attempts_before` times, and the
    /// rejection to report if the row is dead-lettered. `None`: leave the row as it is.
    fn for_outcome(
        outcome: &Outcome,
        attempts_before: u32,
        policy: &RetryPolicy,
        meta: &Metadata,
    ) -> Option<(Change, Option<Outcome>)> {
        match outcome {
            Outcome::Delivered { .. }
            | Outcome::Skipped { .. }
            | Outcome::Duplicate { .. }
            | Outcome::Coalesced { .. } => Some((Change::Delete, None)),
            Outcome::Interrupted { .. } => None,
            Outcome::Failed {
                status,
                reason,
                retry_after,
            } => {
                let attempts = attempts_before.saturating_add(1);
                match policy.after_failure(attempts, *status, *retry_after) {
                    Some(wait) => {
                        events::queue_retry_scheduled(meta, attempts, reason, wait);
                        let at_ms = now_ms()
                            .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                        let change = Change::Retry {
                            attempts,
                            at_ms,
                            error: reason.clone(),
                        };
                        Some((change, None))
                    }
                    None => {
                        let reason = RetryPolicy::gave_up(attempts, reason);
                        Some(dead_letter(
                            RejectKind::Exhausted,
                            reason,
                            *status,
                            attempts,
                        ))
                    }
                }
            }
            Outcome::Rejected {
                kind,
                reason,
                status,
                attempts,
            } => {
                let attempts = attempts_before.saturating_add(*attempts);
                Some(dead_letter(*kind, reason.clone(), *status, attempts))
            }
        }
    }
}

fn dead_letter(
    kind: RejectKind,
    reason: String,
    status: Option<u16>,
    attempts: u32,
) -> (Change, Option<Outcome>) {
    let reported = Outcome::Rejected {
        kind,
        reason: reason.clone(),
        status,
        attempts,
    };
    let change = Change::DeadLetter {
        kind,
        reason,
        attempts,
    };
    (change, Some(reported))
}

impl Settle for QueueSettler {
    type Ticket = QueueTicket;

    async fn settle(&self, job: Job<QueueTicket>, outcome: Outcome) {
        let meta = &job.message.meta;
        let id = job.ticket.id;
        let decided = Change::for_outcome(&outcome, job.ticket.attempts, &self.policy, meta);
        let (leaves, applied, reported) = match decided {
            Some((change, reported)) => {
                let leaves = matches!(change, Change::Delete | Change::DeadLetter { .. });
                let applied = apply(&self.queue, id, change, meta, &self.abort).await;
                (leaves, applied, reported)
            }
            None => (false, false, None),
        };
        match reported {
            Some(rejected) if applied => {
                events::dead_lettered(meta);
                events::settled(meta, &rejected, Disposition::DeadLettered);
            }
            Some(_) => {}
            None if !matches!(outcome, Outcome::Failed { .. }) => {
                events::settled(meta, &outcome, Disposition::Normal)
            }
            None => {}
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

/// Writes `change` to row `id`, retrying a failing SQLite until it works or `abort`
/// (then the row stays as it was and is delivered again after the restart).
pub(crate) async fn apply(
    queue: &Queue,
    id: i64,
    change: Change,
    meta: &Metadata,
    abort: &CancellationToken,
) -> bool {
    let change = Arc::new(change);
    let dead_letter = matches!(change.as_ref(), Change::DeadLetter { .. });
    until_written(
        abort,
        || {
            let work = Arc::clone(&change);
            async move {
                queue
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
                    .await
                    .map_err(QueueError::retryable)
            }
        },
        |error| {
            if dead_letter && !error.is_full() {
                events::dead_letter_failed(meta, error);
            } else {
                events::queue_error(error);
            }
        },
    )
    .await
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Backoff;
    use crate::message::SourceKind;
    use std::time::Duration;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(60),
            },
            max_attempts: Some(3),
            max_retry_after: Duration::from_secs(900),
        }
    }

    fn failed(retry_after: Option<Duration>) -> Outcome {
        Outcome::Failed {
            status: Some(429),
            reason: "429 Too Many Requests".into(),
            retry_after,
        }
    }

    #[test]
    fn a_failed_attempt_is_rescheduled_after_ilerts_retry_after() {
        let meta = Metadata::new(SourceKind::Http, "/api/events");
        let before = now_ms();
        let Some((
            Change::Retry {
                attempts, at_ms, ..
            },
            None,
        )) = Change::for_outcome(&failed(Some(Duration::from_secs(120))), 0, &policy(), &meta)
        else {
            panic!("expected a retry");
        };
        assert_eq!(attempts, 1);
        assert!(at_ms >= before + 120_000, "waits the 120 s ilert asked for");
    }

    #[test]
    fn the_attempt_that_uses_up_max_retries_dead_letters_the_row_with_the_count() {
        let meta = Metadata::new(SourceKind::Mqtt, "t");
        let Some((
            Change::DeadLetter {
                kind,
                reason,
                attempts,
            },
            Some(_),
        )) = Change::for_outcome(&failed(None), 2, &policy(), &meta)
        else {
            panic!("expected a dead letter");
        };
        assert_eq!((kind, attempts), (RejectKind::Exhausted, 3));
        assert_eq!(reason, "gave up after 3 attempts: 429 Too Many Requests");
    }

    #[test]
    fn delivered_skipped_and_coalesced_rows_are_deleted_and_interrupted_ones_stay() {
        let meta = Metadata::new(SourceKind::Mqtt, "t");
        for outcome in [
            Outcome::Skipped {
                reason: "filter".into(),
            },
            Outcome::Coalesced {
                reason: "in flight".into(),
            },
        ] {
            assert!(matches!(
                Change::for_outcome(&outcome, 0, &policy(), &meta),
                Some((Change::Delete, None))
            ));
        }
        assert!(
            Change::for_outcome(&Outcome::Interrupted { attempts: 0 }, 0, &policy(), &meta)
                .is_none()
        );
    }
}
