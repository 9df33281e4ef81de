//! A bare librdkafka consumer beside the agent: it reads the same partitions of the same
//! topic (assigned, no group), with the agent's consumer settings, and notes when each
//! event reached it. The difference between an event's arrival at the stand-in (through
//! the agent) and at this consumer is what the agent adds; what both share (producer,
//! broker, fetch) is not. It fetches exactly what the agent fetches, because with tansu
//! the cost of a fetch grows with the partitions in it and with their length.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::event::{is_warmup, now_ms};

/// Arrival time (epoch ms) of each benchmark event id at the reference consumer.
pub type Arrivals = HashMap<u64, u64>;

/// Stops its thread when dropped (a scenario that fails half-way leaves nothing polling).
pub struct ReferenceConsumer {
    stop: Arc<AtomicBool>,
    warmups: Arc<AtomicUsize>,
    /// Taken by [`ReferenceConsumer::finish`].
    thread: Option<JoinHandle<Arrivals>>,
}

impl ReferenceConsumer {
    /// Reads `topic`'s partitions `0..partitions` from their start, with `properties`
    /// (key, value) applied last, and polls on a thread of its own.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        properties: &[(&str, &str)],
    ) -> Result<ReferenceConsumer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "bench-reference")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        for (key, value) in properties {
            config.set(*key, *value);
        }
        let consumer: BaseConsumer = config
            .create()
            .context("cannot create the reference consumer")?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .context("cannot name the reference consumer's partitions")?;
        }
        consumer
            .assign(&assignment)
            .context("the reference consumer cannot take its partitions")?;
        let stop = Arc::new(AtomicBool::new(false));
        let warmups = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("reference-consumer".into())
            .spawn({
                let (stop, warmups) = (Arc::clone(&stop), Arc::clone(&warmups));
                move || poll(&consumer, &stop, &warmups)
            })
            .context("cannot start the reference consumer's thread")?;
        Ok(ReferenceConsumer {
            stop,
            warmups,
            thread: Some(thread),
        })
    }

    /// Warm-up events seen so far (the consumer is assigned once it sees one).
    pub fn warmups_seen(&self) -> usize {
        self.warmups.load(Ordering::Acquire)
    }

    /// Stops polling and returns the arrivals.
    pub fn finish(mut self) -> Result<Arrivals> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .ok_or_else(|| anyhow!("the reference consumer was already finished"))?
            .join()
            .map_err(|_| anyhow!("the reference consumer's thread panicked"))
    }
}

impl Drop for ReferenceConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn poll(consumer: &BaseConsumer, stop: &AtomicBool, warmups: &AtomicUsize) -> Arrivals {
    let mut arrivals = Arrivals::new();
    while !stop.load(Ordering::Acquire) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let at = now_ms();
        let Some(json) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
        else {
            continue;
        };
        if is_warmup(Some(&json)) {
            warmups.fetch_add(1, Ordering::AcqRel);
        } else if let Some(id) = json["customDetails"]["id"].as_u64() {
            arrivals.entry(id).or_insert(at);
        }
    }
    arrivals
}
