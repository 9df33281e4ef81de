//! The soak's senders, one task per source: a Kafka producer, two QoS 1 MQTT publishers
//! (one per agent topic) and an HTTP client posting to the proxy; plus the warm-up that
//! tells when a source's path into the agent is open.
//!
//! The Kafka producer batches for 20 ms (tansu's fetches slow down with the number of
//! record batches it holds, see `scenario::latency`); the MQTT publishers keep one
//! connection for the whole run and count PUBACKs, so the end can wait until the broker has
//! every message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ilert_standin::StandIn;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::traffic::{Counters, Kind, Shape, Source, kind, paced, post_event};
use crate::kafka::check;

/// Kafka deliveries awaited at most before the producer waits for the oldest.
const KAFKA_PENDING: usize = 500;

pub type Sender = JoinHandle<Result<()>>;

/// Produces `source`'s stream to `topic`.
pub fn kafka(
    producer: FutureProducer,
    topic: String,
    shape: Shape,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Sender {
    tokio::spawn(async move {
        // Deliveries are awaited in order by a task of their own, at most KAFKA_PENDING
        // behind the producer.
        let (tx, mut rx) = tokio::sync::mpsc::channel(KAFKA_PENDING);
        let checker = tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                check(delivery.await)?;
            }
            Ok::<(), anyhow::Error>(())
        });
        paced(shape.rate, stop, counters, |n| {
            let (key, payload) = shape.message(Source::Kafka, n);
            let record = FutureRecord::<str, [u8]>::to(&topic)
                .key(&key)
                .payload(&payload);
            let delivery = producer.send_result(record).map_err(|(e, _)| e);
            let tx = tx.clone();
            async move {
                tx.send(delivery?)
                    .await
                    .map_err(|_| anyhow!("the delivery checker stopped"))
            }
        })
        .await?;
        drop(tx);
        checker.await.context("the delivery checker panicked")?
    })
}

/// A QoS 1 publisher of `source`'s stream to `topic`; `acked` counts the broker's PUBACKs.
pub fn mqtt(
    port: u16,
    source: Source,
    topic: String,
    shape: Shape,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    acked: Arc<AtomicU64>,
) -> Sender {
    tokio::spawn(async move {
        let mut options = MqttOptions::new(
            format!("soak-publisher-{}", source.name()),
            "127.0.0.1",
            port,
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let poller = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("soak: {} publisher: {error}; reconnecting", source.name());
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let result = paced(shape.rate, stop, counters, |n| {
            let (_, payload) = shape.message(source, n);
            let (client, topic) = (client.clone(), topic.clone());
            async move {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|e| anyhow!("publish failed: {e}"))
            }
        })
        .await;
        // Keep the connection until the caller has seen every PUBACK; it aborts the poller.
        tokio::time::sleep(Duration::from_secs(5)).await;
        poller.abort();
        result
    })
}

/// Posts the proxy's stream to `url` (`http://127.0.0.1:PORT/api/events`).
pub fn proxy(
    url: String,
    shape: Shape,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Sender {
    tokio::spawn(async move {
        let client = testkit::http_client()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        let c = Arc::clone(&counters);
        paced(shape.rate, stop, counters, |n| {
            let (_, body) = shape.message(Source::Proxy, n);
            let (client, url, c) = (client.clone(), url.clone(), Arc::clone(&c));
            async move {
                let malformed = kind(n) == Kind::Malformed;
                if !post_event(&client, &url, body, malformed, &c).await? {
                    c.given_up.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .await
    })
}

/// A warm-up event marked with `source`, counted nowhere.
pub fn warmup_event(source: Source, n: usize) -> Vec<u8> {
    json!({
        "integrationKey": "il1api-soak-warmup",
        "eventType": "ALERT",
        "summary": format!("soak warm-up {} {n}", source.name()),
        "alertKey": format!("warmup-{}", source.name()),
        "customDetails": {"warmup": true, "source": source.name(), "n": n}
    })
    .to_string()
    .into_bytes()
}

/// Calls `send(n)` every `every` until the stand-in has a warm-up event of `source`, or
/// fails after 90 s or when `alive()` turns false.
pub async fn warm_up<F, Fut>(
    stand_in: &StandIn,
    source: Source,
    every: Duration,
    mut alive: impl FnMut() -> bool,
    mut send: F,
) -> Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    for n in 0.. {
        if let Err(error) = send(n).await {
            eprintln!(
                "soak: {} warm-up {n} not sent yet: {error:#}",
                source.name()
            );
        }
        let until = Instant::now() + every;
        while Instant::now() < until {
            let arrived = stand_in.requests().iter().any(|r| {
                let details = r.json.as_ref().and_then(|j| j.get("customDetails"));
                (200..300).contains(&r.status)
                    && details
                        .and_then(|d| d.get("source"))
                        .and_then(|s| s.as_str())
                        == Some(source.name())
            });
            if arrived {
                return Ok(());
            }
            if !alive() {
                anyhow::bail!("the agent exited during the {} warm-up", source.name());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "no {} warm-up event reached the stand-in in 90 s",
                    source.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
