//! Kafka backlog scenarios: the whole stream is produced to a fresh tansu broker first (in
//! order, keyed by alert key so each key stays on one partition), then the agent is
//! started with `--kafka_auto_offset_reset earliest` and drains it into the stand-in.
//! `seconds` runs from the first delivery, so the consumer-group join is not counted.

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RateLimit};
use testkit::Tansu;

use super::{AgentRun, generous_timeout, per_key_bound};
use crate::event::Stream;
use crate::report::Row;

/// ilert's event budget: requests per integration key per window.
const ILERT_LIMIT: u32 = 50;
const ILERT_WINDOW_MS: u64 = 60_000;

/// A Kafka backlog scenario.
pub struct KafkaBacklog {
    pub name: &'static str,
    pub messages: usize,
    pub partitions: i32,
    pub stream: Stream,
    pub latency_ms: u64,
    /// ilert's per-integration-key limit enforced by the stand-in, and the agent's own
    /// limiter left at its default (50 per 60 s); otherwise the limiter is off.
    pub rate_limited: bool,
    /// Mapped by a configured route with jq expressions ([`ROUTE`]) instead of the flags.
    pub routed: bool,
    /// The route also gives every event an idempotency id ([`DEDUPE`]): each is looked up
    /// and recorded in the SQLite file.
    pub deduped: bool,
}

/// The route of `kafka-0ms-routes`, as costly as the PLC example's (a condition, an event
/// type from a value, a summary from several fields, a priority, custom details with a
/// metadata field); it keeps the fields the benchmark reads (alert key, `customDetails`).
pub const ROUTE: &str = r#"
[[route]]
name = "bench"
source = "kafka"
topics = ["TOPIC"]
when = '.eventType != "ACK"'
[route.fields]
integration_key = '.integrationKey'
event_type = 'if .eventType == "CLEARED" then "RESOLVE" else "ALERT" end'
summary = '"\(.alertKey): \(.summary) (seq \(.customDetails.seq))"'
alert_key = '.alertKey'
priority = 'if .customDetails.key % 2 == 0 then "HIGH" else "LOW" end'
custom_details = '.customDetails + {partition: $partition}'
"#;

/// The idempotency id of `kafka-0ms-dedupe`: unique per event, so every event is looked
/// up and recorded and none is suppressed.
const DEDUPE: &str = r#"dedupe = '"\(.alertKey)/\(.customDetails.seq)"'
"#;

pub const KAFKA_0MS: KafkaBacklog = KafkaBacklog {
    name: "kafka-0ms",
    messages: 50_000,
    partitions: 3,
    stream: Stream::keys(100),
    latency_ms: 0,
    rate_limited: false,
    routed: false,
    deduped: false,
};

/// `kafka-0ms` mapped by a route with jq expressions: what expressions cost.
pub const KAFKA_0MS_ROUTES: KafkaBacklog = KafkaBacklog {
    name: "kafka-0ms-routes",
    routed: true,
    ..KAFKA_0MS
};

/// `kafka-0ms-routes` with an idempotency id per event: what deduplication costs.
pub const KAFKA_0MS_DEDUPE: KafkaBacklog = KafkaBacklog {
    name: "kafka-0ms-dedupe",
    deduped: true,
    ..KAFKA_0MS_ROUTES
};

pub const KAFKA_50MS: KafkaBacklog = KafkaBacklog {
    name: "kafka-50ms",
    messages: 20_000,
    partitions: 3,
    stream: Stream::keys(100),
    latency_ms: 50,
    rate_limited: false,
    routed: false,
    deduped: false,
};

/// 100 alert keys spread over 25 integration keys (ilert limits per integration key, so
/// with one key per alert key the 30 events each would never reach the limit): 120 events
/// per integration key, which takes three 50-event windows.
pub const KAFKA_RATELIMITED: KafkaBacklog = KafkaBacklog {
    name: "kafka-ratelimited",
    messages: 3_000,
    partitions: 3,
    stream: Stream {
        keys: 100,
        integration_keys: 25,
    },
    latency_ms: 0,
    rate_limited: true,
    routed: false,
    deduped: false,
};

impl KafkaBacklog {
    /// The shortest possible drain under ilert's limit, in seconds.
    ///
    /// Each integration key gets `E = messages / integration_keys` events; ilert accepts
    /// at most `B` (50) per key in a fixed window of `W` (60 s) that starts with the key's
    /// first request. So the key's last event cannot be accepted before
    /// `(ceil(E / B) - 1) * W` after its first: here (ceil(120 / 50) - 1) * 60 s = 120 s.
    /// All keys run in parallel, so that is also the minimum for the whole backlog
    /// (the time to send each window's burst is not counted: it is milliseconds).
    pub fn theoretical_min_seconds(&self) -> Option<f64> {
        if !self.rate_limited {
            return None;
        }
        let per_key = self.messages.div_ceil(self.stream.integration_keys.max(1));
        let windows = per_key.div_ceil(ILERT_LIMIT as usize);
        Some(windows.saturating_sub(1) as f64 * ILERT_WINDOW_MS as f64 / 1000.0)
    }

