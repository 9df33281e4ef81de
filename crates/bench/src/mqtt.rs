//! MQTT publishing for the benchmarks: QoS 1 publishers that keep many publishes in flight
//! and return once the broker acknowledged every one (PUBACK), so nothing is lost before
//! the agent gets a chance at it.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::time::Instant;

/// Publishes awaiting their PUBACK per publisher at most.
const PUBLISH_IN_FLIGHT: u16 = 100;

/// Publishes `count` payloads from `payloads` to `topic` with QoS 1 over one connection, in
/// order, and waits (until `timeout`) for the broker to acknowledge all of them. Payloads
/// are made lazily, so a send time stamped in them is close to the real send.
pub async fn publish_all(
    port: u16,
    client_id: &str,
    topic: &str,
    count: usize,
    payloads: impl Iterator<Item = Vec<u8>> + Send + 'static,
    timeout: Duration,
) -> Result<()> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(PUBLISH_IN_FLIGHT)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(PUBLISH_IN_FLIGHT));
    let sender = tokio::spawn({
        let (client, topic) = (client.clone(), topic.to_string());
        async move {
            for payload in payloads {
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|e| anyhow!("publish failed: {e}"))?;
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    let deadline = Instant::now() + timeout;
    let mut acked = 0;
    while acked < count {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| anyhow!("the broker acknowledged {acked} of {count} publishes in time"))?
            .context("the publisher's connection failed")?;
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    sender.await.context("the publisher task panicked")??;
    client
        .disconnect()
        .await
        .map_err(|e| anyhow!("disconnect failed: {e}"))?;
    // Let the DISCONNECT go out.
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
        if event == Event::Outgoing(Outgoing::Disconnect) {
            break;
        }
    }
    Ok(())
}

/// Publishes one QoS 1 message and waits for its PUBACK.
pub async fn publish_one(
    port: u16,
    client_id: String,
    topic: &str,
    payload: Vec<u8>,
) -> Result<()> {
    publish_all(
        port,
        &client_id,
        topic,
        1,
        std::iter::once(payload),
        Duration::from_secs(10),
    )
    .await
}
