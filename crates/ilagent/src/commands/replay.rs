//! `ilagent replay`: dead letters back to the topics they came from, once their cause is
//! fixed (seed 004's retry path, by hand).
//!
//! It reads the dead-letter topic from its own consumer group, from that group's committed
//! offsets (the earliest on the first run) to the end of each partition or the first dead
//! letter set aside after the command started, and publishes each dead letter to its `ilagent.source.topic` with the original
//! key, value (a tombstone stays one) and headers, the `ilagent.*`, `error-message` and
//! `failed-at` headers removed, `retry-count` counted up and `ilagent.replay.run` naming the
//! run. Offsets on the dead-letter
//! topic are committed only after the source topic acknowledged what came before them, so
//! an interrupted replay repeats some messages and loses none. Dead letters that the
//! filters pass over, and records without ilagent's headers, are committed past too: the
//! group's offset says "looked at", and they stay in the topic until its retention ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::Exit;
use crate::cli::ReplayArgs;
use crate::config::{KafkaConnection, UsageError};
use crate::printable::printable;
use crate::sources::kafka::client::{acknowledged_producer, replay_consumer_config};
use crate::sources::kafka::context::ToolContext;
use crate::sources::kafka::dead_letter::headers;

/// Dead letters published before their acknowledgements are awaited and offsets committed.
const BATCH: usize = 256;
/// The header the consumer-patterns note counts retries in.
const RETRY_COUNT: &str = "retry-count";
/// Marks what one run published; the daemon copies it into the dead letter if the message
/// fails again, so the run knows its own output whatever the clocks say.
const REPLAY_RUN: &str = "ilagent.replay.run";

/// Which dead letters to replay.
struct Filter {
    reason: Option<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

/// What replay found in one dead letter.
enum Plan {
    Replay {
        source_topic: String,
        headers: Vec<(String, Vec<u8>)>,
        retry_count: u64,
        reason: String,
    },
    /// The filters pass it over.
    Filtered,
    /// No `ilagent.source.topic` header: not written by ilagent.
    Foreign,
}

#[derive(Default)]
struct Tally {
    replayed: u64,
    filtered: u64,
    foreign: u64,
}

pub async fn run(args: ReplayArgs) -> Exit {
    let connection = match KafkaConnection::from_args(&args.kafka) {
        Ok(Some(connection)) => connection,
        Ok(None) => {
            return UsageError::new("replay needs --kafka_brokers HOST:PORT").into();
        }
        Err(error) => return error.into(),
    };
    let Some(dlq) = args
        .kafka_dlq_topic
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return UsageError::new(
            "replay needs --kafka_dlq_topic: the dead-letter topic the daemon writes to",
        )
        .into();
    };
    if crate::config::kafka_non_empty("--replay_group_id", &args.replay_group_id).is_err() {
        return UsageError::new("--replay_group_id is empty: the default is ilagent-replay").into();
    }
    if args.timeout < Duration::from_secs(1) {
        return UsageError::new("--timeout must be at least 1s; the default is 30s").into();
    }
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return UsageError::new("--since is not before --until: nothing would be replayed").into();
    }
    let filter = Filter {
        reason: args.reason.as_ref().map(|r| r.to_lowercase()),
        since: args.since,
        until: args.until,
    };
    match replay(&connection, dlq, &args, &filter).await {
        Ok(tally) => {
            let verb = if args.dry_run {
                "would replay"
            } else {
                "replayed"
            };
            let committed_past = if tally.filtered > 0 && !args.dry_run {
                " (committed past: to look at them again, use a new --replay_group_id)"
            } else {
                ""
            };
            eprint_line(&format!(
                "{verb} {} dead letters from {dlq}; {} passed over by the filters{committed_past}, {} without ilagent's headers",
                tally.replayed, tally.filtered, tally.foreign
            ))
            .await;
            Exit::Success
        }
        Err(why) => Exit::Failed(why),
    }
}

async fn replay(
    connection: &KafkaConnection,
    dlq: &str,
    args: &ReplayArgs,
    filter: &Filter,
) -> Result<Tally, String> {
    let consumer: Arc<StreamConsumer<ToolContext>> = Arc::new(
        replay_consumer_config(connection, args.replay_group_id.trim())
            .create_with_context(ToolContext)
            .map_err(|e| format!("cannot create the Kafka consumer: {e}"))?,
    );
    let producer: FutureProducer<ToolContext> = acknowledged_producer(
        connection,
        &format!("{}-replay", connection.client_id),
        args.timeout,
    )
    .create_with_context(ToolContext)
    .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;

    let partitions = blocking(&consumer, {
        let dlq = dlq.to_string();
        let wait = args.timeout;
        move |consumer| partitions_of(consumer, &dlq, wait)
    })
    .await??;
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(dlq, *partition, Offset::Stored)
            .map_err(|e| format!("cannot assign {dlq}/{partition}: {e}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot read {dlq}: {e}"))?;

    // A partition is done at its end (librdkafka's end-of-partition event, from the fetch
    // response: tansu's ListOffsets answer lags behind it) or at the first dead letter
    // set aside after this command started, which includes any replayed message that
    // failed again: the replay never chases its own output.
    let mut batch: Batch = Vec::new();
    let mut tally = Tally::default();
    let mut out = tokio::io::stdout();
    let stopped = read_and_publish(
        &consumer, &producer, dlq, args, filter, partitions, &mut batch, &mut tally, &mut out,
    )
    .await;
    // Whatever stopped the reading, what was published is awaited and committed: the
    // partitions up to their first failure.
    let settled = settle(&consumer, dlq, &mut batch, args.dry_run, &mut out).await;
    // librdkafka's destructors flush and wait: not on an async worker.
    let _ = tokio::task::spawn_blocking(move || drop((producer, consumer))).await;
    stopped.and(settled).map(|()| tally)
}

