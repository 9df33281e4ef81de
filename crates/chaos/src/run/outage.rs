//! ilert away in the middle of a stream: its port closed (connection refused) or every
//! request answered 503, for the size's outage (60 s at the large size), starting a third
//! into the feed. Every event must arrive once ilert is back, in order per key, with the
//! agent's default retries (the outage must not exhaust `--max_retries`).

use anyhow::Result;

use super::{Ctx, delivery_timeout, settle, wait_delivered, watch};
use crate::agent::Agent;
use crate::ilert::{Ilert, ilert_like};
use crate::outcome::Outcome;
use crate::size::Size;
use crate::source::{Kind, Setup};

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// The port is closed.
    Refused,
    /// Every request is answered 503.
    Unavailable,
}

pub async fn run(ctx: &Ctx, kind: Kind, mode: Mode) -> Result<Outcome> {
    let name = match mode {
        Mode::Refused => "ilert-refused",
        Mode::Unavailable => "ilert-503",
    };
    let mut outcome = Outcome::new(kind.name(), name);
    let setup = Setup::start(kind).await?;
    let mut ilert = Ilert::start(ilert_like()).await?;
    let mut agent = Agent::start(&ctx.agent, &ilert.url(), setup.agent_args("chaos"))?;
    agent.wait_ready(std::time::Duration::from_secs(90)).await?;

    let (count, rate) = ctx.events(kind);
    let feed = tokio::spawn(setup.target.clone().feed(count, rate));
    watch(&mut [&mut agent], Size::feed_duration(count, rate) / 3).await?;
    match mode {
        Mode::Refused => ilert.go_down().await,
        Mode::Unavailable => ilert.fail_everything(true),
    }
    watch(&mut [&mut agent], ctx.size.outage).await?;
    match mode {
        Mode::Refused => ilert.come_back().await?,
        Mode::Unavailable => ilert.fail_everything(false),
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
