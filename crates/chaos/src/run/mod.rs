//! The faults, one module each, and what every run shares: the plan of (source, fault)
//! pairs, waiting for the stand-in to have every event, and turning a run that could not
//! finish into a failed outcome instead of stopping the suite.

pub mod broker_restart;
pub mod kill_loop;
pub mod malformed;
pub mod outage;
pub mod rebalance;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use ilert_standin::Behaviour;

use crate::agent::Agent;
use crate::ilert::Ilert;
use crate::outcome::Outcome;
use crate::size::Size;
use crate::source::{Kind, Setup};

/// The longest a kill waits for the progress it is due at (a stalled agent is then killed
/// anyway; the run counts what it lost).
pub const PROGRESS_CAP: Duration = Duration::from_secs(60);

/// What every run gets: the agent binary and the size.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub agent: PathBuf,
    pub size: Size,
}

impl Ctx {
    /// Events and events per second of a feed through `kind`.
    pub fn events(&self, kind: Kind) -> (usize, usize) {
        match kind {
            Kind::Kafka => (self.size.kafka_events, self.size.kafka_rate),
            _ => (self.size.other_events, self.size.other_rate),
        }
    }
}

/// One entry of the plan.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    KillLoop,
    IlertRefused,
    Ilert503,
    BrokerRestart,
    Malformed,
    /// The malformed corpus through a configured route whose jq expressions mirror the
    /// flag mapping: expressions must set aside what mapping does, and never crash.
    MalformedRouted,
    RebalanceKill,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLoop => "kill-loop",
            Fault::IlertRefused => "ilert-refused",
            Fault::Ilert503 => "ilert-503",
            Fault::BrokerRestart => "broker-restart",
            Fault::Malformed => "malformed",
            Fault::MalformedRouted => "malformed-routed",
            Fault::RebalanceKill => "rebalance-kill",
        }
    }
}

/// Every (source, fault) pair the suite runs, in order.
pub fn plan() -> Vec<(Kind, Fault)> {
    let mut plan = Vec::new();
    for fault in [
        Fault::KillLoop,
        Fault::IlertRefused,
        Fault::Ilert503,
        Fault::Malformed,
    ] {
        plan.extend(Kind::ALL.iter().map(|kind| (*kind, fault)));
    }
    // The proxy has no broker; a rebalance is Kafka's alone.
    plan.extend(
        [Kind::Kafka, Kind::MqttDirect, Kind::MqttBuffered].map(|k| (k, Fault::BrokerRestart)),
    );
    // Routes take their messages the same way on every source: one broker of each kind.
    plan.extend([Kind::Kafka, Kind::MqttDirect].map(|k| (k, Fault::MalformedRouted)));
    plan.push((Kind::Kafka, Fault::RebalanceKill));
    plan
}

/// Runs one entry; an error becomes a failed outcome.
pub async fn run(ctx: &Ctx, kind: Kind, fault: Fault) -> Outcome {
    let started = Instant::now();
    let result = match fault {
        Fault::KillLoop => kill_loop::run(ctx, kind).await,
        Fault::IlertRefused => outage::run(ctx, kind, outage::Mode::Refused).await,
        Fault::Ilert503 => outage::run(ctx, kind, outage::Mode::Unavailable).await,
        Fault::BrokerRestart => broker_restart::run(ctx, kind).await,
        Fault::Malformed => malformed::run(ctx, kind, false).await,
        Fault::MalformedRouted => malformed::run(ctx, kind, true).await,
        Fault::RebalanceKill => rebalance::run(ctx).await,
    };
    let mut outcome = result.unwrap_or_else(|error| {
        let mut failed = Outcome::new(kind.name(), fault.name());
        failed.error = Some(format!("{error:#}"));
        failed
    });
    outcome.took(started.elapsed());
    outcome
}

/// What a run stands on: the source's broker, ilert, and one agent between them, ready.
pub struct Stage {
    pub setup: Setup,
    pub ilert: Ilert,
    pub agent: Agent,
}

