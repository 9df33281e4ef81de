//! MQTT scenarios against a Mosquitto of the bench's own, with a known in-flight window.
//!
//! The broker is configured with `max_inflight_messages` = [`BROKER_WINDOW`] (Mosquitto's
//! default, stated explicitly so the bound is known) and an unlimited-enough queue
//! (`max_queued_messages`), so messages waiting behind the window are queued, not dropped.
//! The agent subscribes with QoS 1 (MQTT 3.1.1, persistent session); warm-up messages are
//! published until one arrives, so the subscription is in place. Then [`PUBLISHERS`]
//! connections publish the stream concurrently, as fast as their PUBACKs come back, each
//! owning a share of the alert keys so that every key's events are published in order.
//!
//! - `mqtt-qos1-50ms`: no buffer. The agent acknowledges in arrival order, after delivery
//!   or once a message that is slow to settle has been spilled to SQLite (at
//!   `--mqtt_max_unacked` unacknowledged messages or after `--mqtt_spill_after`), so the
//!   broker's window no longer bounds the rate: under this flood nearly every message is
//!   spilled, and the bound is per-key order, 100 keys / 50 ms = 2,000 msg/s, as with the
//!   buffer. The row measures that rate with acknowledgements in order (0 order
//!   violations expected).
//! - `mqtt-buffered-50ms`: `--mqtt_buffer` acknowledges on the SQLite write (the file on
//!   disk in a temp dir); the bound is per-key order: 100 keys / 50 ms = 2,000 msg/s.

use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::Behaviour;
use testkit::{Mosquitto, MosquittoConfig};
use tokio::task::JoinSet;

use super::{AgentRun, generous_timeout, per_key_bound};
use crate::collect::warm_up;
use crate::event::{Stream, warmup_event};
use crate::report::Row;

/// Mosquitto's `max_inflight_messages` in these scenarios.
pub const BROKER_WINDOW: usize = 20;
/// Concurrent publisher connections.
pub const PUBLISHERS: usize = 4;
const TOPIC: &str = "bench/events";
/// How long the publishers may take to get every PUBACK.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(120);

pub struct MqttScenario {
    pub name: &'static str,
    pub messages: usize,
    pub stream: Stream,
    pub latency_ms: u64,
    /// `--mqtt_buffer`: acknowledge on the SQLite write.
    pub buffered: bool,
}

pub const QOS1_50MS: MqttScenario = MqttScenario {
    name: "mqtt-qos1-50ms",
    messages: 10_000,
    stream: Stream::keys(100),
    latency_ms: 50,
    buffered: false,
};

pub const BUFFERED_50MS: MqttScenario = MqttScenario {
    name: "mqtt-buffered-50ms",
    messages: 10_000,
    stream: Stream::keys(100),
    latency_ms: 50,
    buffered: true,
};

impl MqttScenario {
    /// The scenario's theoretical limit in messages/s.
    pub fn bound(&self) -> Option<f64> {
        // Both modes: spilling (direct) or the buffer take the broker's window out of it.
        per_key_bound(self.stream.keys, self.latency_ms)
    }

    pub async fn run(&self, agent_binary: &std::path::Path) -> Result<Row> {
        let broker = Mosquitto::start(MosquittoConfig {
            extra: format!(
                "max_inflight_messages {BROKER_WINDOW}\nmax_queued_messages {}\n",
                self.messages * 2
            ),
            ..MosquittoConfig::default()
        })
        .context("cannot start mosquitto (scripts/install-test-deps installs it)")?;
        let port = broker.port();
        let stand_in = super::stand_in(Behaviour {
            latency_ms: self.latency_ms,
            ..Behaviour::default()
        })
        .await?;
        let port_arg = port.to_string();
        let mut args = vec![
            "-m",
            "127.0.0.1",
            "-q",
            &port_arg,
            "-n",
            "bench-agent",
            "-e",
            TOPIC,
            "--mqtt_qos",
            "1",
            "--rate_limit_events",
            "0",
        ];
        if self.buffered {
            args.push("--mqtt_buffer");
        }
        let mut agent = AgentRun::start(agent_binary, &stand_in, &args)?;
        let warmed = warm_up(
            &stand_in,
            Duration::from_millis(500),
            Duration::from_secs(60),
            || agent.alive(),
            |n| crate::mqtt::publish_one(port, format!("bench-warmup-{n}"), TOPIC, warmup_event(n)),
        )
        .await;
        if let Err(error) = warmed {
            agent.ensure_alive()?;
            return Err(error.context(format!("{}: the agent never became ready", self.name)));
        }
        eprintln!(
            "{}: agent subscribed; {PUBLISHERS} publishers sending {} events",
            self.name, self.messages
        );
        let started = std::time::Instant::now();
        let mut publishers = JoinSet::new();
        let (keys, per_key) = (
            self.stream.keys,
            self.messages.div_ceil(self.stream.keys.max(1)),
        );
        for p in 0..PUBLISHERS {
            let (stream, messages) = (self.stream, self.messages);
            let ids: Vec<usize> = (0..per_key)
                .flat_map(|seq| (p..keys).step_by(PUBLISHERS).map(move |k| seq * keys + k))
                .filter(|id| *id < messages)
                .collect();
            let count = ids.len();
            let payloads = ids.into_iter().map(move |id| stream.event(id).1);
            publishers.spawn(async move {
                crate::mqtt::publish_all(
                    port,
                    &format!("bench-publisher-{p}"),
                    TOPIC,
                    count,
                    payloads,
                    PUBLISH_TIMEOUT,
                )
                .await
            });
        }
        while let Some(result) = publishers.join_next().await {
            result.context("a publisher panicked")??;
        }
        let published = started.elapsed();
        let bound = self.bound();
        let timeout = generous_timeout(self.messages, bound.unwrap_or(2_000.0) / 2.0);
        let mut row = agent
            .finish(
                self.name,
                &stand_in,
                self.messages,
                timeout,
                self.latency_ms,
            )
            .await?;
        row.bound_messages_per_second = bound;
        row.notes.push(format!(
            "published by {PUBLISHERS} QoS 1 connections in {:.2} s ({:.0} msg/s acknowledged by \
             the broker)",
            published.as_secs_f64(),
            self.messages as f64 / published.as_secs_f64().max(1e-9)
        ));
        if let Some(bound) = bound {
            let what = format!(
                "per-key order bound {} keys x 1000/{} ms",
                self.stream.keys, self.latency_ms
            );
            row.notes.push(format!(
                "{what} = {bound:.0} msg/s; reached {:.1}%",
                row.messages_per_second * 100.0 / bound
            ));
        }
        drop(broker);
        Ok(row)
    }
}
