//! The broker goes away while the agent holds messages it has not settled.
//!
//! - MQTT: the whole feed is published first (the broker acknowledged every event), with
//!   ilert slow (200 ms an answer), so the agent holds unacknowledged messages; then the
//!   Mosquitto (persistence on) is restarted with SIGTERM a few times, as an operator's
//!   restart would, while the agent drains. The broker keeps the session and its queue
//!   across the restart; the agent reconnects and resumes.
//! - Kafka: tansu as shipped keeps its data only in memory (its postgres, SQLite and turso
//!   storage engines are not compiled in), so a restart would lose the topic. The Kafka
//!   case runs on librdkafka's mock cluster instead, whose broker is taken down for the
//!   size's outage in the middle of a feed and brought back with its data and offsets.

use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::Behaviour;

use super::{Ctx, Stage, delivery_timeout, watch};
use crate::ilert::ilert_like;
use crate::outcome::Outcome;
use crate::size::Size;
use crate::source::{Kind, Setup};

/// Mosquitto restarts per run, two seconds apart.
const MQTT_RESTARTS: usize = 3;

pub async fn run(ctx: &Ctx, kind: Kind) -> Result<Outcome> {
    match kind {
        Kind::Kafka => kafka(ctx).await,
        Kind::MqttDirect | Kind::MqttBuffered => mqtt(ctx, kind).await,
        Kind::Proxy => anyhow::bail!("the proxy has no broker to restart"),
    }
}

async fn mqtt(ctx: &Ctx, kind: Kind) -> Result<Outcome> {
    let mut outcome = Outcome::new(kind.name(), "broker-restart");
    let slow = Behaviour {
        latency_ms: 200,
        ..ilert_like()
    };
    let mut stage = Stage::up(ctx, Setup::start(kind).await?, slow, &[]).await?;
    let (count, rate) = ctx.events(kind);
    stage.setup.target.clone().feed(count, rate).await?;
    for _ in 0..MQTT_RESTARTS {
        watch(&mut [&mut stage.agent], Duration::from_secs(2)).await?;
        stage
            .setup
            .mosquitto()
            .context("an MQTT setup has a Mosquitto")?
            .restart()?;
    }
    let timeout = delivery_timeout(ctx, kind) + Duration::from_secs(60);
    stage.finish(&mut outcome, count, timeout).await?;
    outcome
        .notes
        .push(format!("Mosquitto restarted {MQTT_RESTARTS} times"));
    Ok(outcome)
}

async fn kafka(ctx: &Ctx) -> Result<Outcome> {
    let mut outcome = Outcome::new("kafka", "broker-restart");
    let mut stage = Stage::up(ctx, Setup::start_mock_kafka()?, ilert_like(), &[]).await?;
    let (count, rate) = ctx.events(Kind::Kafka);
    let feed = tokio::spawn(stage.setup.target.clone().feed(count, rate));
    watch(
        &mut [&mut stage.agent],
        Size::feed_duration(count, rate) / 3,
    )
    .await?;
    let cluster = stage.setup.mock_cluster().context("a mock-cluster setup")?;
    cluster
        .broker_down(1)
        .context("taking the mock broker down")?;
    watch(&mut [&mut stage.agent], ctx.size.outage).await?;
    let cluster = stage.setup.mock_cluster().context("a mock-cluster setup")?;
    cluster
        .broker_up(1)
        .context("bringing the mock broker back")?;
    feed.await??;
    stage
        .finish(&mut outcome, count, delivery_timeout(ctx, Kind::Kafka))
        .await?;
    outcome.notes.push(format!(
        "librdkafka's mock broker down for {:?}",
        ctx.size.outage
    ));
    Ok(outcome)
}
