//! `ceiling`: what this machine can push through the HTTP leg alone, with no agent.
//!
//! A load generator in the bench process posts the Kafka scenarios' events straight to the
//! stand-in, at the concurrency the agent can reach with 100 alert keys: per-key order
//! allows one request per key at a time, so 100 streams (one per key, each waiting for its
//! 202 before the next event) over a keep-alive connection pool, to the path the Kafka
//! source uses (`/api/v1/events/kafka/{key}`) with the same body. The agent's
//! `--kafka_max_in_flight` of 128 is not reachable with 100 keys. Every other row reports
//! its messages/s as a ratio to this one.
//!
//! `ceiling-50ms` is the same load generator against the stand-in adding 50 ms (20,000
//! events): what a client with no overhead of its own reaches under per-key order at that
//! latency on this machine, the reference for the 50 ms rows (their theoretical bound is
//! 100 keys x 1000/50 ms = 2,000 msg/s).

use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::Behaviour;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::collect::wait_for_all;
use crate::event::{INTEGRATION_KEY, Stream};
use crate::report::{Row, analyse};

/// Attempts per event before the load generator gives up on it (the stand-in at 0 ms
/// answers 202; anything else is counted and retried).
const ATTEMPTS: usize = 5;

pub struct Ceiling {
    pub name: &'static str,
    pub messages: usize,
    pub keys: usize,
    pub latency_ms: u64,
}

pub const CEILING: Ceiling = Ceiling {
    name: "ceiling",
    messages: 50_000,
    keys: 100,
    latency_ms: 0,
};

pub const CEILING_50MS: Ceiling = Ceiling {
    name: "ceiling-50ms",
    messages: 20_000,
    keys: 100,
    latency_ms: 50,
};

impl Ceiling {
    pub async fn run(&self) -> Result<Row> {
        let name = self.name;
        let stand_in = super::stand_in(Behaviour {
            latency_ms: self.latency_ms,
            ..Behaviour::default()
        })
        .await?;
        let client = testkit::http_client()
            .pool_max_idle_per_host(self.keys)
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        let url = format!("{}/api/v1/events/kafka/{INTEGRATION_KEY}", stand_in.url());
        let stream = Stream::keys(self.keys);
        let per_key = self.messages.div_ceil(self.keys);
        eprintln!(
            "{name}: posting {} events from {} streams",
            self.messages, self.keys
        );
        let started = Instant::now();
        let mut streams = JoinSet::new();
        for key in 0..self.keys {
            let (client, url) = (client.clone(), url.clone());
            let ids: Vec<usize> = (0..per_key)
                .map(|seq| seq * self.keys + key)
                .filter(|id| *id < self.messages)
                .collect();
            streams.spawn(async move {
                let mut failures = 0usize;
                for id in ids {
                    for _ in 0..ATTEMPTS {
                        let (_, body) = stream.event(id);
                        match client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(response) if response.status().is_success() => break,
                            _ => failures += 1,
                        }
                    }
                }
                failures
            });
        }
        let mut failures = 0;
        while let Some(result) = streams.join_next().await {
            failures += result.context("a load-generator stream panicked")?;
        }
        let posting = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        let requests = wait_for_all(&stand_in, self.messages, deadline, || true).await;
        crate::report::dump(name, &requests);
        let mut row = analyse(name, self.messages, &requests, self.latency_ms);
        row.bound_messages_per_second = super::per_key_bound(self.keys, self.latency_ms);
        row.notes.push(format!(
            "load generator: {} keep-alive streams, one per alert key, {per_key} sequential \
             POSTs each; {:.2} s wall time; {failures} failed attempts",
            self.keys,
            posting.as_secs_f64()
        ));
        Ok(row)
    }
}
