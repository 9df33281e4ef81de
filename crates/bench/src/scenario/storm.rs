//! `storm`: the bad hour. One alert source fires ten times over its ilert budget across
//! hundreds of alert keys while 100 other alert sources go on at their usual pace; the
//! stand-in enforces ilert's limits (50 events per integration key per minute) and answers
//! after 50 ms. The agent runs with its production defaults (rate limits on).
//!
//! What the row reports, and the targets (`crate::targets`):
//! - the other sources' end-to-end latency (producer -> tansu -> agent -> stand-in), p99
//!   under 250 ms: the storm does not delay them;
//! - the hot source's drain time (its first to its last accepted event) against the
//!   shortest its budget allows, within 1.05x;
//! - 429s from the stand-in: none.
//!
//! Sizes: the hot source sends [`HOT_EVENTS`] events at 500 a minute, each for its own
//! alert key (more alert keys than the agent's default `--kafka_max_in_flight` of 128, so
//! waiting keys would take every delivery slot if waiting held one). Each of the
//! [`QUIET_SOURCES`] other sources sends one event every 6 s (10 a minute) for as long as
//! the hot source needs to drain, about five minutes.
//!
//! `fetch.wait.max.ms=5` for the agent, as in `latency-steady`: tansu answers a waiting
//! fetch only when the wait is over, which would otherwise add up to 500 ms to every event.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RateLimit};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use testkit::Tansu;
use tokio::time::Instant;

use super::AgentRun;
use super::kafka::kafka_args;
use crate::event::{bench_details, now_ms};
use crate::kafka::check;
use crate::report::{Row, percentile};

/// ilert's event budget per integration key.
const ILERT_LIMIT: usize = 50;
const ILERT_WINDOW_SECONDS: f64 = 60.0;
/// The hot source's events (one per alert key) and its rate: ten times its budget.
pub const HOT_EVENTS: usize = 300;
const HOT_PER_MINUTE: f64 = 500.0;
/// The other sources, each with one alert key, one event every 6 s.
pub const QUIET_SOURCES: usize = 100;
const QUIET_EVERY: Duration = Duration::from_secs(6);
/// Alert key numbers: the hot source's are `0..HOT_EVENTS`, the quiet ones follow.
const QUIET_KEY_BASE: usize = 1_000;
const LATENCY_MS: u64 = 50;
const PARTITIONS: i32 = 3;
const PRODUCER_LINGER_MS: u32 = 20;

/// One scheduled event.
struct Planned {
    at: Duration,
    key: usize,
    seq: usize,
}

impl Planned {
    fn hot(&self) -> bool {
        self.key < QUIET_KEY_BASE
    }

    fn integration_key(&self) -> String {
        if self.hot() {
            "il1api-storm-hot".to_string()
        } else {
            format!("il1api-storm-quiet-{}", self.key - QUIET_KEY_BASE)
        }
    }

    fn alert_key(&self) -> String {
        if self.hot() {
            format!("host-{}", self.key)
        } else {
            format!("quiet-{}", self.key - QUIET_KEY_BASE)
        }
    }

    fn payload(&self, id: usize) -> Vec<u8> {
        json!({
            "integrationKey": self.integration_key(),
            "eventType": "ALERT",
            "summary": format!("storm event {id}"),
            "alertKey": self.alert_key(),
            "customDetails": {"id": id, "key": self.key, "seq": self.seq, "sentMs": now_ms()}
        })
        .to_string()
        .into_bytes()
    }
}

/// The shortest drain the hot source's budget allows: its last window opens
/// `(ceil(events / limit) - 1)` windows after its first request.
pub fn theoretical_min_seconds() -> f64 {
    (HOT_EVENTS.div_ceil(ILERT_LIMIT) - 1) as f64 * ILERT_WINDOW_SECONDS
}

/// Every event of the scenario, ordered by send time; the index is the event's id.
fn plan() -> Vec<Planned> {
    let mut plan: Vec<Planned> = (0..HOT_EVENTS)
        .map(|key| Planned {
            at: Duration::from_secs_f64(key as f64 * 60.0 / HOT_PER_MINUTE),
            key,
            seq: 0,
        })
        .collect();
    let until = Duration::from_secs_f64(theoretical_min_seconds());
    let stagger = QUIET_EVERY / QUIET_SOURCES as u32;
    for source in 0..QUIET_SOURCES {
        let mut at = stagger * source as u32;
        let mut seq = 0;
        while at < until {
            plan.push(Planned {
                at,
                key: QUIET_KEY_BASE + source,
                seq,
            });
            at += QUIET_EVERY;
            seq += 1;
        }
    }
    plan.sort_by_key(|p| p.at);
    plan
}

