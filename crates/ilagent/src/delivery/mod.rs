//! Delivery: carries out an [`Action`] against ilert until it is delivered or can never be.
//!
//! This is the one retry policy for every source. Each attempt first waits for the key's
//! rate-limit slot, then makes the call; a transient verdict (network, timeout, 408, 429,
//! 5xx) is retried after `Retry-After` or a jittered exponential backoff, until it
//! succeeds, `max_attempts` or the deadline turns it into a rejection, or shutdown
//! interrupts it. Permanent verdicts are never retried.

pub mod backoff;
mod policy_update;
pub mod rate_limit;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use rate_limit::{Budget, Budgets, KeyClass, RateLimiter};

use crate::action::{Action, Outcome, RejectKind};
use crate::ilert::{EventPath, IlertClient, Verdict};
use crate::secret::Secret;

/// How long to keep trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Attempts before a transient failure becomes a rejection; `None` is unlimited.
    pub max_attempts: Option<u32>,
    /// The longest `Retry-After` honoured; longer requests are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::default(),
            max_attempts: Some(100),
            max_retry_after: Duration::from_secs(15 * 60),
        }
    }
}

/// ilert asks clients that got a 429 without `Retry-After` to wait 10 to 30 s.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(10);

/// Per-call context: where the message came from (for log lines), when to give up, and
/// the shutdown signal.
pub struct Context<'a> {
    pub location: &'a (dyn fmt::Display + Sync),
    pub deadline: Option<Instant>,
    pub cancel: &'a CancellationToken,
}

struct Shared {
    client: IlertClient,
    limiter: RateLimiter,
    api_key: Option<Secret>,
    lookups: policy_update::LookupCache,
}

/// How long user and policy lookups are reused unless configured otherwise.
pub const DEFAULT_POLICY_CACHE_TTL: Duration = Duration::from_secs(60);

/// Delivers actions. Cheap to clone: clones share the client and the rate limiter (so
/// every key has one budget, whoever sends); each may post events to its own path
/// ([`Deliverer::with_event_path`]) and retry by its own policy ([`Deliverer::with_policy`]).
#[derive(Clone)]
pub struct Deliverer {
    shared: Arc<Shared>,
    policy: RetryPolicy,
    event_path: EventPath,
}

impl Deliverer {
    pub fn new(
        client: IlertClient,
        budgets: Budgets,
        policy: RetryPolicy,
        api_key: Option<Secret>,
    ) -> Self {
        Deliverer {
            shared: Arc::new(Shared {
                client,
                limiter: RateLimiter::new(budgets),
                api_key,
                lookups: policy_update::LookupCache::new(DEFAULT_POLICY_CACHE_TTL),
            }),
            policy,
            event_path: EventPath::Generic,
        }
    }

    /// The same deliverer posting events to `path` (sources of a given alert-source type).
    pub fn with_event_path(&self, path: EventPath) -> Self {
        Deliverer {
            shared: Arc::clone(&self.shared),
            policy: self.policy,
            event_path: path,
        }
    }

    /// How long escalation-policy lookups are reused (`Duration::ZERO`: never). Applies to
    /// every clone.
    pub fn set_policy_cache_ttl(&self, ttl: Duration) {
        self.shared.lookups.set_ttl(ttl);
    }

    /// The same deliverer (same client, same rate budgets) retrying by `policy`.
    pub fn with_policy(&self, policy: RetryPolicy) -> Self {
        Deliverer {
            shared: Arc::clone(&self.shared),
            policy,
            event_path: self.event_path.clone(),
        }
    }

    /// Carries out `action`; returns only once it is settled or interrupted.
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
            _ => self.retry(action, ctx).await,
        }
    }

    async fn retry(&self, action: &Action, ctx: &Context<'_>) -> Outcome {
        let policy = &self.policy;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let verdict = tokio::select! {
                verdict = self.attempt(action) => verdict,
                () = ctx.cancel.cancelled() => return Outcome::Interrupted { attempts: attempts - 1 },
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
            if policy.max_attempts.is_some_and(|max| attempts >= max) {
                return Outcome::Rejected {
                    kind: RejectKind::Exhausted,
                    reason: format!("gave up after {attempts} attempts: {reason}"),
                    status,
                    attempts,
                };
            }
            let wait = self.wait_after(attempts, status, retry_after);
            if retry_after.is_some() {
                crate::observe::events::retry_after_waiting(wait);
            }
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
                () = tokio::time::sleep(wait) => {}
                () = ctx.cancel.cancelled() => return Outcome::Interrupted { attempts },
            }
        }
    }

    /// `Retry-After` when ilert sent one (capped), otherwise the jittered backoff; a 429
    /// without `Retry-After` waits at least what ilert advises (capped by the backoff cap).
    fn wait_after(
        &self,
        failures: u32,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Duration {
        let policy = &self.policy;
        if let Some(after) = retry_after {
            return after.min(policy.max_retry_after);
        }
        let backoff = policy.backoff.delay(failures, &mut rand::rng());
        if status == Some(429) {
            backoff.max(RATE_LIMITED_WAIT.min(policy.backoff.max))
        } else {
            backoff
        }
    }

    /// One attempt: the key's rate-limit slot, then the call.
    async fn attempt(&self, action: &Action) -> Verdict {
        let shared = &self.shared;
        match action {
            Action::Event(event) => {
                shared
                    .limiter
                    .acquire(KeyClass::Integration, event.integration_key.expose())
                    .await;
                shared.client.send_event(event, &self.event_path).await
            }
            Action::Heartbeat(key) => {
                shared
                    .limiter
                    .acquire(KeyClass::Heartbeat, key.expose())
                    .await;
                shared.client.ping_heartbeat(key).await
            }
            Action::PolicyUpdate(update) => match &shared.api_key {
                Some(api_key) => {
                    policy_update::attempt(
                        &shared.client,
                        &shared.limiter,
                        &shared.lookups,
                        api_key,
                        update,
                    )
                    .await
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
        }
    }
}
