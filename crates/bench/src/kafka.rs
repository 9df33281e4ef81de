//! Kafka helpers for the demo and the benchmarks: create topics, produce many records fast.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
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

pub fn producer(bootstrap: &str) -> Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .context("cannot create the Kafka producer")
}

/// Produces `records` (key, payload), up to `in_flight` sends at a time.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (Option<String>, Vec<u8>)>,
    in_flight: usize,
) -> Result<usize> {
    let mut pending = tokio::task::JoinSet::new();
    let mut sent = 0;
    for (key, payload) in records {
        while pending.len() >= in_flight.max(1) {
            if let Some(result) = pending.join_next().await {
                result??;
            }
        }
        let producer = producer.clone();
        let topic = topic.to_string();
        pending.spawn(async move {
            let mut record = FutureRecord::<str, [u8]>::to(&topic).payload(&payload);
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))
        });
        sent += 1;
    }
    while let Some(result) = pending.join_next().await {
        result??;
    }
    Ok(sent)
}
