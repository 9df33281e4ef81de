//! The soak's samples and verdict: one line per sample while it runs; at the end the loss
//! and dead-letter checks, a [`fit`](super::fit) per series and one summary.
//!
//! The limits (see the module docs of `fit` for how they combine):
//! - RSS: slope above 1 MiB/h and the last quarter's mean 2% (at least 0.5 MiB) above the
//!   first quarter's;
//! - open fds: slope above 1 per hour and the last quarter 10% (at least 3 fds) above the
//!   first (a connection pool that settles a few sockets higher is not a leak);
//! - SQLite file plus WAL: slope above 1 MiB/h and the last quarter 2% (at least 0.5 MiB)
//!   above the first. Dead letters stay in the file until purged, by design: this
//!   traffic makes about 0.2 MB of them an hour per agent, inside the limit, while a queue
//!   that kept delivered rows would grow by about 50 MB an hour.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::Config;
use super::agents::{Agent, AgentSample, metric};
use super::fit::{Limit, Verdict, judge};
use super::sample::Sample;
use super::tally::{Tally, Totals};
use super::traffic::{Counters, Shape, Source, dead_letters_below, valid_below};

const RSS: Limit = Limit {
    slope_per_hour: 1.0,
    margin_abs: 0.5,
    margin_rel: 0.02,
};
const FDS: Limit = Limit {
    slope_per_hour: 1.0,
    margin_abs: 3.0,
    margin_rel: 0.1,
};
const SQLITE: Limit = RSS;

