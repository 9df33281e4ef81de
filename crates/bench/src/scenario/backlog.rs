//! `backlog`: a million Kafka messages over 1,000 integration keys (1,000 alert keys), to
//! show that the agent's memory follows its configuration, not its traffic. The backlog
//! is produced to tansu first; the agent then drains it into the stand-in (no added
//! latency, no rate limit at the stand-in). Its resident memory is read when 100,000 and
//! when all 1,000,000 events have arrived: the two should differ by under 10%.
//!
//! The agent's rate limiter is off (`--rate_limit_events 0`), as in the other unlimited
//! Kafka scenarios: at ilert's 50 per minute per key a million events over 1,000 keys take
//! 20 minutes to drain (`kafka-ratelimited` measures that pacing), and a budget no key
//! reaches would measure the limiter's log of a minute of requests per key instead, which
//! ilert's real budget caps at 50 entries a key. The limiter's own bound is tested apart
//! (tests/dispatcher.rs).

use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::Behaviour;
use testkit::Tansu;

use super::AgentRun;
use super::kafka::kafka_args;
use crate::event::Stream;
use crate::report::Row;

pub const NAME: &str = "backlog";
const MESSAGES: usize = 1_000_000;
/// When the first reading is taken.
const EARLY: usize = 100_000;
const STREAM: Stream = Stream {
    keys: 1_000,
    integration_keys: 1_000,
};
const PARTITIONS: i32 = 3;

pub async fn run(agent_binary: &std::path::Path) -> Result<Row> {
    let tansu =
        Tansu::start().context("cannot start tansu (scripts/install-test-deps installs it)")?;
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = super::stand_in(Behaviour::default()).await?;
    let topic = format!("bench-{NAME}");
    crate::kafka::ensure_topic(&bootstrap, &topic, PARTITIONS).await?;
    let producer = crate::kafka::producer(&bootstrap)?;
    let produced_at = std::time::Instant::now();
    let records = (0..MESSAGES).map(|id| {
        let (key, payload) = STREAM.event(id);
        (Some(key), payload)
    });
    crate::kafka::produce_all(&producer, &topic, records, 10_000).await?;
    eprintln!(
        "{NAME}: {MESSAGES} events produced in {:.0} s, starting the agent",
        produced_at.elapsed().as_secs_f64()
    );
    drop(producer);

    let mut args = kafka_args(&bootstrap, &topic, "earliest");
    args.extend(["--rate_limit_events", "0"]);
    let mut agent = AgentRun::start(agent_binary, &stand_in, &args)?;
    let early = stand_in
        .wait_for_requests(EARLY, Duration::from_secs(600))
        .await
        .len();
    agent.ensure_alive()?;
    let rss_early = agent.process.rss_mb();
    eprintln!("{NAME}: {early} requests at the stand-in, agent RSS {rss_early:?} MB");

    let mut row = agent
        .finish(NAME, &stand_in, MESSAGES, Duration::from_secs(3_600), 0)
        .await?;
    row.rss_after_100k_mb = rss_early;
    if let (Some(early), Some(late)) = (row.rss_after_100k_mb, row.rss_at_end_mb) {
        row.notes.push(format!(
            "RSS after 100k events {early:.1} MB, after 1M {late:.1} MB ({:+.1}%); peak {}",
            (late - early) * 100.0 / early,
            row.peak_rss_mb
                .map_or("unknown".into(), |peak| format!("{peak:.1} MB"))
        ));
    }
    drop(tansu);
    Ok(row)
}