/// The dead letters read, each with its publish (none for those not replayed) and its line.
type Batch = Vec<(OwnedMessage, Option<DeliveryFuture>, serde_json::Value)>;

#[allow(clippy::too_many_arguments)] // one call site: the steps of one run
async fn read_and_publish(
    consumer: &Arc<StreamConsumer<ToolContext>>,
    producer: &FutureProducer<ToolContext>,
    dlq: &str,
    args: &ReplayArgs,
    filter: &Filter,
    partitions: Vec<i32>,
    batch: &mut Batch,
    tally: &mut Tally,
    out: &mut tokio::io::Stdout,
) -> Result<(), String> {
    // A partition is done at its end (librdkafka's end-of-partition event, from the fetch
    // response: tansu's ListOffsets answer lags behind it) or at the first dead letter
    // set aside after this command started, which includes any replayed message that
    // failed again: the replay never chases its own output.
    let started = SystemTime::now();
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let mut open: BTreeSet<i32> = partitions.into_iter().collect();
    while !open.is_empty() {
        let message = match tokio::time::timeout(args.timeout, consumer.recv()).await {
            Err(_) => {
                return Err(format!(
                    "no message from {dlq} within --timeout ({:?}); partitions {:?} were not read to their end",
                    args.timeout, open
                ));
            }
            Ok(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
                continue;
            }
            // librdkafka recovers from broker and transport errors itself; --timeout
            // bounds how long that may take.
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading {dlq}: retrying");
                continue;
            }
            Ok(Ok(message)) => message.detach(),
        };
        if !open.contains(&message.partition()) {
            continue;
        }
        if failed_at(&message).is_some_and(|at| at > started)
            || header(&message, REPLAY_RUN) == Some(run_id.as_bytes())
        {
            // Left for the next run, and nothing after it is committed.
            open.remove(&message.partition());
            continue;
        }
        let (delivery, line) = match plan(&message, filter, &run_id) {
            Plan::Filtered => {
                tally.filtered += 1;
                (None, serde_json::Value::Null)
            }
            Plan::Foreign => {
                tally.foreign += 1;
                (None, serde_json::Value::Null)
            }
            Plan::Replay {
                source_topic,
                headers,
                retry_count,
                reason,
            } => {
                let line = json!({
                    "dlqPartition": message.partition(),
                    "dlqOffset": message.offset().to_string(),
                    "topicName": source_topic,
                    "retryCount": retry_count,
                    "reason": printable(&reason, 200),
                });
                let delivery = if args.dry_run {
                    None
                } else {
                    // Not in the batch when it fails: its partition is committed up to the
                    // message before.
                    Some(publish(producer, &source_topic, &message, headers).await?)
                };
                tally.replayed += 1;
                (delivery, line)
            }
        };
        batch.push((message, delivery, line));
        if batch.len() >= BATCH {
            settle(consumer, dlq, batch, args.dry_run, out).await?;
        }
    }
    Ok(())
}

fn plan(message: &OwnedMessage, filter: &Filter, run_id: &str) -> Plan {
    let mut source_topic = None;
    let mut reason = String::new();
    let failed_at = failed_at(message);
    let mut retry_count = 0u64;
    let mut kept = Vec::new();
    if let Some(all) = message.headers() {
        for header in all.iter() {
            let value = header.value.unwrap_or_default();
            let text = || String::from_utf8_lossy(value).into_owned();
            match header.key {
                headers::SOURCE_TOPIC => source_topic = Some(text()),
                headers::REASON => reason = text(),
                RETRY_COUNT => retry_count = text().trim().parse().unwrap_or(0),
                headers::ERROR_MESSAGE | headers::FAILED_AT_ISO => {}
                key if key.starts_with("ilagent.") => {}
                key => kept.push((key.to_string(), value.to_vec())),
            }
        }
    }
    let Some(source_topic) = source_topic.filter(|t| !t.is_empty()) else {
        return Plan::Foreign;
    };
    let reason_matches = filter
        .reason
        .as_ref()
        .is_none_or(|wanted| reason.to_lowercase().contains(wanted));
    let time_matches = match (filter.since, filter.until) {
        (None, None) => true,
        (since, until) => failed_at
            .is_some_and(|at| since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u)),
    };
    if !(reason_matches && time_matches) {
        return Plan::Filtered;
    }
    let retry_count = retry_count.saturating_add(1);
    kept.push((
        RETRY_COUNT.to_string(),
        retry_count.to_string().into_bytes(),
    ));
    kept.push((REPLAY_RUN.to_string(), run_id.as_bytes().to_vec()));
    Plan::Replay {
        source_topic,
        headers: kept,
        retry_count,
        reason,
    }
}

