//! Publishing to Kafka: every message through one idempotent producer with `acks=all`,
//! enqueued in input order (so order per partition holds), each awaited until the broker
//! acknowledged it or `--timeout` passed.
//!
//! The line per message carries the elastic.io component's output metadata: `topicName`,
//! `partition`, `errorCode` (0 when acknowledged), `baseOffset`, `logAppendTime` (the
//! broker's time when the topic uses LogAppendTime, else -1, as Kafka answers) and
//! `logStartOffset` (the partition's first offset, read after the last acknowledgement).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, Timestamp};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde_json::json;

use super::{Outgoing, Published};
use crate::config::KafkaConnection;
use crate::sources::kafka::client::acknowledged_producer;
use crate::sources::kafka::context::ToolContext;

pub(crate) async fn publish(
    connection: &KafkaConnection,
    topic: &str,
    messages: Vec<Outgoing>,
    timeout: Duration,
) -> Vec<Published> {
    let client_id = format!("{}-produce", connection.client_id);
    let producer: FutureProducer<ToolContext> =
        match acknowledged_producer(connection, &client_id, timeout)
            .create_with_context(ToolContext)
        {
            Ok(producer) => producer,
            Err(error) => {
                let why = format!("cannot create the Kafka producer: {error}");
                return messages
                    .iter()
                    .map(|_| failed(topic, -1, &why, error_code(&error)))
                    .collect();
            }
        };
    let mut pending: Vec<Option<DeliveryFuture>> = Vec::with_capacity(messages.len());
    let mut results: Vec<Option<Published>> = (0..messages.len()).map(|_| None).collect();
    let mut next_to_await = 0;
    for (index, message) in messages.iter().enumerate() {
        loop {
            match producer.send_result(record(topic, message)) {
                Ok(delivery) => {
                    pending.push(Some(delivery));
                    break;
                }
                // librdkafka's queue is full: wait for the oldest message to make room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if next_to_await < index =>
                {
                    // An earlier message whose enqueue failed already has its result.
                    if results[next_to_await].is_none() {
                        results[next_to_await] =
                            Some(settle(topic, pending[next_to_await].take()).await);
                    }
                    next_to_await += 1;
                }
                Err((error, _)) => {
                    pending.push(None);
                    results[index] = Some(failed(
                        topic,
                        -1,
                        &format!("not enqueued: {error}"),
                        error_code(&error),
                    ));
                    break;
                }
            }
        }
    }
    for (index, delivery) in pending.iter_mut().enumerate().skip(next_to_await) {
        if results[index].is_none() {
            results[index] = Some(settle(topic, delivery.take()).await);
        }
    }
    let mut published: Vec<Published> = results.into_iter().flatten().collect();
    add_log_start_offsets(&producer, topic, &mut published, timeout).await;
    // librdkafka's destructor flushes and waits: not on an async worker.
    let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    published
}

fn record<'a>(topic: &'a str, message: &'a Outgoing) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
    for (name, value) in &message.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(key) = &message.key {
        record = record.key(key.as_bytes());
    }
    if let Some(value) = &message.value {
        record = record.payload(value.as_slice());
    }
    record
}

async fn settle(topic: &str, delivery: Option<DeliveryFuture>) -> Published {
    let Some(delivery) = delivery else {
        return failed(topic, -1, "not enqueued", -1);
    };
    match delivery.await {
        Ok(Ok(delivery)) => {
            let log_append_time = match delivery.timestamp {
                Timestamp::LogAppendTime(ms) => ms,
                _ => -1,
            };
            Published {
                line: json!({
                    "topicName": topic,
                    "partition": delivery.partition,
                    "errorCode": 0,
                    "baseOffset": delivery.offset.to_string(),
                    "logAppendTime": log_append_time.to_string(),
                    "logStartOffset": "-1",
                }),
                failure: None,
            }
        }
        Ok(Err((error, message))) => {
            use rdkafka::Message;
            failed(
                topic,
                message.partition(),
                &error.to_string(),
                error_code(&error),
            )
        }
        Err(_) => failed(topic, -1, "the producer stopped before it answered", -1),
    }
}

fn failed(topic: &str, partition: i32, why: &str, code: i32) -> Published {
    Published {
        line: json!({
            "topicName": topic,
            "partition": partition,
            "errorCode": code,
            "baseOffset": "-1",
            "logAppendTime": "-1",
            "logStartOffset": "-1",
            "error": why,
        }),
        failure: Some(why.to_string()),
    }
}

/// Kafka's error code (positive, from the broker) or librdkafka's (negative, local, such
/// as -192 for a message that timed out).
fn error_code(error: &KafkaError) -> i32 {
    error.rdkafka_error_code().map_or(-1, |code| code as i32)
}

/// Fills `logStartOffset` of the acknowledged messages with their partition's low
/// watermark (librdkafka's delivery reports do not carry the produce response's).
async fn add_log_start_offsets(
    producer: &FutureProducer<ToolContext>,
    topic: &str,
    published: &mut [Published],
    timeout: Duration,
) {
    let partitions: Vec<i32> = published
        .iter()
        .filter(|p| p.failure.is_none())
        .filter_map(|p| p.line["partition"].as_i64())
        .filter_map(|p| i32::try_from(p).ok())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if partitions.is_empty() {
        return;
    }
    let client = producer.clone();
    let owned_topic = topic.to_string();
    let wait = timeout.min(Duration::from_secs(10));
    let lows = tokio::task::spawn_blocking(move || {
        partitions
            .into_iter()
            .filter_map(|p| {
                client
                    .client()
                    .fetch_watermarks(&owned_topic, p, wait)
                    .ok()
                    .map(|(low, _)| (p, low))
            })
            .collect::<BTreeMap<i32, i64>>()
    })
    .await
    .unwrap_or_default();
    for message in published.iter_mut().filter(|p| p.failure.is_none()) {
        let partition = message.line["partition"].as_i64().unwrap_or(-1);
        if let Some(low) = i32::try_from(partition).ok().and_then(|p| lows.get(&p)) {
            message.line["logStartOffset"] = json!(low.to_string());
        }
    }
}
