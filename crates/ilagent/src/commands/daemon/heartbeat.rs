//! The agent's own heartbeat (`-b`): pings ilert only while the agent is healthy.
//!
//! Healthy is what `/ready` says: every configured source connected and subscribed (not
//! stuck), the queue writable. While it is not, the pings stop, so ilert raises the alarm
//! for an agent that runs but no longer delivers; the agent looks again every second and
//! pings as soon as it is healthy again. A ping that keeps failing is given up when the
//! next one is due, so pings never pile up.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::action::{Action, Outcome};
use crate::config::AgentHeartbeat;
use crate::delivery::{Context, Deliverer};
use crate::observe::{events, health};
use crate::queue::Queue;

/// How often an unhealthy agent looks again.
const RECHECK: Duration = Duration::from_secs(1);

pub async fn ping_while_healthy(
    deliverer: Deliverer,
    heartbeat: AgentHeartbeat,
    queue: Option<Queue>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let action = Action::Heartbeat(heartbeat.key.clone());
    let mut healthy_before = true;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        let report = health::check(queue.as_ref()).await;
        if !report.ready {
            if healthy_before {
                events::agent_heartbeat("skipped", &report.describe_unready());
                healthy_before = false;
            }
            next = Instant::now() + RECHECK.min(heartbeat.interval);
            continue;
        }
        if !healthy_before {
            events::agent_heartbeat("resumed", "");
            healthy_before = true;
        }
        let started = Instant::now();
        next = started + heartbeat.interval;
        let ctx = Context {
            location: &"agent heartbeat",
            deadline: Some(next),
            cancel: &shutdown,
            slots: None,
            stop_waiting: None,
            revoked: None,
            reserved: Default::default(),
        };
        match deliverer.deliver(&action, &ctx).await {
            Outcome::Delivered { .. } => events::agent_heartbeat("pinged", ""),
            Outcome::Coalesced { reason } => events::agent_heartbeat("coalesced", &reason),
            Outcome::Interrupted { .. } => return Ok(()),
            other => events::agent_heartbeat("failed", &format!("{other:?}")),
        }
    }
}