    pub async fn run(&self, agent_binary: &std::path::Path) -> Result<Row> {
        let tansu =
            Tansu::start().context("cannot start tansu (scripts/install-test-deps installs it)")?;
        let bootstrap = tansu.bootstrap_servers();
        let behaviour = Behaviour {
            latency_ms: self.latency_ms,
            rate_limit: self.rate_limited.then_some(RateLimit {
                per_key: ILERT_LIMIT,
                window_ms: ILERT_WINDOW_MS,
            }),
            ..Behaviour::default()
        };
        let stand_in = super::stand_in(behaviour).await?;
        let topic = format!("bench-{}", self.name);
        crate::kafka::ensure_topic(&bootstrap, &topic, self.partitions).await?;
        let producer = crate::kafka::producer(&bootstrap)?;
        let stream = self.stream;
        let records = (0..self.messages).map(|id| {
            let (key, payload) = stream.event(id);
            (Some(key), payload)
        });
        crate::kafka::produce_all(&producer, &topic, records, 1000).await?;
        eprintln!(
            "{}: {} events produced, starting the agent",
            self.name, self.messages
        );

        let mut args = kafka_args(&bootstrap, &topic, "earliest");
        if !self.rate_limited {
            args.extend(["--rate_limit_events", "0"]);
        }
        let config_dir = tempfile::tempdir()?;
        let config = config_dir.path().join("routes.toml");
        let config_text = config.display().to_string();
        if self.routed {
            let mut route = ROUTE.replace("TOPIC", &topic);
            if self.deduped {
                // Before `[route.fields]`: a key of the route itself.
                route = route.replace("[route.fields]", &format!("{DEDUPE}[route.fields]"));
            }
            std::fs::write(&config, route)?;
            args.extend(["--config", config_text.as_str()]);
        }
        let agent = AgentRun::start(agent_binary, &stand_in, &args)?;
        let expected_rate = match (self.theoretical_min_seconds(), self.latency_ms) {
            (Some(min), _) => self.messages as f64 / min.max(1.0),
            (None, 0) => 2_000.0,
            (None, ms) => self.stream.keys as f64 * 1000.0 / ms as f64 / 2.0,
        };
        let timeout = generous_timeout(self.messages, expected_rate);
        let mut row = agent
            .finish(
                self.name,
                &stand_in,
                self.messages,
                timeout,
                self.latency_ms,
            )
            .await?;
        row.bound_messages_per_second = per_key_bound(self.stream.keys, self.latency_ms);
        if let Some(bound) = row.bound_messages_per_second {
            row.notes.push(format!(
                "per-key order bound: {} keys x 1000/{} ms = {bound:.0} msg/s; reached {:.1}%",
                self.stream.keys,
                self.latency_ms,
                row.messages_per_second * 100.0 / bound
            ));
        }
        if let Some(min) = self.theoretical_min_seconds() {
            row.theoretical_min_seconds = Some(min);
            row.notes.push(format!(
                "{} events over {} integration keys, {ILERT_LIMIT}/{} s each: theoretical \
                 minimum {min:.0} s; drained in {:.1} s ({:.3}x); 429s {} of {} requests ({:.2}%)",
                self.messages,
                self.stream.integration_keys,
                ILERT_WINDOW_MS / 1000,
                row.seconds,
                row.seconds / min.max(f64::MIN_POSITIVE),
                row.status_429,
                row.requests,
                row.status_429_percent()
            ));
        }
        drop(tansu);
        Ok(row)
    }
}

/// Produces warm-up events to `topic` until one reaches the stand-in (the consumer group
/// has joined, every partition is assigned); fails with the agent's log tail if it exits.
pub async fn warm_up_through(
    agent: &mut AgentRun,
    stand_in: &ilert_standin::StandIn,
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    scenario: &str,
) -> Result<()> {
    let warmed = crate::collect::warm_up(
        stand_in,
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(90),
        || agent.alive(),
        |n| {
            let records = vec![(Some("warmup".to_string()), crate::event::warmup_event(n))];
            async move {
                crate::kafka::produce_all(producer, topic, records, 1).await?;
                Ok(())
            }
        },
    )
    .await;
    if let Err(error) = warmed {
        agent.ensure_alive()?;
        return Err(error.context(format!("{scenario}: the agent never became ready")));
    }
    Ok(())
}

/// The agent's flags for consuming `topic` from `bootstrap` as group `bench`, with the
/// session settings that make tansu's group join take seconds instead of ~20 s.
pub fn kafka_args<'a>(bootstrap: &'a str, topic: &'a str, reset: &'a str) -> Vec<&'a str> {
    vec![
        "--kafka_brokers",
        bootstrap,
        "--kafka_group_id",
        "bench",
        "-e",
        topic,
        "--kafka_auto_offset_reset",
        reset,
        "--kafka_property",
        "session.timeout.ms=6000",
        "--kafka_property",
        "heartbeat.interval.ms=500",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limited_minimum_is_two_windows() {
        assert_eq!(KAFKA_RATELIMITED.theoretical_min_seconds(), Some(120.0));
        assert_eq!(KAFKA_0MS.theoretical_min_seconds(), None);
    }
}
