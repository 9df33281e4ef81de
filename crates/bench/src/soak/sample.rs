//! One sample of the soak: both agents (see [`AgentSample`]) and the traffic, and the
//! line printed for it; and the drain at the end, waiting for the last valid messages.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::agents::{Agent, AgentSample};
use super::tally::Tally;
use super::traffic::{Counters, Source, valid_below};

/// Both agents and the traffic at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_seconds: f64,
    /// Agent a, then b.
    pub agents: Vec<AgentSample>,
    /// Messages sent, every kind, all sources.
    pub sent: u64,
    /// Distinct valid messages at the stand-in, all sources.
    pub delivered: u64,
}

impl Sample {
    pub async fn take(
        t: Duration,
        agents: &[&Agent],
        client: &reqwest::Client,
        counters: &[Arc<Counters>],
        tally: &Tally,
    ) -> Sample {
        let mut samples = Vec::new();
        for agent in agents {
            samples.push(agent.sample(client).await);
        }
        Sample {
            t_seconds: t.as_secs_f64(),
            agents: samples,
            sent: counters.iter().map(|c| Counters::get(&c.sent)).sum(),
            delivered: tally.totals().delivered_total(),
        }
    }

    pub fn line(&self) -> String {
        let t = self.t_seconds.round() as u64;
        let agents: Vec<String> = ["a", "b"]
            .iter()
            .zip(&self.agents)
            .map(|(name, s)| {
                let gauge = |g: Option<f64>| g.map_or("?".to_string(), |v| v.to_string());
                format!(
                    "{name}: rss {:.1} MiB (allocated {}) fds {} ({} sockets) sqlite {:.2} MiB queued {} dead {}",
                    s.rss_mib,
                    s.allocated_mib.map_or("?".to_string(), |v| format!("{v:.1}")),
                    s.fds,
                    s.sockets,
                    s.sqlite_mib,
                    gauge(s.queue_depth),
                    gauge(s.dead_letters)
                )
            })
            .collect();
        format!(
            "[{:>3}m{:02}s] {} | sent {} delivered {}",
            t / 60,
            t % 60,
            agents.join(" | "),
            self.sent,
            self.delivered
        )
    }
}

/// Waits until every valid message sent has arrived, the agents alive; the seconds it took,
/// or `None` at the timeout.
pub async fn drain(
    timeout: Duration,
    counters: &[Arc<Counters>],
    tally: &Tally,
    agents: &mut [&mut Agent],
) -> Option<f64> {
    let started = Instant::now();
    loop {
        let missing: usize = Source::ALL
            .into_iter()
            .map(|s| {
                tally
                    .missing(s, valid_below(Counters::get(&counters[s.index()].next)))
                    .len()
            })
            .sum();
        if missing == 0 {
            return Some(started.elapsed().as_secs_f64());
        }
        if started.elapsed() >= timeout || agents.iter_mut().any(|a| a.ensure_alive().is_err()) {
            eprintln!(
                "soak: {missing} valid messages still missing after {:?}",
                started.elapsed()
            );
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
