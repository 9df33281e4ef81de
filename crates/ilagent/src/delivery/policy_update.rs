//! One attempt at an escalation-policy update: find the user, find the policy, replace
//! the user on the level while keeping its escalation timeout.
//!
//! The three calls together are idempotent, so a retry after a partial success is safe
//! and the whole sequence is one attempt for the retry loop. A missing user, policy or
//! level is a permanent rejection whose reason says which of the three failed.
//!
//! ilert allows 120 requests a minute per user API key, so the two lookups are cached
//! for a short time (`--policy_cache_ttl`): a shift change that moves many people then
//! costs one request per update instead of three. A cached policy that ilert no longer
//! accepts is forgotten and looked up again on the next attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::action::PolicyUpdate;
use crate::ilert::client::EscalationPolicy;
use crate::ilert::{IlertClient, Verdict};
use crate::secret::Secret;

use super::Context;
use super::rate_limit::KeyClass;
use super::wire::Wire;

/// Short-lived lookups of users by email and policies by routing key.
#[derive(Debug)]
pub struct LookupCache {
    ttl_ms: AtomicU64,
    users: Mutex<HashMap<String, (Instant, i64)>>,
    policies: Mutex<HashMap<String, (Instant, EscalationPolicy)>>,
}

impl LookupCache {
    pub fn new(ttl: Duration) -> Self {
        LookupCache {
            ttl_ms: AtomicU64::new(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            users: Mutex::new(HashMap::new()),
            policies: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn fresh(&self, stored: Instant) -> bool {
        stored.elapsed() < Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    fn user(&self, email: &str) -> Option<i64> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(&email.to_lowercase())
            .filter(|(at, _)| self.fresh(*at))
            .map(|(_, id)| *id)
    }

    fn remember_user(&self, email: &str, id: i64) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.retain(|_, (at, _)| self.fresh(*at));
        users.insert(email.to_lowercase(), (Instant::now(), id));
    }

    fn policy(&self, routing_key: &str) -> Option<EscalationPolicy> {
        let policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        policies
            .get(routing_key)
            .filter(|(at, _)| self.fresh(*at))
            .map(|(_, p)| p.clone())
    }

    fn remember_policy(&self, routing_key: &str, policy: EscalationPolicy) {
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        policies.retain(|_, (at, _)| self.fresh(*at));
        policies.insert(routing_key.to_string(), (Instant::now(), policy));
    }

    fn forget_policy(&self, routing_key: &str) {
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        policies.remove(routing_key);
    }
}

pub(super) async fn attempt(
    client: &IlertClient,
    wire: &Wire<'_>,
    ctx: &Context<'_>,
    cache: &LookupCache,
    api_key: &Secret,
    update: &PolicyUpdate,
) -> Option<Verdict> {
    let user_id = match cache.user(&update.email) {
        Some(id) => id,
        None => {
            let on_wire = wire
                .enter_unless_stopped(KeyClass::Api, api_key.expose(), ctx)
                .await?;
            let found = client.search_user(api_key, &update.email).await;
            on_wire.looked_up(&found);
            match found {
                Ok(Some(user)) => {
                    cache.remember_user(&update.email, user.id);
                    user.id
                }
                Ok(None) => {
                    return permanent(format!(
                        "unknown user: no ilert user has the email `{}`",
                        update.email
                    ));
                }
                Err(verdict) => return in_step("looking up the user", verdict),
            }
        }
    };

    let cached = cache.policy(&update.routing_key);
    let from_cache = cached.is_some();
    let policy = match cached {
        Some(policy) => policy,
        None => {
            let on_wire = wire
                .enter_unless_stopped(KeyClass::Api, api_key.expose(), ctx)
                .await?;
            let resolved = client.resolve_policy(api_key, &update.routing_key).await;
            on_wire.looked_up(&resolved);
            match resolved {
                Ok(Some(policy)) => {
                    cache.remember_policy(&update.routing_key, policy.clone());
                    policy
                }
                Ok(None) => {
                    return permanent(format!(
                        "unknown policy: no escalation policy has the routing key `{}`",
                        update.routing_key
                    ));
                }
                Err(verdict) => return in_step("resolving the escalation policy", verdict),
            }
        }
    };

    let Some(rule) = policy.escalation_rules.get(update.level as usize) else {
        if from_cache {
            // The policy may have gained levels since it was cached: look again.
            cache.forget_policy(&update.routing_key);
            return stale_cache(&update.routing_key);
        }
        return permanent(format!(
            "unknown level: escalation policy {} has {} levels, level {} (zero-based) does not exist",
            policy.id,
            policy.escalation_rules.len(),
            update.level
        ));
    };

    let on_wire = wire
        .enter_unless_stopped(KeyClass::Api, api_key.expose(), ctx)
        .await?;
    let verdict = client
        .update_level(
            api_key,
            policy.id,
            update.level,
            &rule.escalation_timeout,
            user_id,
        )
        .await;
    on_wire.answered(&verdict);
    match verdict {
        Verdict::Permanent {
            status: Some(400 | 404),
            ..
        } if from_cache => {
            cache.forget_policy(&update.routing_key);
            stale_cache(&update.routing_key)
        }
        verdict => in_step("updating the escalation level", verdict),
    }
}

// The verdicts below are `Some`: `None` is only "stopped before a request went out".

fn stale_cache(routing_key: &str) -> Option<Verdict> {
    Some(Verdict::Transient {
        status: None,
        reason: format!(
            "the cached escalation policy for `{routing_key}` is out of date; looking it up again"
        ),
        retry_after: Some(Duration::ZERO),
    })
}

fn permanent(reason: String) -> Option<Verdict> {
    Some(Verdict::Permanent {
        status: None,
        reason,
    })
}

/// Prefixes a failure's reason with the step it happened in.
fn in_step(step: &str, verdict: Verdict) -> Option<Verdict> {
    Some(match verdict {
        Verdict::Transient {
            status,
            reason,
            retry_after,
        } => Verdict::Transient {
            status,
            reason: format!("{step}: {reason}"),
            retry_after,
        },
        Verdict::Permanent { status, reason } => Verdict::Permanent {
            status,
            reason: format!("{step}: {reason}"),
        },
        delivered => delivered,
    })
}
