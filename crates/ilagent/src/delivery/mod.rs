//! Delivery: carries out an [`Action`] against ilert until it is delivered or can never be.
//!
//! This is the one retry policy for every source ([`RetryPolicy`]: which failures are
//! retried, how long to wait, when to give up). Each attempt first waits for the key's
//! rate-limit slot, then for a delivery slot (the in-flight limit counts requests on the
//! wire, never keys that wait), then makes the call; a transient verdict (network,
//! timeout, 408, 429, 5xx) is retried after `Retry-After` or a jittered exponential
//! backoff, until it succeeds, `max_attempts` or the deadline turns it into a rejection,
//! or shutdown interrupts it. Permanent verdicts are never retried.
//!
//! The SQLite queue retries through its rows instead of in memory: its deliverer
//! ([`Deliverer::single_attempt`]) makes one attempt and reports [`Outcome::Failed`], and
//! the queue's settle step asks the same [`RetryPolicy`] when to try again.
//!
//! Heartbeat pings coalesce: a ping of a heartbeat that has one in flight, or whose budget
//! recent pings used up, would change nothing at ilert, so it is settled at once. An event
//! with an idempotency id that ilert already accepted is settled at once as a duplicate
//! ([`idempotency`]).

pub mod backoff;
mod concurrency;
mod heartbeats;
pub(crate) mod idempotency;
mod policy_update;
pub mod rate_limit;
mod retry;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use concurrency::Slots;
pub(crate) use idempotency::AcceptedIds;
pub use rate_limit::{Budget, Budgets, KeyClass, RateLimiter};
pub use retry::RetryPolicy;
pub use wire::Reserved;

use self::wire::Wire;
use crate::action::{Action, DedupeId, Outcome, RejectKind};
use crate::ilert::{EventPath, IlertClient, Verdict};
use crate::secret::Secret;

/// Per-call context: where the message came from (for log lines), when to give up, the
/// shutdown signal, and the delivery slots (requests on the wire at once) of the caller.
pub struct Context<'a> {
    pub location: &'a (dyn fmt::Display + Sync),
    pub deadline: Option<Instant>,
    pub cancel: &'a CancellationToken,
    /// Taken for each HTTP request only, after the rate-limit wait; `None`: unbounded.
    pub slots: Option<&'a Slots>,
    /// Cancelled when shutdown begins: a delivery that is waiting (for its rate budget, a
    /// delivery slot, a backoff or `Retry-After`) stops at once, unsettled, while a request
    /// already on the wire may finish until `cancel`. `None`: waits until `cancel`.
    pub stop_waiting: Option<&'a CancellationToken>,
    /// Cancelled when the source no longer wants this message (a revoked Kafka partition):
    /// it stops waiting as at shutdown.
    pub revoked: Option<&'a CancellationToken>,
    /// A delivery slot the caller took for the first request (see [`Reserved`]); empty
    /// by default.
    pub reserved: Reserved,
}

impl Context<'_> {
    fn is_stopping(&self) -> bool {
        self.stop_waiting
            .is_some_and(CancellationToken::is_cancelled)
    }

    fn is_revoked(&self) -> bool {
        self.revoked.is_some_and(CancellationToken::is_cancelled)
    }

    /// Resolves when waiting should stop: shutdown began or the message was revoked
    /// (never, without either token).
    pub(crate) async fn waits_stopped(&self) {
        tokio::select! {
            () = cancelled(self.stop_waiting) => {}
            () = cancelled(self.revoked) => {}
        }
    }
}

/// Resolves when `token` is cancelled; never without one.
pub(crate) async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

struct Shared {
    client: IlertClient,
    limiter: RateLimiter,
    api_key: Option<Secret>,
    lookups: policy_update::LookupCache,
    pings: heartbeats::PingsInFlight,
}

/// How often the rate-limit state of idle keys is dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(15);

/// Prunes idle keys every [`PRUNE_EVERY`] until the last deliverer is gone.
async fn prune_idle_keys(shared: std::sync::Weak<Shared>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.limiter.prune_idle(Instant::now());
        crate::observe::events::tracked_keys("rate_limit", shared.limiter.tracked_keys());
    }
}

/// How long user and policy lookups are reused unless configured otherwise.
pub const DEFAULT_POLICY_CACHE_TTL: Duration = Duration::from_secs(60);

/// Delivers actions. Cheap to clone: clones share the client, the rate limiter and the
/// pings in flight (so every key has one budget, whoever sends); each may post events to
/// its own path ([`Deliverer::with_event_path`]) and make a single attempt per call
/// ([`Deliverer::single_attempt`]).
#[derive(Clone)]
pub struct Deliverer {
    shared: Arc<Shared>,
    policy: RetryPolicy,
    event_path: EventPath,
    single_attempt: bool,
    /// Where events with an idempotency id are checked and recorded; `None`: every event
    /// is delivered (one-shot commands, no SQLite file).
    accepted: Option<AcceptedIds>,
}

