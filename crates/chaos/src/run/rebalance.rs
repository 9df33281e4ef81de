//! SIGKILL during a rebalance: two agents in one consumer group on a topic of six
//! partitions. While a feed streams, a second agent joins (partitions move to it), and
//! the first is killed with SIGKILL while they move, then started again (they move back);
//! the roles swap each round. Every event must arrive, in order per key.

use std::time::Duration;

use anyhow::Result;

use super::{Ctx, PROGRESS_CAP, delivery_timeout, settle, wait_delivered, wait_progress, watch};
use crate::agent::Agent;
use crate::ilert::{Ilert, ilert_like};
use crate::outcome::Outcome;
use crate::size::Size;
use crate::source::{Kind, Setup};

/// How long after the second agent started the first is killed: inside the group's
/// rebalance (the join takes about a second on tansu with the session settings used).
const KILL_AFTER_JOIN: Duration = Duration::from_millis(800);

pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let mut outcome = Outcome::new("kafka", "rebalance-kill");
    let setup = Setup::start(Kind::Kafka).await?;
    let ilert = Ilert::start(ilert_like()).await?;
    let args = setup.agent_args("chaos-rebalance");
    let mut first = Agent::start(&ctx.agent, &ilert.url(), args.clone())?;
    first.wait_ready(Duration::from_secs(90)).await?;
    let mut second = Agent::prepare(&ctx.agent, &ilert.url(), args)?;

    let (count, rate) = ctx.events(Kind::Kafka);
    let feed = tokio::spawn(setup.target.clone().feed(count, rate));
    let rounds = ctx.size.kills.div_ceil(2).max(1);
    let every = Size::feed_duration(count, rate) / u32::try_from(rounds + 1)?;
    for round in 0..rounds {
        let (staying, leaving) = if round % 2 == 0 {
            (&mut second, &mut first)
        } else {
            (&mut first, &mut second)
        };
        watch(&mut [&mut *staying, &mut *leaving], every / 2).await?;
        let target = count * (round + 1) / (rounds + 1);
        wait_progress(
            &ilert,
            &mut [&mut *staying, &mut *leaving],
            count,
            target,
            PROGRESS_CAP,
        )
        .await?;
        // A member that joins (again) starts the rebalance.
        if staying.is_running() {
            staying.kill_and_restart()?;
        } else {
            staying.restart()?;
        }
        watch(&mut [&mut *staying, &mut *leaving], KILL_AFTER_JOIN).await?;
        leaving.kill()?;
        watch(&mut [&mut *staying], every / 2).await?;
        leaving.restart()?;
    }
    feed.await??;
    let timeout = delivery_timeout(ctx, Kind::Kafka) + Duration::from_secs(60);
    wait_delivered(&ilert, &mut [&mut first, &mut second], count, timeout).await?;
    first.stop()?;
    second.stop()?;
    settle(&mut outcome, &[&first, &second]);
    outcome.count(count, &ilert.requests());
    outcome
        .notes
        .push(format!("{rounds} rebalances with a SIGKILL inside"));
    Ok(outcome)
}