impl Stage {
    /// Starts ilert with `behaviour` and an agent for `setup` (its default flags plus
    /// `extra`), and waits until the agent is ready.
    pub async fn up(
        ctx: &Ctx,
        setup: Setup,
        behaviour: Behaviour,
        extra: &[&str],
    ) -> Result<Stage> {
        let ilert = Ilert::start(behaviour).await?;
        let mut args = setup.agent_args("chaos");
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut agent = Agent::start(&ctx.agent, &ilert.url(), args)?;
        agent.wait_ready(Duration::from_secs(90)).await?;
        Ok(Stage {
            setup,
            ilert,
            agent,
        })
    }

    /// Waits (up to `timeout`) for events `0..sent`, stops the agent and counts.
    pub async fn finish(
        &mut self,
        outcome: &mut Outcome,
        sent: usize,
        timeout: Duration,
    ) -> Result<()> {
        wait_delivered(&self.ilert, &mut [&mut self.agent], sent, timeout).await?;
        if let Some(note) = diagnose(&self.agent, &self.ilert, sent) {
            outcome.notes.push(note);
        }
        self.agent.stop()?;
        settle(outcome, &[&self.agent]);
        outcome.count(sent, &self.ilert.requests());
        Ok(())
    }
}

/// Waits until ilert accepted every event `0..sent` or `timeout` passes, looking after the
/// agents meanwhile (a crash is counted and the agent started again).
pub async fn wait_delivered(
    ilert: &Ilert,
    agents: &mut [&mut Agent],
    sent: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for agent in agents.iter_mut() {
            agent.check()?;
        }
        let accepted = bench::collect::unique_accepted(&ilert.requests(), sent);
        if accepted >= sent || Instant::now() >= deadline {
            // Stragglers (duplicates) land before the count.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until ilert accepted `target` distinct events of `0..sent` (or `cap` passed),
/// looking after the agents: a kill then lands while deliveries are under way, whatever
/// time the agent took to start (a Kafka group join takes seconds).
pub async fn wait_progress(
    ilert: &Ilert,
    agents: &mut [&mut Agent],
    sent: usize,
    target: usize,
    cap: Duration,
) -> Result<()> {
    let deadline = Instant::now() + cap;
    while Instant::now() < deadline {
        for agent in agents.iter_mut() {
            agent.check()?;
        }
        if bench::collect::unique_accepted(&ilert.requests(), sent) >= target {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How long a run waits for its events after the feed: enough for a slow machine.
pub fn delivery_timeout(ctx: &Ctx, kind: Kind) -> Duration {
    let (count, rate) = ctx.events(kind);
    Duration::from_secs(120) + ctx.size.outage * 2 + Size::feed_duration(count, rate / 4)
}

/// Sleeps `total`, checking the agents every 200 ms.
pub async fn watch(agents: &mut [&mut Agent], total: Duration) -> Result<()> {
    let until = Instant::now() + total;
    while Instant::now() < until {
        for agent in agents.iter_mut() {
            agent.check()?;
        }
        tokio::time::sleep(Duration::from_millis(200).min(until - Instant::now())).await;
    }
    Ok(())
}

/// When events are missing: which ones, and what the agent's SQLite file still holds
/// (queued rows, dead letters), to tell a slow delivery from a loss.
pub fn diagnose(agent: &Agent, ilert: &Ilert, sent: usize) -> Option<String> {
    let missing = bench::collect::missing_ids(&ilert.requests(), sent);
    if missing.is_empty() {
        return None;
    }
    let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
    let status = agent
        .queue_status()
        .unwrap_or_else(|e| format!("queue status failed: {e}"));
    let reasons = agent.dead_letter_reasons().unwrap_or_default();
    Some(format!(
        "missing ids (first 10 of {}): {}; queue status: {}; dead letters: {} {:?}",
        missing.len(),
        shown.join(", "),
        status.trim(),
        reasons.len(),
        reasons.iter().take(3).collect::<Vec<_>>()
    ))
}

/// Records what the agents did into `outcome`, with the first crash's log in the notes.
pub fn settle(outcome: &mut Outcome, agents: &[&Agent]) {
    for agent in agents {
        outcome.kills += agent.kills;
        outcome.crashes += agent.crashes.len();
        if let Some(first) = agent.crashes.first() {
            outcome.notes.push(first.clone());
        }
    }
}
