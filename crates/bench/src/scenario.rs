//! Benchmark scenarios: a backlog of events in Kafka, the agent started against it, the
//! stand-in counting what arrives.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RateLimit, StandIn};
use serde_json::json;
use testkit::Tansu;

use crate::agent_process::AgentProcess;
use crate::report::{Row, analyse};

/// A Kafka backlog scenario.
pub struct KafkaBacklog {
    pub name: &'static str,
    pub messages: usize,
    pub partitions: i32,
    pub keys: usize,
    pub latency_ms: u64,
    /// ilert's per-key limit enforced by the stand-in, and the agent's limiter left on.
    pub rate_limited: bool,
}

pub const KAFKA_SCENARIOS: &[KafkaBacklog] = &[
    KafkaBacklog {
        name: "kafka-0ms",
        messages: 50_000,
        partitions: 3,
        keys: 100,
        latency_ms: 0,
        rate_limited: false,
    },
    KafkaBacklog {
        name: "kafka-50ms",
        messages: 20_000,
        partitions: 3,
        keys: 100,
        latency_ms: 50,
        rate_limited: false,
    },
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The event for message `id`: key and per-key sequence for order checks, send time for latency.
pub fn event_payload(id: usize, keys: usize) -> (String, Vec<u8>) {
    let (key, seq) = (id % keys, id / keys);
    let payload = json!({
        "integrationKey": "il1api-bench",
        "eventType": "ALERT",
        "summary": format!("bench event {id}"),
        "alertKey": format!("key-{key}"),
        "customDetails": {"id": id, "key": key, "seq": seq, "sentMs": now_ms()}
    });
    (format!("key-{key}"), payload.to_string().into_bytes())
}

impl KafkaBacklog {
    pub async fn run(&self, agent_binary: &Path) -> Result<Row> {
        let tansu =
            Tansu::start().context("cannot start tansu (scripts/install-test-deps installs it)")?;
        let bootstrap = tansu.bootstrap_servers();
        let behaviour = Behaviour {
            latency_ms: self.latency_ms,
            rate_limit: self.rate_limited.then_some(RateLimit {
                per_key: 50,
                window_ms: 60_000,
            }),
            ..Behaviour::default()
        };
        let stand_in = StandIn::start_with("127.0.0.1:0".parse()?, behaviour).await?;
        let topic = format!("bench-{}", self.name);
        crate::kafka::ensure_topic(&bootstrap, &topic, self.partitions).await?;
        let producer = crate::kafka::producer(&bootstrap)?;
        let keys = self.keys;
        let records = (0..self.messages).map(|id| {
            let (key, payload) = event_payload(id, keys);
            (Some(key), payload)
        });
        crate::kafka::produce_all(&producer, &topic, records, 1000).await?;
        eprintln!(
            "{}: {} events produced, starting the agent",
            self.name, self.messages
        );

        let mut args: Vec<String> = [
            "daemon",
            "--kafka_brokers",
            &bootstrap,
            "--kafka_group_id",
            "bench",
            "-e",
            &topic,
            "--kafka_auto_offset_reset",
            "earliest",
            "--kafka_property",
            "session.timeout.ms=6000",
            "--kafka_property",
            "heartbeat.interval.ms=500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !self.rate_limited {
            args.extend(["--rate_limit_events".to_string(), "0".to_string()]);
        }
        let envs = vec![("ILERT_API_URL".to_string(), stand_in.url())];
        let agent = AgentProcess::start(agent_binary, &args, &envs)?;
        let timeout = Duration::from_secs(120 + (self.messages as u64) / 100);
        let requests = stand_in.wait_for_requests(self.messages, timeout).await;
        // Let stragglers (duplicates) land before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let requests = if requests.len() >= self.messages {
            stand_in.requests()
        } else {
            requests
        };
        let mut row = analyse(self.name, self.messages, &requests);
        row.peak_rss_mb = agent.peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0);
        row.cpu_seconds = agent.cpu_seconds().unwrap_or(0.0);
        agent.stop();
        Ok(row)
    }
}