/// What one source sent and what became of it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceResult {
    pub source: &'static str,
    pub sent: u64,
    pub valid: u64,
    pub delivered: u64,
    pub missing: u64,
    pub dead_letters_expected: u64,
    pub dead_letters_written: f64,
    pub retried: u64,
    pub given_up: u64,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub started_at: String,
    pub duration_seconds: f64,
    pub interval_seconds: f64,
    pub shape: Shape,
    pub latency_ms: u64,
    pub warmup_seconds: f64,
    pub samples: Vec<Sample>,
    pub sources: Vec<SourceResult>,
    pub totals: Totals,
    /// Seconds from the senders' stop until every valid message had arrived.
    pub drain_seconds: Option<f64>,
    pub verdicts: Vec<Verdict>,
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn new(config: &Config) -> Outcome {
        let started_at = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Outcome {
            started_at,
            duration_seconds: config.duration.as_secs_f64(),
            interval_seconds: config.interval.as_secs_f64(),
            shape: config.shape,
            latency_ms: config.latency_ms,
            warmup_seconds: config.duration.as_secs_f64() * config.warmup_fraction,
            samples: Vec::new(),
            sources: Vec::new(),
            totals: Totals::default(),
            drain_seconds: None,
            verdicts: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The loss, dead-letter and growth checks, after the drain.
    pub async fn finish(
        &mut self,
        agents: &[&Agent],
        client: &reqwest::Client,
        counters: &[Arc<Counters>],
        acked: &[Arc<AtomicU64>],
        tally: &Tally,
        drain_seconds: Option<f64>,
    ) {
        self.drain_seconds = drain_seconds;
        self.totals = tally.totals();
        let metrics_a = agents[0].metrics(client).await.unwrap_or_default();
        let metrics_b = agents[1].metrics(client).await.unwrap_or_default();
        let writes = "ilagent_dead_letter_writes_total";
        for (i, source) in Source::ALL.into_iter().enumerate() {
            let c = &counters[i];
            let next = Counters::get(&c.next);
            let valid = valid_below(next).count() as u64;
            let missing = tally.missing(source, valid_below(next)).len() as u64;
            let written = match source {
                Source::Kafka => metric(&metrics_a, writes, Some(("source", "kafka"))),
                Source::MqttDirect => metric(&metrics_a, writes, Some(("source", "mqtt"))),
                Source::MqttBuffered => metric(&metrics_b, writes, Some(("source", "mqtt"))),
                Source::Proxy => metric(&metrics_a, writes, Some(("source", "http"))),
            };
            let result = SourceResult {
                source: source.name(),
                sent: Counters::get(&c.sent),
                valid,
                delivered: self.totals.delivered[i],
                missing,
                dead_letters_expected: dead_letters_below(source, next),
                dead_letters_written: written,
                retried: Counters::get(&c.retried),
                given_up: Counters::get(&c.given_up),
            };
            if missing > 0 {
                self.failures.push(format!(
                    "{}: {missing} of {valid} valid messages missing",
                    source.name()
                ));
            }
            if written < result.dead_letters_expected as f64 {
                self.failures.push(format!(
                    "{}: {written} dead letters written, {} expected",
                    source.name(),
                    result.dead_letters_expected
                ));
            }
            if result.given_up > 0 {
                self.failures.push(format!(
                    "proxy: {} events refused 50 times",
                    result.given_up
                ));
            }
            self.sources.push(result);
        }
        for (i, source) in [Source::MqttDirect, Source::MqttBuffered]
            .into_iter()
            .enumerate()
        {
            let (sent, ok) = (
                Counters::get(&counters[source.index()].sent),
                acked[i].load(Ordering::Relaxed),
            );
            if ok < sent {
                self.failures.push(format!(
                    "{}: the broker acknowledged {ok} of {sent} publishes",
                    source.name()
                ));
            }
        }
        if self.totals.lagged > 0 {
            self.failures.push(format!(
                "the stand-in's feed lagged by {} requests: the loss check is incomplete",
                self.totals.lagged
            ));
        }
        if drain_seconds.is_none() {
            self.failures
                .push("the agents did not deliver everything within the drain timeout".into());
        }
        self.judge();
    }

    fn judge(&mut self) {
        for (a, name) in ["a", "b"].into_iter().enumerate() {
            let series = |f: fn(&AgentSample) -> f64| -> Vec<(f64, f64)> {
                self.samples
                    .iter()
                    .map(|s| (s.t_seconds, f(&s.agents[a])))
                    .collect()
            };
            let w = self.warmup_seconds;
            let verdicts = [
                judge(
                    &format!("agent {name} RSS"),
                    "MiB",
                    &series(|s| s.rss_mib),
                    w,
                    RSS,
                ),
                judge(
                    &format!("agent {name} allocated"),
                    "MiB",
                    &self
                        .samples
                        .iter()
                        .filter_map(|s| Some((s.t_seconds, s.agents[a].allocated_mib?)))
                        .collect::<Vec<_>>(),
                    w,
                    RSS,
                ),
                judge(
                    &format!("agent {name} open fds"),
                    "",
                    &series(|s| s.fds),
                    w,
                    FDS,
                ),
                judge(
                    &format!("agent {name} SQLite+WAL"),
                    "MiB",
                    &series(|s| s.sqlite_mib),
                    w,
                    SQLITE,
                ),
            ];
            for verdict in verdicts {
                if verdict.grows {
                    self.failures
                        .push(format!("{}: {}", verdict.series, verdict.reason));
                }
                self.verdicts.push(verdict);
            }
        }
    }

    /// The summary: one line per series, per source, and the verdict.
    pub fn print(&self) {
        for verdict in &self.verdicts {
            println!("{}", verdict.line());
        }
        for s in &self.sources {
            println!(
                "{:<14} sent {} valid {} delivered {} missing {} dead letters {}/{} expected, retried {}",
                s.source,
                s.sent,
                s.valid,
                s.delivered,
                s.missing,
                s.dead_letters_written,
                s.dead_letters_expected,
                s.retried
            );
        }
        let drain = self
            .drain_seconds
            .map_or("not drained".into(), |s| format!("{s:.1} s"));
        let (delivered, missing): (u64, u64) = (
            self.sources.iter().map(|s| s.delivered).sum(),
            self.sources.iter().map(|s| s.missing).sum(),
        );
        println!(
            "soak {}: started {}, {:.0} min, {} samples; {delivered} delivered, {missing} lost, {} duplicates, {} 429s, {} heartbeats; drained in {drain}",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.started_at,
            self.duration_seconds / 60.0,
            self.samples.len(),
            self.totals.duplicates,
            self.totals.status_429,
            self.totals.heartbeats,
        );
        for failure in &self.failures {
            println!("  failure: {failure}");
        }
    }
}
