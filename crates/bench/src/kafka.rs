//! Kafka helpers for the demo and the benchmarks: create topics, produce many records fast.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Creates `topic` with `partitions` unless it exists.
pub async fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("cannot create the Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// A producer that batches for up to 5 ms: fast for backlogs and demos.
pub fn producer(bootstrap: &str) -> Result<FutureProducer> {
    producer_with_linger(bootstrap, 5)
}

/// A producer that waits up to `linger_ms` to batch records (0: send each at once, for
/// latency measurements).
pub fn producer_with_linger(bootstrap: &str, linger_ms: u32) -> Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .create()
        .context("cannot create the Kafka producer")
}

/// Produces `records` (key, payload) in order (each record is enqueued before the next,
/// so records with one key keep their order), with up to `in_flight` awaiting delivery.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (Option<String>, Vec<u8>)>,
    in_flight: usize,
) -> Result<usize> {
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0;
    for (key, payload) in records {
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(topic).payload(&payload);
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: wait for the oldest delivery, then retry.
                    match pending.pop_front() {
                        Some(oldest) => check(oldest.await)?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((error, _)) => anyhow::bail!("produce failed: {error}"),
            }
        }
        sent += 1;
        while pending.len() > in_flight.max(1) {
            if let Some(oldest) = pending.pop_front() {
                check(oldest.await)?;
            }
        }
    }
    for delivery in pending {
        check(delivery.await)?;
    }
    Ok(sent)
}

/// Turns a delivery report into an error when the record was not delivered.
pub(crate) fn check<T, M, C>(
    result: Result<Result<T, (rdkafka::error::KafkaError, M)>, C>,
) -> Result<()> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => anyhow::bail!("produce failed: {error}"),
        Err(_) => anyhow::bail!("the producer went away"),
    }
}