async fn publish(
    producer: &FutureProducer<ToolContext>,
    topic: &str,
    message: &OwnedMessage,
    kept: Vec<(String, Vec<u8>)>,
) -> Result<DeliveryFuture, String> {
    let mut record_headers = OwnedHeaders::new_with_capacity(kept.len());
    for (key, value) in &kept {
        record_headers = record_headers.insert(Header {
            key,
            value: Some(value.as_slice()),
        });
    }
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(record_headers.clone());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => return Err(format!("cannot publish to {topic}: {error}")),
        }
    }
}

/// Awaits the batch's acknowledgements in order, prints a line per replayed message, and
/// commits each partition up to its first failure; fails if any message failed.
async fn settle(
    consumer: &Arc<StreamConsumer<ToolContext>>,
    dlq: &str,
    batch: &mut Batch,
    dry_run: bool,
    out: &mut tokio::io::Stdout,
) -> Result<(), String> {
    let mut commit: BTreeMap<i32, i64> = BTreeMap::new();
    let mut stopped: BTreeMap<i32, String> = BTreeMap::new();
    let mut lines = String::new();
    for (message, delivery, mut line) in batch.drain(..) {
        let partition = message.partition();
        let result = match delivery {
            None => Ok(None),
            Some(delivery) => match delivery.await {
                Ok(Ok(delivered)) => Ok(Some(delivered)),
                Ok(Err((error, _))) => Err(error.to_string()),
                Err(_) => Err("the producer stopped before it answered".to_string()),
            },
        };
        match result {
            Ok(delivered) => {
                if let Some(delivered) = delivered {
                    line["partition"] = json!(delivered.partition);
                    line["baseOffset"] = json!(delivered.offset.to_string());
                }
                if !line.is_null() {
                    lines.push_str(&line.to_string());
                    lines.push('\n');
                }
                if !stopped.contains_key(&partition) {
                    commit.insert(partition, message.offset() + 1);
                }
            }
            Err(why) => {
                stopped.entry(partition).or_insert(format!(
                    "{dlq}/{partition} at offset {}: {why}",
                    message.offset()
                ));
            }
        }
    }
    let _ = out.write_all(lines.as_bytes()).await;
    let _ = out.flush().await;
    if !dry_run && !commit.is_empty() {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &commit {
            offsets
                .add_partition_offset(dlq, *partition, Offset::Offset(*next))
                .map_err(|e| e.to_string())?;
        }
        let topic = dlq.to_string();
        blocking(consumer, move |consumer| {
            consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(|e| format!("cannot commit the replayed offsets on {topic}: {e}"))
        })
        .await??;
    }
    if stopped.is_empty() {
        Ok(())
    } else {
        let failures: Vec<String> = stopped.into_values().collect();
        Err(format!(
            "not acknowledged, left on the dead-letter topic (run again): {}",
            failures.join("; ")
        ))
    }
}

/// The dead-letter topic's partitions.
fn partitions_of(
    consumer: &StreamConsumer<ToolContext>,
    dlq: &str,
    wait: Duration,
) -> Result<Vec<i32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(dlq), wait)
        .map_err(|e| format!("cannot read the metadata of {dlq}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == dlq && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("{dlq} does not exist"));
    }
    Ok(partitions)
}

/// When the agent set the dead letter aside (its `ilagent.failed.at` header).
fn failed_at(message: &OwnedMessage) -> Option<SystemTime> {
    header(message, headers::FAILED_AT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
}

/// The value of the header `name`, the first one if there are several.
fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

/// Runs a blocking librdkafka call off the async workers.
async fn blocking<T: Send + 'static>(
    consumer: &Arc<StreamConsumer<ToolContext>>,
    call: impl FnOnce(&StreamConsumer<ToolContext>) -> T + Send + 'static,
) -> Result<T, String> {
    let consumer = Arc::clone(consumer);
    tokio::task::spawn_blocking(move || call(&consumer))
        .await
        .map_err(|e| format!("a Kafka call failed: {e}"))
}

async fn eprint_line(text: &str) {
    let mut err = tokio::io::stderr();
    let _ = err.write_all(format!("{text}\n").as_bytes()).await;
}
