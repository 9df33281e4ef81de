//! The benchmark scenarios, one module per source, and what they share: starting the
//! release agent against the in-process stand-in, waiting until every event arrived, and
//! turning the stand-in's log and /proc into a row.
//!
//! | scenario             | definition                                                         |
//! |----------------------|--------------------------------------------------------------------|
//! | `ceiling`            | 50,000 events posted straight to the stand-in, 100 streams (keys)  |
//! | `ceiling-50ms`       | the same with 20,000 events, stand-in +50 ms: the 50 ms reference  |
//! | `kafka-0ms`          | 50,000-event backlog, 3 partitions, 100 keys, no added latency     |
//! | `kafka-0ms-routes`   | `kafka-0ms` mapped by a route with jq expressions (PLC-like)        |
//! | `kafka-0ms-dedupe`   | `kafka-0ms-routes` with an idempotency id per event (`dedupe`)      |
//! | `kafka-50ms`         | 20,000-event backlog, 3 partitions, 100 keys, stand-in +50 ms      |
//! | `kafka-ratelimited`  | 3,000 events, 100 alert keys on 25 integration keys, 50/min each   |
//! | `mqtt-qos1-50ms`     | 10,000 events, acked in order after delivery or spill, +50 ms      |
//! | `mqtt-buffered-50ms` | 10,000 events into the SQLite buffer (`--mqtt_buffer`), +50 ms     |
//! | `proxy-50clients`    | 20,000 events posted by 50 clients to the agent's `-p` proxy       |
//! | `latency-steady`     | 500 events/s for 30 s through Kafka, no added latency              |
//! | `storm`              | one key 10x over ilert's budget beside 100 keys at 10/min, +50 ms  |
//! | `backlog`            | 1,000,000-event backlog over 1,000 integration keys: RSS at 100k and 1M (on request only) |
//!
//! Every scenario starts its own brokers and stand-in and checks per-key order at the
//! stand-in; the sizes keep the whole suite near 11 minutes on 2 cores (`storm` alone takes
//! about six: its hot key's budget allows no shorter drain).

pub mod backlog;
pub mod ceiling;
pub mod kafka;
pub mod latency;
pub mod mqtt;
pub mod proxy;
pub mod storm;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RecordedRequest, StandIn};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::agent_process::{AgentProcess, load_average_1m};
use crate::collect::wait_for_all;
use crate::report::{Row, analyse};

/// Every scenario, in the order the suite runs them.
pub const ALL: &[&str] = &[
    "ceiling",
    "ceiling-50ms",
    "kafka-0ms",
    "kafka-0ms-routes",
    "kafka-0ms-dedupe",
    "kafka-50ms",
    "kafka-ratelimited",
    "mqtt-qos1-50ms",
    "mqtt-buffered-50ms",
    "proxy-50clients",
    "latency-steady",
    "storm",
    backlog::NAME,
];

/// Scenarios that run only when named (`--scenario backlog`): they take too long for the
/// whole suite.
pub const ON_REQUEST: &[&str] = &[backlog::NAME];

/// Runs scenario `name` against the agent binary.
pub async fn run(name: &str, agent: &Path) -> Result<Row> {
    let load = load_average_1m();
    let mut row = match name {
        "ceiling" => ceiling::CEILING.run().await?,
        "ceiling-50ms" => ceiling::CEILING_50MS.run().await?,
        "kafka-0ms" => kafka::KAFKA_0MS.run(agent).await?,
        "kafka-0ms-routes" => kafka::KAFKA_0MS_ROUTES.run(agent).await?,
        "kafka-0ms-dedupe" => kafka::KAFKA_0MS_DEDUPE.run(agent).await?,
        "kafka-50ms" => kafka::KAFKA_50MS.run(agent).await?,
        "kafka-ratelimited" => kafka::KAFKA_RATELIMITED.run(agent).await?,
        "mqtt-qos1-50ms" => mqtt::QOS1_50MS.run(agent).await?,
        "mqtt-buffered-50ms" => mqtt::BUFFERED_50MS.run(agent).await?,
        "proxy-50clients" => proxy::PROXY_50CLIENTS.run(agent).await?,
        "latency-steady" => latency::LATENCY_STEADY.run(agent).await?,
        "storm" => storm::run(agent).await?,
        backlog::NAME => backlog::run(agent).await?,
        other => anyhow::bail!("unknown scenario {other:?}; known: {}", ALL.join(", ")),
    };
    row.load_average_1m = load;
    Ok(row)
}

/// Flags added to every agent's command line (`ilagent-bench --agent-arg`), to try a
/// setting without changing the agent.
static EXTRA_AGENT_ARGS: OnceLock<Vec<String>> = OnceLock::new();

