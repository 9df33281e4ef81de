//! Test equipment for the MQTT source: agents with the MQTT flags, a QoS 1 publisher that
//! waits for the broker's acknowledgements, the `ilagent queue` command, and readers for
//! what the stand-in received.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ilert_standin::StandIn;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};

use crate::common::{Agent, unique};
#[allow(unused_imports)] // each test binary uses some of them
pub use crate::common::{queue_command, queue_stat, wait_for_stat};

/// Generous: CI machines are slow; tests wait for conditions, never for time.
pub const WAIT: Duration = Duration::from_secs(60);

/// The flags every MQTT test agent gets (plus its own topics and options).
pub fn agent_args(port: u16, client_id: &str, db: &Path) -> Vec<String> {
    [
        "-f",
        &db.display().to_string(),
        "daemon",
        "-vv",
        "-m",
        "127.0.0.1",
        "-q",
        &port.to_string(),
        "-n",
        client_id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts the agent against `stand_in` with extra environment variables.
pub fn start_agent(stand_in: &StandIn, args: &[String], env: &[(&str, &str)]) -> Agent {
    let url = stand_in.url();
    let mut envs: Vec<(&str, &str)> = vec![
        ("ILERT_API_URL", url.as_str()),
        ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
    ];
    envs.extend_from_slice(env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args, &envs)
}

/// Waits until the agent's log contains `needle` `count` times.
pub async fn wait_for_log(agent: &Agent, needle: &str, count: usize) -> bool {
    crate::common::eventually(WAIT, || agent.full_log().matches(needle).count() >= count).await
}

/// Waits until the agent has subscribed (the broker confirmed every filter).
pub async fn wait_subscribed(agent: &Agent) {
    assert!(
        wait_for_log(agent, "mqtt subscribed", 1).await,
        "the agent did not subscribe; log:\n{}",
        agent.log()
    );
}

/// Publishes every message with QoS 1 and returns once the broker acknowledged them all.
pub async fn publish(port: u16, messages: &[(String, Vec<u8>)]) {
    publish_paced(port, messages, Duration::ZERO).await
}

/// [`publish`] with `gap` between two publishes (zero: as fast as the connection takes them).
pub async fn publish_paced(port: u16, messages: &[(String, Vec<u8>)], gap: Duration) {
    publish_with(port, None, messages, gap).await
}

/// [`publish`] logged in as `user` with `password`.
pub async fn publish_as(port: u16, user: &str, password: &str, messages: &[(String, Vec<u8>)]) {
    publish_with(port, Some((user, password)), messages, Duration::ZERO).await
}

async fn publish_with(
    port: u16,
    login: Option<(&str, &str)>,
    messages: &[(String, Vec<u8>)],
    gap: Duration,
) {
    let mut options = MqttOptions::new(unique("publisher"), "127.0.0.1", port);
    options.set_max_packet_size(4 << 20, 4 << 20);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, messages.len().max(1) + 10);
    let sender = tokio::spawn({
        let client = client.clone();
        let messages = messages.to_vec();
        async move {
            let mut ticks = tokio::time::interval(gap.max(Duration::from_nanos(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for (topic, payload) in messages {
                if !gap.is_zero() {
                    ticks.tick().await;
                }
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
        }
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked < messages.len() {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("the broker did not acknowledge every publish in time")
            .expect("publisher connection failed");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    sender.await.unwrap();
    client.disconnect().await.unwrap();
    // Let the DISCONNECT go out.
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
        if event == Event::Outgoing(Outgoing::Disconnect) {
            break;
        }
    }
}

/// An event whose order is visible: `seq` counts up per alert key `key`.
pub fn keyed_event(integration_key: &str, key: usize, seq: usize) -> Vec<u8> {
    json!({"integrationKey": integration_key, "eventType": "ALERT", "summary": format!("seq {seq}"),
           "alertKey": format!("key-{key}"), "customDetails": {"seq": seq, "key": key}})
    .to_string()
    .into_bytes()
}

/// `seq`s per key as they arrived (duplicates included).
pub fn seqs_by_key(events: &[Value]) -> HashMap<u64, Vec<u64>> {
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for event in events {
        let (Some(key), Some(seq)) = (
            event["customDetails"]["key"].as_u64(),
            event["customDetails"]["seq"].as_u64(),
        ) else {
            continue;
        };
        by_key.entry(key).or_default().push(seq);
    }
    by_key
}

/// Duplicates (at least once) dropped, keeping each first arrival.
pub fn first_arrivals(seqs: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

/// Asserts every key got `0..per_key`, first arrivals in order.
/// Waits until each of `keys` keys' `per_key` events arrived at least once, then asserts
/// that every key's first arrivals are in order.
pub async fn assert_all_arrive_in_order(
    stand_in: &StandIn,
    agent: &Agent,
    keys: usize,
    per_key: usize,
) {
    let all = keys * per_key;
    let arrived = crate::common::eventually(WAIT, || {
        seqs_by_key(&stand_in.events())
            .values()
            .map(|s| first_arrivals(s).len())
            .sum::<usize>()
            >= all
    })
    .await;
    assert!(
        arrived,
        "{} events arrived; log:\n{}",
        stand_in.events().len(),
        agent.log()
    );
    assert_all_in_order(&stand_in.events(), keys, per_key, &agent.log());
}

pub fn assert_all_in_order(events: &[Value], keys: usize, per_key: usize, log: &str) {
    let by_key = seqs_by_key(events);
    for key in 0..keys as u64 {
        let seqs = by_key.get(&key).cloned().unwrap_or_default();
        assert_eq!(
            first_arrivals(&seqs),
            (0..per_key as u64).collect::<Vec<_>>(),
            "key-{key} incomplete or out of order: {seqs:?}\nagent log:\n{log}"
        );
    }
}

/// From a Mosquitto log written with `log_type all`: the packet ids the broker sent to
/// `client_id` in PUBLISHes (first sends only, not resends) and the ids of the PUBACKs it
/// received from it, both in log order.
pub fn broker_publishes_and_acks(log: &str, client_id: &str) -> (Vec<u32>, Vec<u32>) {
    let (sent_prefix, ack_prefix) = (
        format!("Sending PUBLISH to {client_id} (d0,"),
        format!("Received PUBACK from {client_id} (Mid: "),
    );
    let mut sent = Vec::new();
    let mut acked = Vec::new();
    for line in log.lines() {
        if let Some(at) = line.find(&sent_prefix) {
            let rest = &line[at + sent_prefix.len()..];
            if let Some(mid) = rest
                .split(", ")
                .find_map(|field| field.strip_prefix('m'))
                .and_then(|m| m.parse().ok())
            {
                sent.push(mid);
            }
        } else if let Some(at) = line.find(&ack_prefix) {
            let rest = &line[at + ack_prefix.len()..];
            if let Some(mid) = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|m| m.parse().ok())
            {
                acked.push(mid);
            }
        }
    }
    (sent, acked)
}
