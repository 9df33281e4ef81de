//! ilert away in the middle of a stream: its port closed (connection refused) or every
//! request answered 503, for the size's outage (60 s at the large size), starting a third
//! into the feed. Every event must arrive once ilert is back, in order per key, with the
//! agent's default retries (the outage must not exhaust `--max_retries`).

use anyhow::Result;

use super::{Ctx, Stage, delivery_timeout, watch};
use crate::ilert::ilert_like;
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
    let mut stage = Stage::up(ctx, Setup::start(kind).await?, ilert_like(), &[]).await?;
    let (count, rate) = ctx.events(kind);
    let feed = tokio::spawn(stage.setup.target.clone().feed(count, rate));
    watch(
        &mut [&mut stage.agent],
        Size::feed_duration(count, rate) / 3,
    )
    .await?;
    match mode {
        Mode::Refused => stage.ilert.go_down().await,
        Mode::Unavailable => stage.ilert.fail_everything(true),
    }
    watch(&mut [&mut stage.agent], ctx.size.outage).await?;
    match mode {
        Mode::Refused => stage.ilert.come_back().await?,
        Mode::Unavailable => stage.ilert.fail_everything(false),
    }
    feed.await??;
    stage
        .finish(&mut outcome, count, delivery_timeout(ctx, kind))
        .await?;
    Ok(outcome)
}
