//! `latency-steady`: a steady 500 events/s for 30 s through Kafka (3 partitions, 100 keys)
//! into a stand-in that adds no latency: what latency does the agent add?
//!
//! The agent is started first and warmed up (warm-up events are produced until one
//! arrives, so the consumer group has joined and every partition is assigned). Then the
//! events are produced on a fixed schedule (event `i` at `i / rate` seconds), each stamped
//! just before it is handed to the producer. The row's p50/p99 are end to end: producer
//! (including its linger) -> tansu -> agent -> stand-in.
//!
//! What the agent adds is measured per event against a bare consumer ([`reference`]) that
//! reads the same partitions at the same time with the agent's consumer settings: the
//! event's arrival at the stand-in minus its arrival at that consumer. That figure is the
//! one the target (p99 < 20 ms) is checked against.
//!
//! Three settings keep tansu, not the agent, from dominating (all measured here with a
//! bare consumer alone):
//! - `fetch.wait.max.ms=5` for the agent and the bare consumer. tansu answers a waiting
//!   fetch when the wait is over, not when data arrives: with librdkafka's default of
//!   500 ms a bare consumer sees p50 127 ms, p99 253 ms at this rate. (Kafka answers as
//!   soon as `fetch.min.bytes`, 1, is there.) It also sets the noise of the per-event
//!   difference: each consumer sees an event at the end of its own wait, so the
//!   difference is spread over +-5 ms even for an agent that adds nothing.
//! - `linger.ms=20` for the producer. tansu's fetches slow down with the number of record
//!   batches in its in-memory log: one batch per event (`linger.ms=0`) took a bare
//!   consumer from p50 3 ms to 30 ms within 30 s, 5 ms from 7 to 10 ms; with 20 ms it
//!   stays flat (p50 14 ms, p99 25 ms, the linger included). The linger is before both
//!   consumers, so it is in the end-to-end figures but not in what the agent adds.
//! - The bare consumer is assigned the partitions (no group) and fetches just what the
//!   agent fetches; it doubles tansu's work, which is why the batching matters.
//!
//! [`reference`]: crate::reference

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RecordedRequest};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::Tansu;
use tokio::time::{Instant, MissedTickBehavior};

use super::AgentRun;
use super::kafka::kafka_args;
use crate::event::{Stream, bench_details, warmup_event};
use crate::kafka::check;
use crate::reference::{Arrivals, ReferenceConsumer};
use crate::report::{Row, percentile};

/// The consumer settings the reference consumer shares with the agent (the agent's own
/// defaults plus what the scenario passes it).
const CONSUMER_PROPERTIES: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "8192"),
    ("max.partition.fetch.bytes", "262144"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("fetch.wait.max.ms", "5"),
];

/// The producer batches for this long: fewer record batches keep tansu's fetches fast
/// (see the module docs).
const PRODUCER_LINGER_MS: u32 = 20;

/// Where the bare consumer's warm-up goes.
const REFERENCE_PARTITION: i32 = 0;

/// How often the producer loop wakes to send what is due.
const TICK: Duration = Duration::from_millis(2);

pub struct LatencySteady {
    pub name: &'static str,
    pub rate_per_second: usize,
    pub seconds: usize,
    pub partitions: i32,
    pub stream: Stream,
}

pub const LATENCY_STEADY: LatencySteady = LatencySteady {
    name: "latency-steady",
    rate_per_second: 500,
    seconds: 30,
    partitions: 3,
    stream: Stream::keys(100),
};