impl Deliverer {
    pub fn new(
        client: IlertClient,
        budgets: Budgets,
        policy: RetryPolicy,
        api_key: Option<Secret>,
    ) -> Self {
        let shared = Arc::new(Shared {
            client,
            limiter: RateLimiter::new(budgets),
            api_key,
            lookups: policy_update::LookupCache::new(DEFAULT_POLICY_CACHE_TTL),
            pings: heartbeats::PingsInFlight::default(),
        });
        // Inside a runtime (the daemon), idle keys are pruned on a timer for as long as a
        // clone lives; the one-shot commands live too briefly to need it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(prune_idle_keys(Arc::downgrade(&shared)));
        }
        Deliverer {
            shared,
            policy,
            event_path: EventPath::Generic,
            single_attempt: false,
            accepted: None,
        }
    }

    /// The same deliverer delivering each idempotency id once per its window, by the ids
    /// in `accepted` (see [`idempotency`]). Set it before cloning for the sources.
    pub(crate) fn remembering(self, accepted: AcceptedIds) -> Self {
        Deliverer {
            accepted: Some(accepted),
            ..self
        }
    }

    /// Forgets the rate-limit state of keys with nothing left in their window at `now`
    /// (what the timer does every [`PRUNE_EVERY`]).
    pub fn prune_idle(&self, now: Instant) {
        self.shared.limiter.prune_idle(now);
    }

    /// Keys whose rate-limit state is kept: some request of theirs is inside its window.
    pub fn tracked_keys(&self) -> usize {
        self.shared.limiter.tracked_keys()
    }

    /// The same deliverer posting events to `path` (sources of a given alert-source type).
    pub fn with_event_path(&self, path: EventPath) -> Self {
        Deliverer {
            event_path: path,
            ..self.clone()
        }
    }

    /// How long escalation-policy lookups are reused (`Duration::ZERO`: never). Applies to
    /// every clone.
    pub fn set_policy_cache_ttl(&self, ttl: Duration) {
        self.shared.lookups.set_ttl(ttl);
    }

    /// The same deliverer (same client, same rate budgets) making one attempt per call: a
    /// transient failure comes back as [`Outcome::Failed`] for the caller to reschedule.
    pub fn single_attempt(&self) -> Self {
        Deliverer {
            single_attempt: true,
            ..self.clone()
        }
    }

    /// The same deliverer (same client, same rate budgets) retrying by `policy` (the
    /// Kafka source without a dead-letter topic retries without limit).
    pub fn with_policy(&self, policy: RetryPolicy) -> Self {
        Deliverer {
            policy,
            ..self.clone()
        }
    }

    /// The retry policy, for callers that reschedule [`Outcome::Failed`] themselves.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Carries out `action`; returns only once it is settled or interrupted (or, for a
    /// single-attempt deliverer, after one failed attempt).
    pub async fn deliver(&self, action: &Action, ctx: &Context<'_>) -> Outcome {
        match action {
            Action::Skip(reason) => Outcome::Skipped {
                reason: reason.clone(),
            },
            Action::Invalid(reason) => Outcome::Rejected {
                kind: RejectKind::Invalid,
                reason: reason.clone(),
                status: None,
                attempts: 0,
            },
            Action::Heartbeat(key) => {
                let Some(_in_flight) = self.shared.pings.start(key.expose()) else {
                    return coalesced("a ping of this heartbeat is in flight");
                };
                if !self
                    .shared
                    .limiter
                    .has_room(KeyClass::Heartbeat, key.expose())
                {
                    return coalesced(
                        "this heartbeat was pinged as often as its rate budget allows",
                    );
                }
                self.retry(action, ctx).await
            }
            Action::Event(event) => match (&event.dedupe, &self.accepted) {
                (Some(id), Some(accepted)) => self.deliver_once(action, id, accepted, ctx).await,
                _ => self.retry(action, ctx).await,
            },
            Action::PolicyUpdate(_) => self.retry(action, ctx).await,
        }
    }

    /// An event with an idempotency id: skipped if ilert accepted the id inside its window,
    /// else delivered and the id recorded before the source settles it.
    async fn deliver_once(
        &self,
        action: &Action,
        id: &DedupeId,
        accepted: &AcceptedIds,
        ctx: &Context<'_>,
    ) -> Outcome {
        let _held = match accepted.try_hold(id) {
            Some(held) => held,
            None => {
                // Another event with this id is under way: wait for it without holding a
                // delivery slot.
                ctx.reserved.release();
                tokio::select! {
                    biased;
                    () = ctx.cancel.cancelled() => return Outcome::Interrupted { attempts: 0 },
                    () = ctx.waits_stopped() => return Outcome::Interrupted { attempts: 0 },
                    held = accepted.hold(id) => held,
                }
            }
        };
        if let Some(duplicate) = accepted.duplicate(id).await {
            return duplicate;
        }
        let outcome = self.retry(action, ctx).await;
        if let Outcome::Delivered { .. } = outcome {
            accepted.remember(id).await;
        }
        outcome
    }

    async fn retry(&self, action: &Action, ctx: &Context<'_>) -> Outcome {
        let policy = &self.policy;
        let wire = Wire {
            limiter: &self.shared.limiter,
            slots: ctx.slots,
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let verdict = tokio::select! {
                verdict = self.attempt(action, &wire, ctx) => verdict,
                () = ctx.cancel.cancelled() => return Outcome::Interrupted { attempts: attempts - 1 },
            };
            let Some(verdict) = verdict else {
                return Outcome::Interrupted {
                    attempts: attempts - 1,
                };
            };
            let (status, reason, retry_after) = match verdict {
                Verdict::Delivered {
                    status,
                    correlation_id,
                } => {
                    if attempts > 1 {
                        tracing::info!(location = %ctx.location, attempts, "delivered after retrying");
                    }
                    return Outcome::Delivered {
                        status,
                        attempts,
                        correlation_id,
                    };
                }
                Verdict::Permanent { status, reason } => {
                    return Outcome::Rejected {
                        kind: RejectKind::Permanent,
                        reason,
                        status,
                        attempts,
                    };
                }
                Verdict::Transient {
                    status,
                    reason,
                    retry_after,
                } => (status, reason, retry_after),
            };
            if self.single_attempt {
                return Outcome::Failed {
                    status,
                    reason,
                    retry_after,
                };
            }
            let Some(wait) = policy.after_failure(attempts, status, retry_after) else {
                return Outcome::Rejected {
                    kind: RejectKind::Exhausted,
                    reason: RetryPolicy::gave_up(attempts, &reason),
                    status,
                    attempts,
                };
            };
            if let Some(deadline) = ctx.deadline
                && Instant::now() + wait > deadline
            {
                return Outcome::Rejected {
                    kind: RejectKind::Exhausted,
                    reason: format!("gave up at the deadline after {attempts} attempts: {reason}"),
                    status,
                    attempts,
                };
            }
            if attempts == 1 {
                tracing::warn!(location = %ctx.location, %reason, retry_in = ?wait, "delivery failed, retrying");
            } else {
                tracing::debug!(location = %ctx.location, %reason, attempts, retry_in = ?wait, "delivery failed again, retrying");
            }
            tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => return Outcome::Interrupted { attempts },
                () = ctx.waits_stopped() => return Outcome::Interrupted { attempts },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt: the key's rate-limit slot, a delivery slot, then the call. `None` if
    /// shutdown stopped the waiting before the request went out. The calls are boxed: their
    /// futures are most of a delivery's size, and only requests on the wire need them,
    /// while every waiting key's task would reserve the room (see `pipeline::dispatcher`).
    async fn attempt(
        &self,
        action: &Action,
        wire: &Wire<'_>,
        ctx: &Context<'_>,
    ) -> Option<Verdict> {
        let shared = &self.shared;
        let enter = |class, key| wire.enter_unless_stopped(class, key, ctx);
        let verdict = match action {
            Action::Event(event) => {
                let on_wire = enter(KeyClass::Integration, event.integration_key.expose()).await?;
                let verdict = Box::pin(shared.client.send_event(event, &self.event_path)).await;
                on_wire.answered(&verdict);
                verdict
            }
            Action::Heartbeat(key) => {
                let on_wire = enter(KeyClass::Heartbeat, key.expose()).await?;
                let verdict = Box::pin(shared.client.ping_heartbeat(key)).await;
                on_wire.answered(&verdict);
                verdict
            }
            Action::PolicyUpdate(update) => match &shared.api_key {
                Some(api_key) => {
                    return Box::pin(policy_update::attempt(
                        &shared.client,
                        wire,
                        ctx,
                        &shared.lookups,
                        api_key,
                        update,
                    ))
                    .await;
                }
                None => Verdict::Permanent {
                    status: None,
                    reason: "escalation-policy updates need a user API key: set ILERT_API_KEY"
                        .into(),
                },
            },
            Action::Skip(_) | Action::Invalid(_) => Verdict::Permanent {
                status: None,
                reason: "nothing to deliver".into(),
            },
        };
        Some(verdict)
    }
}

fn coalesced(reason: &str) -> Outcome {
    crate::observe::events::heartbeat_coalesced();
    Outcome::Coalesced {
        reason: reason.to_string(),
    }
}