/// Sets the flags [`AgentRun::start`] appends after each scenario's own.
pub fn set_extra_agent_args(args: Vec<String>) {
    let _ = EXTRA_AGENT_ARGS.set(args);
}

/// The stand-in, in this process, on a free port.
pub async fn stand_in(behaviour: Behaviour) -> Result<StandIn> {
    StandIn::start_with("127.0.0.1:0".parse()?, behaviour)
        .await
        .context("cannot start the ilert stand-in")
}

/// The agent of one scenario: its process, its temp dir (SQLite file, log).
pub struct AgentRun {
    // Declared before the dir, so the agent is gone before its files are removed.
    pub process: AgentProcess,
    /// Holds the SQLite file and the log; removed on drop.
    _dir: TempDir,
}

impl AgentRun {
    /// Starts `ilagent -f <tmp>/agent.db3 daemon --shutdown_timeout 5s <args> <extra args>`
    /// pointed at the stand-in.
    pub fn start(binary: &Path, stand_in: &StandIn, args: &[&str]) -> Result<AgentRun> {
        let dir = tempfile::Builder::new()
            .prefix("ilagent-bench-")
            .tempdir()
            .context("creating a temp dir for the agent")?;
        let db = dir.path().join("agent.db3");
        let mut all: Vec<String> = vec![
            "-f".into(),
            db.display().to_string(),
            "daemon".into(),
            "--shutdown_timeout".into(),
            "5s".into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(EXTRA_AGENT_ARGS.get().into_iter().flatten().cloned());
        let url = stand_in.url();
        let envs = vec![
            ("ILERT_API_URL".to_string(), url.clone()),
            ("ILAGENT_ILERT_BEAT_URL".to_string(), url),
        ];
        let process = AgentProcess::start(binary, &all, &envs, &dir.path().join("agent.log"))?;
        Ok(AgentRun { process, _dir: dir })
    }

    pub fn alive(&mut self) -> bool {
        self.process.exit_status().is_none()
    }

    /// Fails with the log tail when the agent has exited.
    pub fn ensure_alive(&mut self) -> Result<()> {
        match self.process.exit_status() {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "the agent exited ({status}); its log ends with:\n{}",
                self.process.log_tail()
            ),
        }
    }

    /// Waits (until `timeout`) for all `expected` events, computes the row, reads the
    /// agent's peak RSS and CPU time and stops it.
    pub async fn finish(
        self,
        name: &str,
        stand_in: &StandIn,
        expected: usize,
        timeout: Duration,
        added_latency_ms: u64,
    ) -> Result<Row> {
        let (row, _) = self
            .finish_with_log(name, stand_in, expected, timeout, added_latency_ms)
            .await?;
        Ok(row)
    }

    /// [`AgentRun::finish`], also returning the stand-in's request log.
    pub async fn finish_with_log(
        mut self,
        name: &str,
        stand_in: &StandIn,
        expected: usize,
        timeout: Duration,
        added_latency_ms: u64,
    ) -> Result<(Row, Vec<RecordedRequest>)> {
        let deadline = Instant::now() + timeout;
        let requests = wait_for_all(stand_in, expected, deadline, || {
            self.process.exit_status().is_none()
        })
        .await;
        crate::report::dump(name, &requests);
        let mut row = analyse(name, expected, &requests, added_latency_ms);
        if row.missing > 0 {
            eprintln!(
                "{name}: {} of {expected} events missing; the agent's log ends with:\n{}",
                row.missing,
                self.process.log_tail()
            );
        }
        if let (Some(avg), Some(max)) = (row.avg_in_service, row.max_in_service) {
            row.notes.push(format!(
                "requests in service at the stand-in at once: avg {avg:.1}, max {max}"
            ));
        }
        row.peak_rss_mb = self.process.peak_rss_mb();
        row.rss_at_end_mb = self.process.rss_mb();
        row.cpu_seconds = self.process.cpu_seconds();
        self.process.stop();
        Ok((row, requests))
    }
}

/// `messages / rate` seconds, with room for a slow machine: the wait's deadline.
pub fn generous_timeout(messages: usize, expected_rate: f64) -> Duration {
    Duration::from_secs_f64(60.0 + 4.0 * messages as f64 / expected_rate.max(1.0))
}

/// The per-key order bound: `keys` keys delivered one request at a time at `latency_ms`.
pub fn per_key_bound(keys: usize, latency_ms: u64) -> Option<f64> {
    (latency_ms > 0).then(|| keys as f64 * 1000.0 / latency_ms as f64)
}
