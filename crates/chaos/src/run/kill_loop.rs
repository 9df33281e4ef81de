//! SIGKILL loops: while a feed streams, the agent is killed with SIGKILL at even steps of
//! its progress (a kill after each `1/(kills+1)` of the events arrived) and started again at once on the same SQLite file (and Kafka group, MQTT client id or
//! proxy port). Every event must arrive, in order per key; duplicates are expected (what
//! was delivered but not yet committed or acknowledged when the kill came).

use anyhow::Result;

use super::{Ctx, PROGRESS_CAP, delivery_timeout, settle, wait_delivered, wait_progress, watch};
use crate::agent::Agent;
use crate::ilert::{Ilert, ilert_like};
use crate::outcome::Outcome;
use crate::size::Size;
use crate::source::{Kind, Setup};

pub async fn run(ctx: &Ctx, kind: Kind) -> Result<Outcome> {
    let mut outcome = Outcome::new(kind.name(), "kill-loop");
    let setup = Setup::start(kind).await?;
    let ilert = Ilert::start(ilert_like()).await?;
    let mut agent = Agent::start(&ctx.agent, &ilert.url(), setup.agent_args("chaos"))?;
    agent.wait_ready(std::time::Duration::from_secs(90)).await?;

    let (count, rate) = ctx.events(kind);
    let feed = tokio::spawn(setup.target.clone().feed(count, rate));
    // Kill k comes once k/(kills+1) of the events arrived, and no sooner than the feed's
    // pace would have it: spread over the delivery, never at an agent still starting.
    let every = Size::feed_duration(count, rate) / u32::try_from(ctx.size.kills + 1)?;
    for k in 1..=ctx.size.kills {
        watch(&mut [&mut agent], every).await?;
        let target = count * k / (ctx.size.kills + 1);
        wait_progress(&ilert, &mut [&mut agent], count, target, PROGRESS_CAP).await?;
        agent.kill_and_restart()?;
    }
    feed.await??;
    wait_delivered(
        &ilert,
        &mut [&mut agent],
        count,
        delivery_timeout(ctx, kind),
    )
    .await?;
    agent.stop()?;
    settle(&mut outcome, &[&agent]);
    outcome.count(count, &ilert.requests());
    drop(setup);
    Ok(outcome)
}
