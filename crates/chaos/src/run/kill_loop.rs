//! SIGKILL loops: while a feed streams, the agent is killed with SIGKILL at even steps of
//! its progress (a kill after each `1/(kills+1)` of the events arrived) and started again at once on the same SQLite file (and Kafka group, MQTT client id or
//! proxy port). Every event must arrive, in order per key; duplicates are expected (what
//! was delivered but not yet committed or acknowledged when the kill came).

use anyhow::Result;

use super::{Ctx, PROGRESS_CAP, Stage, delivery_timeout, wait_progress, watch};
use crate::ilert::ilert_like;
use crate::outcome::Outcome;
use crate::size::Size;
use crate::source::{Kind, Setup};

pub async fn run(ctx: &Ctx, kind: Kind) -> Result<Outcome> {
    let mut outcome = Outcome::new(kind.name(), "kill-loop");
    let mut stage = Stage::up(ctx, Setup::start(kind).await?, ilert_like(), &[]).await?;
    let (count, rate) = ctx.events(kind);
    let feed = tokio::spawn(stage.setup.target.clone().feed(count, rate));
    // Kill k comes once k/(kills+1) of the events arrived, and no sooner than the feed's
    // pace would have it: spread over the delivery, never at an agent still starting.
    let every = Size::feed_duration(count, rate) / u32::try_from(ctx.size.kills + 1)?;
    for k in 1..=ctx.size.kills {
        watch(&mut [&mut stage.agent], every).await?;
        let target = count * k / (ctx.size.kills + 1);
        wait_progress(
            &stage.ilert,
            &mut [&mut stage.agent],
            count,
            target,
            PROGRESS_CAP,
        )
        .await?;
        stage.agent.kill_and_restart()?;
    }
    feed.await??;
    stage
        .finish(&mut outcome, count, delivery_timeout(ctx, kind))
        .await?;
    Ok(outcome)
}
