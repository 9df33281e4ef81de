//! One attempt at an escalation-policy update: find the user, find the policy, replace
//! the user on the level while keeping its escalation timeout.
//!
//! The three calls together are idempotent, so a retry after a partial success is safe
//! and the whole sequence is one attempt for the retry loop. A missing user, policy or
//! level is a permanent rejection whose reason says which of the three failed.

use crate::action::PolicyUpdate;
use crate::ilert::{IlertClient, Verdict};
use crate::secret::Secret;

use super::rate_limit::{KeyClass, RateLimiter};

pub(super) async fn attempt(
    client: &IlertClient,
    limiter: &RateLimiter,
    api_key: &Secret,
    update: &PolicyUpdate,
) -> Verdict {
    limiter.acquire(KeyClass::Api, api_key.expose()).await;
    let user = match client.search_user(api_key, &update.email).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return permanent(format!(
                "unknown user: no ilert user has the email `{}`",
                update.email
            ));
        }
        Err(verdict) => return in_step("looking up the user", verdict),
    };

    limiter.acquire(KeyClass::Api, api_key.expose()).await;
    let policy = match client.resolve_policy(api_key, &update.routing_key).await {
        Ok(Some(policy)) => policy,
        Ok(None) => {
            return permanent(format!(
                "unknown policy: no escalation policy has the routing key `{}`",
                update.routing_key
            ));
        }
        Err(verdict) => return in_step("resolving the escalation policy", verdict),
    };

    let Some(rule) = policy.escalation_rules.get(update.level as usize) else {
        return permanent(format!(
            "unknown level: escalation policy {} has {} levels, level {} (zero-based) does not exist",
            policy.id,
            policy.escalation_rules.len(),
            update.level
        ));
    };

    limiter.acquire(KeyClass::Api, api_key.expose()).await;
    let verdict = client
        .update_level(
            api_key,
            policy.id,
            update.level,
            &rule.escalation_timeout,
            user.id,
        )
        .await;
    in_step("updating the escalation level", verdict)
}

fn permanent(reason: String) -> Verdict {
    Verdict::Permanent {
        status: None,
        reason,
    }
}

/// Prefixes a failure's reason with the step it happened in.
fn in_step(step: &str, verdict: Verdict) -> Verdict {
    match verdict {
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
    }
}
