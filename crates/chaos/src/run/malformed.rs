//! The malformed corpus through each source, interleaved with valid events: the agent
//! must never exit, every malformed message must be set aside with a reason, and every
//! valid event delivered.
//!
//! "Set aside" is each source's documented dead-letter path: the `--kafka_dlq_topic` topic
//! (a record with an `ilagent.reason` header), the `dead_letters` table of the SQLite file
//! for MQTT (direct and buffered), and a 4xx answer naming the problem for the proxy, which
//! stores nothing it would not deliver.
//!
//! The routed variant sends the same corpus to a topic a configured route takes, whose jq
//! expressions mirror the flag mapping field for field (one through jaq, the rest on the
//! fast path): what the flag mapping sets aside, the route must set aside too.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::Instant;

use super::{Ctx, Stage, delivery_timeout};
use crate::corpus::{Malformed, corpus};
use crate::feed;
use crate::ilert::ilert_like;
use crate::outcome::Outcome;
use crate::source::{Kind, Setup, Target};

const DLQ_TOPIC: &str = "chaos-dead-letters";
/// A malformed message after every this many valid ones.
const VALID_PER_MALFORMED: usize = 4;

/// One message of a run: valid event `id`, or a malformed one.
enum Item<'a> {
    Valid(usize),
    Malformed(&'a Malformed),
}

/// [`VALID_PER_MALFORMED`] valid events, then a malformed one, and so on.
fn interleaved(bad: &[Malformed]) -> impl Iterator<Item = Item<'_>> {
    bad.iter().enumerate().flat_map(|(i, message)| {
        let valid = i * VALID_PER_MALFORMED..(i + 1) * VALID_PER_MALFORMED;
        valid.map(Item::Valid).chain([Item::Malformed(message)])
    })
}

pub async fn run(ctx: &Ctx, kind: Kind, routed: bool) -> Result<Outcome> {
    let fault = if routed {
        "malformed-routed"
    } else {
        "malformed"
    };
    let mut outcome = Outcome::new(kind.name(), fault);
    let setup = Setup::start(kind).await?;
    let mut extra: Vec<String> = match kind {
        Kind::Kafka => vec!["--kafka_dlq_topic".into(), DLQ_TOPIC.into()],
        _ => Vec::new(),
    };
    // Kept until the run ends: the agent reads it at start.
    let config_dir = tempfile::tempdir()?;
    if routed {
        let config = config_dir.path().join("routes.toml");
        std::fs::write(&config, mirror_route(&setup.target))?;
        extra.extend(["--config".into(), config.display().to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut stage = Stage::up(ctx, setup, ilert_like(), &extra).await?;
    let bad = corpus(ctx.size.malformed, 13);
    let valid = bad.len() * VALID_PER_MALFORMED;
    let stream = feed::stream(valid);
    let target = stage.setup.target.clone();
    let mut refused = 0;
    match &target {
        Target::Kafka { bootstrap, topic } => {
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("message.max.bytes", "2000000")
                .create()
                .context("cannot create the Kafka producer")?;
            for item in interleaved(&bad) {
                let (key, payload) = match item {
                    Item::Valid(id) => {
                        let (key, payload) = stream.event(id);
                        (Some(key.into_bytes()), Some(payload))
                    }
                    Item::Malformed(m) => (m.key.clone(), m.payload.clone()),
                };
                send(&producer, topic, key.as_deref(), payload.as_deref()).await?;
            }
        }
        Target::Mqtt { port, topic } => {
            let payloads = interleaved(&bad)
                .map(|item| match item {
                    Item::Valid(id) => stream.event(id).1,
                    Item::Malformed(m) => m.payload.clone().unwrap_or_default(),
                })
                .collect();
            feed::mqtt_payloads(*port, "chaos-malformed", topic, payloads, 500).await?;
        }
        Target::Proxy { port } => {
            let client = testkit::http_client().build()?;
            let url = format!("http://127.0.0.1:{port}/api/events");
            for item in interleaved(&bad) {
                match item {
                    Item::Valid(id) => {
                        let body = stream.event(id).1;
                        feed::post_until_accepted(&client, &url, body, Duration::from_secs(60))
                            .await?;
                    }
                    Item::Malformed(m) => {
                        refused += usize::from(post_refused(&client, &url, m).await?);
                    }
                }
            }
        }
    }
    stage
        .finish(&mut outcome, valid, delivery_timeout(ctx, kind))
        .await?;
    let set_aside = match &target {
        Target::Kafka { bootstrap, .. } => dead_letter_records(bootstrap, bad.len()).await?,
        Target::Mqtt { .. } => stage
            .agent
            .dead_letter_reasons()?
            .iter()
            .filter(|reason| !reason.trim().is_empty())
            .count(),
        Target::Proxy { .. } => refused,
    };
    outcome.malformed = Some(bad.len());
    outcome.set_aside = Some(set_aside);
    Ok(outcome)
}

/// A route on the target's topic whose fields are the flag mapping's, as jq expressions;
/// the summary goes through jaq (a pipe is not on the fast path).
fn mirror_route(target: &Target) -> String {
    let (source, topic) = match target {
        Target::Kafka { topic, .. } => ("kafka", topic.as_str()),
        Target::Mqtt { topic, .. } => ("mqtt", topic.as_str()),
        Target::Proxy { .. } => ("http", "/hooks/chaos"),
    };
    format!(
        r#"[[route]]
name = "chaos-mirror"
source = "{source}"
topics = ["{topic}"]
[route.fields]
integration_key = '.integrationKey'
event_type = '.eventType'
summary = '.summary | .'
details = '.details'
alert_key = '.alertKey'
priority = '.priority'
links = '.links'
images = '.images'
custom_details = '.customDetails'
"#
    )
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<()> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(error, _)| anyhow::anyhow!("produce failed: {error}"))?;
    Ok(())
}

/// Whether the proxy refused a malformed body with a 4xx that says why (a 503 while busy
/// is asked again).
async fn post_refused(client: &reqwest::Client, url: &str, message: &Malformed) -> Result<bool> {
    for _ in 0..100 {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(message.payload.clone().unwrap_or_default())
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == 503 => {}
            Ok(r) if r.status().is_client_error() => {
                let body = r.text().await.unwrap_or_default();
                return Ok(!body.trim().is_empty());
            }
            Ok(r) => {
                eprintln!(
                    "malformed {:?}: the proxy answered {}",
                    message.what,
                    r.status()
                );
                return Ok(false);
            }
            Err(error) => eprintln!("malformed {:?}: {error}", message.what),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(false)
}

/// Records on the dead-letter topic that carry a reason, read until `expected` are there or
/// 60 s passed.
async fn dead_letter_records(bootstrap: &str, expected: usize) -> Result<usize> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "chaos-dlq-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the DLQ consumer")?;
    consumer.subscribe(&[DLQ_TOPIC])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut with_reason = 0;
    while with_reason < expected && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await
        else {
            continue;
        };
        let reason = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == "ilagent.reason")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        if reason.is_some_and(|r| !r.trim().is_empty()) {
            with_reason += 1;
        }
    }
    Ok(with_reason)
}