pub async fn run(agent_binary: &std::path::Path) -> Result<Row> {
    const NAME: &str = "storm";
    let tansu =
        Tansu::start().context("cannot start tansu (scripts/install-test-deps installs it)")?;
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = super::stand_in(Behaviour {
        latency_ms: LATENCY_MS,
        rate_limit: Some(RateLimit {
            per_key: ILERT_LIMIT as u32,
            window_ms: (ILERT_WINDOW_SECONDS * 1000.0) as u64,
        }),
        ..Behaviour::default()
    })
    .await?;
    let topic = format!("bench-{NAME}");
    crate::kafka::ensure_topic(&bootstrap, &topic, PARTITIONS).await?;
    let producer = crate::kafka::producer_with_linger(&bootstrap, PRODUCER_LINGER_MS)?;
    let mut args = kafka_args(&bootstrap, &topic, "earliest");
    args.extend(["--kafka_property", "fetch.wait.max.ms=5"]);
    let mut agent = AgentRun::start(agent_binary, &stand_in, &args)?;
    super::kafka::warm_up_through(&mut agent, &stand_in, &producer, &topic, NAME).await?;
    let plan = plan();
    eprintln!(
        "{NAME}: agent ready; {HOT_EVENTS} events for one integration key at \
         {HOT_PER_MINUTE}/min beside {QUIET_SOURCES} keys at 10/min, {} events in all",
        plan.len()
    );
    produce_on_schedule(&producer, &topic, &plan).await?;
    let timeout = Duration::from_secs(120);
    let (mut row, requests) = agent
        .finish_with_log(NAME, &stand_in, plan.len(), timeout, LATENCY_MS)
        .await?;

    let (mut quiet_latencies, mut hot_first, mut hot_last) = (Vec::new(), u64::MAX, 0);
    for r in requests.iter().filter(|r| (200..300).contains(&r.status)) {
        let Some(details) = bench_details(r.json.as_ref()) else {
            continue;
        };
        let key = details["key"].as_u64().unwrap_or(u64::MAX) as usize;
        if key < QUIET_KEY_BASE {
            hot_first = hot_first.min(r.received_at_ms);
            hot_last = hot_last.max(r.received_at_ms);
        } else if let Some(sent) = details["sentMs"].as_u64() {
            quiet_latencies.push(r.received_at_ms.saturating_sub(sent));
        }
    }
    quiet_latencies.sort_unstable();
    let min = theoretical_min_seconds();
    let drain = hot_last.saturating_sub(hot_first) as f64 / 1000.0;
    row.p50_ms = percentile(&quiet_latencies, 0.50);
    row.p99_ms = percentile(&quiet_latencies, 0.99);
    row.theoretical_min_seconds = Some(min);
    row.seconds = drain;
    row.notes.push(format!(
        "the other {QUIET_SOURCES} keys, end to end: p50 {} ms, p99 {} ms over {} events",
        row.p50_ms,
        row.p99_ms,
        quiet_latencies.len()
    ));
    row.notes.push(format!(
        "hot key: {HOT_EVENTS} events over {HOT_EVENTS} alert keys at {HOT_PER_MINUTE}/min, \
         drained in {drain:.1} s against a minimum of {min:.0} s ({:.3}x); 429s {} of {} requests",
        drain / min,
        row.status_429,
        row.requests
    ));
    drop(tansu);
    Ok(row)
}

/// Sends each planned event at its time (stamped just before it is handed over).
async fn produce_on_schedule(
    producer: &FutureProducer,
    topic: &str,
    plan: &[Planned],
) -> Result<()> {
    let started = Instant::now();
    let mut pending = VecDeque::new();
    for (id, event) in plan.iter().enumerate() {
        tokio::time::sleep_until(started + event.at).await;
        let (key, payload) = (event.alert_key(), event.payload(id));
        let record = FutureRecord::<str, [u8]>::to(topic)
            .key(&key)
            .payload(&payload);
        let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
        pending.push_back(delivery);
        while pending.len() > 100 {
            if let Some(oldest) = pending.pop_front() {
                check(oldest.await)?;
            }
        }
    }
    for delivery in pending {
        check(delivery.await)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_puts_the_hot_key_ten_times_over_budget_beside_a_hundred_quiet_keys() {
        let plan = plan();
        let hot = plan.iter().filter(|p| p.hot()).count();
        assert_eq!(hot, HOT_EVENTS);
        assert_eq!(theoretical_min_seconds(), 300.0);
        let quiet = plan.len() - hot;
        assert_eq!(quiet, QUIET_SOURCES * 50, "10 a minute for five minutes");
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        let first_minute = plan
            .iter()
            .filter(|p| p.hot() && p.at < Duration::from_secs(60))
            .count();
        assert!(first_minute >= 10 * ILERT_LIMIT - 1 || first_minute == HOT_EVENTS);
    }
}
