//! The event streams the runs send while they inject faults: events `0..count` in ascending
//! order (so every alert key's events go out in order), paced at a steady rate, through a
//! Kafka producer, an MQTT QoS 1 publisher or HTTP clients of the proxy. A feed returns once
//! the broker (or the proxy, with 202) has taken every event: from then on the agent alone
//! is responsible for it.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bench::event::Stream;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Events per alert key (and per integration key: every key is its own integration key),
/// so that a whole run stays within ilert's 50 per key and minute, duplicates included.
pub const EVENTS_PER_KEY: usize = 20;

/// The stream of a run of `count` events.
pub fn stream(count: usize) -> Stream {
    let keys = count.div_ceil(EVENTS_PER_KEY).max(1);
    Stream {
        keys,
        integration_keys: keys,
    }
}

/// How often a feed sends its next batch.
const TICK: Duration = Duration::from_millis(50);

/// Sleeps until batch `n` of a feed that started at `started` is due.
async fn pace(started: Instant, n: usize) {
    tokio::time::sleep_until(started + TICK * u32::try_from(n).unwrap_or(u32::MAX)).await;
}

fn per_tick(rate: usize) -> usize {
    (rate as f64 * TICK.as_secs_f64()).ceil().max(1.0) as usize
}

/// Produces events `0..count` to `topic` at `rate` per second, each record keyed by its
/// alert key; waits for every delivery report.
pub async fn kafka(bootstrap: &str, topic: &str, count: usize, rate: usize) -> Result<()> {
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        // A broker outage in the middle of a feed must not fail the feed.
        .set("message.timeout.ms", "600000")
        .set("enable.idempotence", "true")
        .create()
        .context("cannot create the Kafka producer")?;
    let stream = stream(count);
    let started = Instant::now();
    let ids: Vec<usize> = (0..count).collect();
    for (n, batch) in ids.chunks(per_tick(rate)).enumerate() {
        pace(started, n).await;
        let records = batch.iter().map(|id| {
            let (key, payload) = stream.event(*id);
            (Some(key), payload)
        });
        bench::kafka::produce_all(&producer, topic, records.collect::<Vec<_>>(), 10_000).await?;
    }
    Ok(())
}

/// Publishes events `0..count` to `topic` with QoS 1 over one connection at `rate` per
/// second; returns once the broker acknowledged each one.
pub async fn mqtt(port: u16, topic: &str, count: usize, rate: usize) -> Result<()> {
    let stream = stream(count);
    let payloads: Vec<Vec<u8>> = (0..count).map(|id| stream.event(id).1).collect();
    mqtt_payloads(port, "chaos-feed", topic, payloads, rate).await
}

/// Publishes `payloads` in order with QoS 1 at `rate` per second; returns once the broker
/// acknowledged each one.
pub async fn mqtt_payloads(
    port: u16,
    client_id: &str,
    topic: &str,
    payloads: Vec<Vec<u8>>,
    rate: usize,
) -> Result<()> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100)
        .set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let count = payloads.len();
    let sender = tokio::spawn({
        let topic = topic.to_string();
        let client = client.clone();
        async move {
            let started = Instant::now();
            for (n, batch) in payloads.chunks(per_tick(rate)).enumerate() {
                pace(started, n).await;
                for payload in batch {
                    client
                        .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .map_err(|e| anyhow!("publish failed: {e}"))?;
                }
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    let mut acked = 0;
    while acked < count {
        let event = tokio::time::timeout(Duration::from_secs(120), eventloop.poll())
            .await
            .map_err(|_| anyhow!("the broker acknowledged only {acked} of {count} publishes"))?
            .context("the publisher's connection failed")?;
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    sender.await.context("the publisher task panicked")??;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(())
}

/// Clients posting to the proxy at once; each owns a share of the keys and posts its
/// events one after the other, so every key's order is the order of the 202s.
const PROXY_CLIENTS: usize = 8;

/// Posts events `0..count` to the proxy on `port` at `rate` per second, each until it is
/// answered 202 (a refused connection or a 503 while the agent restarts is tried again);
/// fails if one is not taken within `give_up`.
pub async fn proxy(port: u16, count: usize, rate: usize, give_up: Duration) -> Result<()> {
    let stream = stream(count);
    let client = testkit::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("http://127.0.0.1:{port}/api/events");
    let mut clients = JoinSet::new();
    for c in 0..PROXY_CLIENTS {
        let ids: Vec<usize> = (0..count)
            .filter(|id| (id % stream.keys) % PROXY_CLIENTS == c)
            .collect();
        let (client, url) = (client.clone(), url.clone());
        let rate = rate.div_ceil(PROXY_CLIENTS);
        clients.spawn(async move {
            let started = Instant::now();
            for (n, batch) in ids.chunks(per_tick(rate)).enumerate() {
                pace(started, n).await;
                for id in batch {
                    post_until_accepted(&client, &url, stream.event(*id).1, give_up).await?;
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(result) = clients.join_next().await {
        result.context("a proxy client panicked")??;
    }
    Ok(())
}

/// Posts `body` until a 202 (or `give_up` passes); returns the number of attempts.
pub async fn post_until_accepted(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    give_up: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + give_up;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == 202 => return Ok(attempt),
            Ok(r) if r.status().is_client_error() => {
                anyhow::bail!("a valid event was refused: {}", r.status())
            }
            _ if Instant::now() >= deadline => {
                anyhow::bail!("an event was not accepted within {give_up:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