impl LatencySteady {
    pub async fn run(&self, agent_binary: &std::path::Path) -> Result<Row> {
        let tansu =
            Tansu::start().context("cannot start tansu (scripts/install-test-deps installs it)")?;
        let bootstrap = tansu.bootstrap_servers();
        let stand_in = super::stand_in(Behaviour::default()).await?;
        let topic = format!("bench-{}", self.name);
        crate::kafka::ensure_topic(&bootstrap, &topic, self.partitions).await?;
        let producer = crate::kafka::producer_with_linger(&bootstrap, PRODUCER_LINGER_MS)?;
        let reference =
            ReferenceConsumer::start(&bootstrap, &topic, self.partitions, CONSUMER_PROPERTIES)?;
        let mut args = kafka_args(&bootstrap, &topic, "earliest");
        args.extend([
            "--kafka_property",
            "fetch.wait.max.ms=5",
            "--rate_limit_events",
            "0",
        ]);
        let mut agent = AgentRun::start(agent_binary, &stand_in, &args)?;
        super::kafka::warm_up_through(&mut agent, &stand_in, &producer, &topic, self.name).await?;
        // One warm-up on a partition the bare consumer reads: it is reading once it sees it.
        let payload = warmup_event(usize::MAX);
        let record = FutureRecord::<str, [u8]>::to(&topic)
            .partition(REFERENCE_PARTITION)
            .payload(&payload)
            .key("warmup");
        let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
        check(delivery.await)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while reference.warmups_seen() == 0 {
            if Instant::now() >= deadline {
                anyhow::bail!("{}: the bare consumer never read its partition", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the warm-up's commit and any rebalance settle before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let total = self.rate_per_second * self.seconds;
        eprintln!(
            "{}: agent ready; producing {} events/s for {} s",
            self.name, self.rate_per_second, self.seconds
        );
        let lag = self.produce_paced(&producer, &topic, total).await?;
        let (mut row, requests) = agent
            .finish_with_log(self.name, &stand_in, total, Duration::from_secs(60), 0)
            .await?;
        let arrivals = reference.finish()?;
        let mut lines: Vec<String> = arrivals
            .iter()
            .map(|(id, at)| format!("{id},{at}"))
            .collect();
        lines.sort_unstable();
        crate::report::dump_text(
            &format!("{}-bare-consumer.csv", self.name),
            &format!("id,received_ms\n{}\n", lines.join("\n")),
        );
        let c = compare(&requests, &arrivals, total);
        row.added_p50_ms = Some(percentile(&c.added, 0.50));
        row.added_p99_ms = Some(percentile(&c.added, 0.99));
        row.notes.push(format!(
            "{} events/s for {} s through Kafka ({} partitions, {} keys), fetch.wait.max.ms=5; \
             producer linger {PRODUCER_LINGER_MS} ms; it fell behind its schedule by at most {} ms",
            self.rate_per_second,
            self.seconds,
            self.partitions,
            self.stream.keys,
            lag.as_millis()
        ));
        row.notes.push(format!(
            "bare consumer beside the agent (producer + tansu + fetch): p50 {} ms, p99 {} ms",
            percentile(&c.broker, 0.50),
            percentile(&c.broker, 0.99),
        ));
        row.notes.push(format!(
            "added by the agent per event (stand-in arrival - bare consumer arrival, {} \
             events): p50 {} ms, p99 {} ms; not counting the wait for the same key's previous \
             event (per-key order, after a broker burst): p50 {} ms, p99 {} ms",
            c.added.len(),
            percentile(&c.added, 0.50),
            percentile(&c.added, 0.99),
            percentile(&c.own, 0.50),
            percentile(&c.own, 0.99)
        ));
        drop(tansu);
        Ok(row)
    }

    /// Produces `total` events, event `i` due at `i / rate` s; returns how far the loop fell
    /// behind its schedule at worst.
    async fn produce_paced(
        &self,
        producer: &FutureProducer,
        topic: &str,
        total: usize,
    ) -> Result<Duration> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        let rate = self.rate_per_second as f64;
        let (mut next, mut worst_lag) = (0usize, Duration::ZERO);
        let mut pending = VecDeque::new();
        while next < total {
            ticker.tick().await;
            let elapsed = started.elapsed();
            let due = ((elapsed.as_secs_f64() * rate) as usize + 1).min(total);
            if next < due {
                let scheduled = Duration::from_secs_f64(next as f64 / rate);
                worst_lag = worst_lag.max(elapsed.saturating_sub(scheduled));
            }
            while next < due {
                let (key, payload) = self.stream.event(next);
                let record = FutureRecord::<str, [u8]>::to(topic)
                    .key(&key)
                    .payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => pending.push_back(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        break;
                    }
                    Err((error, _)) => anyhow::bail!("produce failed: {error}"),
                }
                next += 1;
            }
            // Reap finished delivery reports so the queue of futures stays short.
            while pending.len() > 1_000 {
                if let Some(oldest) = pending.pop_front() {
                    check(oldest.await)?;
                }
            }
        }
        for delivery in pending {
            check(delivery.await)?;
        }
        Ok(worst_lag)
    }
}

/// What [`compare`] finds, each sorted.
struct Comparison {
    /// Send time to arrival at the bare consumer.
    broker: Vec<u64>,
    /// Arrival at the stand-in minus arrival at the bare consumer.
    added: Vec<i64>,
    /// The same, counted from when the event could go at the earliest: not before the
    /// same key's previous event had arrived at the stand-in (per-key order).
    own: Vec<i64>,
}

fn compare(requests: &[RecordedRequest], arrivals: &Arrivals, expected: usize) -> Comparison {
    // First arrival at the stand-in per id, with its key and sequence.
    let mut first: HashMap<u64, (u64, u64, u64, u64)> = HashMap::new();
    for r in requests.iter().filter(|r| (200..300).contains(&r.status)) {
        let Some(details) = bench_details(r.json.as_ref()) else {
            continue;
        };
        let field = |name: &str| details[name].as_u64();
        let (Some(id), Some(key), Some(seq), Some(sent)) =
            (field("id"), field("key"), field("seq"), field("sentMs"))
        else {
            continue;
        };
        if id < expected as u64 {
            first
                .entry(id)
                .or_insert((r.received_at_ms, key, seq, sent));
        }
    }
    let by_key_seq: HashMap<(u64, u64), u64> = first
        .values()
        .map(|(at, key, seq, _)| ((*key, *seq), *at))
        .collect();
    let mut comparison = Comparison {
        broker: Vec::new(),
        added: Vec::new(),
        own: Vec::new(),
    };
    for (id, (at, key, seq, sent)) in &first {
        let Some(&consumed) = arrivals.get(id) else {
            continue;
        };
        comparison.broker.push(consumed.saturating_sub(*sent));
        comparison.added.push(*at as i64 - consumed as i64);
        let previous = seq
            .checked_sub(1)
            .and_then(|p| by_key_seq.get(&(*key, p)).copied())
            .unwrap_or(0);
        comparison
            .own
            .push(*at as i64 - consumed.max(previous) as i64);
    }
    comparison.broker.sort_unstable();
    comparison.added.sort_unstable();
    comparison.own.sort_unstable();
    comparison
}
