//! The Kafka source against a real Kafka-compatible broker (tansu) and the ilert stand-in,
//! with the agent as a separate process: mapping, at-least-once, order, dead letters,
//! rebalances and crashes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Agent, committed, create_topic, eventually, kafka_args, produce, producer, unique};
use ilert_standin::{Behaviour, StandIn};
use serde_json::{Value, json};
use testkit::Tansu;

const WAIT: Duration = Duration::from_secs(60);

fn stand_in_env(stand_in: &StandIn) -> Vec<(&'static str, String)> {
    vec![
        ("ILERT_API_URL", stand_in.url()),
        ("ILAGENT_ILERT_BEAT_URL", stand_in.url()),
    ]
}

fn start_agent(stand_in: &StandIn, args: &[&str]) -> Agent {
    let env = stand_in_env(stand_in);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start(args, &env)
}

#[tokio::test]
async fn events_and_heartbeats_from_two_topics_arrive_as_mapped_and_are_committed() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (events, heartbeats, group) = (unique("events"), unique("heartbeats"), unique("group"));
    create_topic(&bootstrap, &events, 1).await;
    create_topic(&bootstrap, &heartbeats, 1).await;
    let producer = producer(&bootstrap);
    let alert = json!({"integrationKey": "il1api-k1", "eventType": "ALERT", "summary": "disk full", "alertKey": "db-1/disk", "priority": "HIGH"});
    let resolve =
        json!({"integrationKey": "il1api-k1", "eventType": "RESOLVE", "alertKey": "db-1/disk"});
    produce(
        &producer,
        &events,
        None,
        Some("db-1"),
        alert.to_string().as_bytes(),
    )
    .await;
    produce(
        &producer,
        &events,
        None,
        Some("db-1"),
        resolve.to_string().as_bytes(),
    )
    .await;
    produce(
        &producer,
        &heartbeats,
        None,
        None,
        br#"{"integrationKey": "il1hbt-legacy-1"}"#,
    )
    .await;
    produce(
        &producer,
        &heartbeats,
        None,
        None,
        br#"{"apiKey": "monitor-1"}"#,
    )
    .await;

    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &events, "-r", &heartbeats]);
    let agent = start_agent(&stand_in, &args);

    let requests = stand_in.wait_for_requests(4, WAIT).await;
    assert_eq!(requests.len(), 4, "agent log:\n{}", agent.log());
    let mut events_received = stand_in.events();
    for event in &mut events_received {
        // Where the message came from: topic, partition, offset, and the message key as
        // `messageKey` (ilagent 0.9's name).
        assert_eq!(event["customDetails"]["topic"], json!(events));
        assert_eq!(event["customDetails"]["messageKey"], "db-1");
        event.as_object_mut().unwrap().remove("customDetails");
    }
    assert_eq!(events_received, [alert, resolve]);
    let event_paths: Vec<&str> = requests
        .iter()
        .filter(|r| r.json.is_some())
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        event_paths,
        [
            "/api/v1/events/kafka/il1api-k1",
            "/api/v1/events/kafka/il1api-k1"
        ]
    );
    let mut heartbeat_paths: Vec<&str> = requests
        .iter()
        .filter(|r| r.json.is_none())
        .map(|r| r.path.as_str())
        .collect();
    heartbeat_paths.sort();
    assert_eq!(
        heartbeat_paths,
        ["/api/heartbeats/il1hbt-legacy-1", "/api/pings/monitor-1"]
    );

    let all_committed = eventually(WAIT, || {
        committed(&bootstrap, &group, &events, 1) == [2]
            && committed(&bootstrap, &group, &heartbeats, 1) == [2]
    })
    .await;
    assert!(
        all_committed,
        "offsets not committed; agent log:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn every_mapping_flag_applies_to_kafka_messages() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("alarms"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    let messages = [
        json!({"type": "ALARM", "state": "SET", "alarm": {"text": "pump 7 stopped"}, "m": {"code": "P7"}}),
        json!({"type": "INFO", "state": "SET", "alarm": {"text": "filtered out"}, "m": {"code": "P7"}}),
        json!({"type": "ALARM", "state": "ACK", "m": {"code": "P7"}}),
        json!({"type": "ALARM", "state": "CLR", "m": {"code": "P7"}}),
    ];
    for message in &messages {
        produce(
            &producer,
            &topic,
            None,
            None,
            message.to_string().as_bytes(),
        )
        .await;
    }

    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--event_key",
        "il1api-fixed-key",
        "--map_key_etype",
        "state",
        "--map_key_summary",
        "alarm.text",
        "--map_key_alert_key",
        "m.code",
        "--map_val_etype_alert",
        "SET",
        "--map_val_etype_accept",
        "ACK",
        "--map_val_etype_resolve",
        "CLR",
        "--filter_key",
        "type",
        "--filter_val",
        "ALARM",
        "--forward_message_payload",
    ]);
    let agent = start_agent(&stand_in, &args);

    stand_in.wait_for_requests(3, WAIT).await;
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [4]).await,
        "{}",
        agent.log()
    );
    let events = stand_in.events();
    let summary: Vec<(Value, Value, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["integrationKey"].clone(),
                e["eventType"].clone(),
                e["alertKey"].clone(),
                e["summary"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!("il1api-fixed-key"),
                json!("ALERT"),
                json!("P7"),
                json!("pump 7 stopped")
            ),
            (
                json!("il1api-fixed-key"),
                json!("ACCEPT"),
                json!("P7"),
                Value::Null
            ),
            (
                json!("il1api-fixed-key"),
                json!("RESOLVE"),
                json!("P7"),
                Value::Null
            ),
        ],
        "{}",
        agent.log()
    );
    assert_eq!(
        events[0]["customDetails"], messages[0],
        "--forward_message_payload sends the whole payload"
    );
    assert_eq!(
        stand_in.requests()[0].path,
        "/api/v1/events/kafka/il1api-fixed-key"
    );
    agent.kill().await;
}

/// Keeps the payload order visible per alert key: `seq` counts up per key.
fn keyed_event(key: usize, seq: usize) -> Vec<u8> {
    json!({"integrationKey": "il1api-order", "eventType": "ALERT", "summary": format!("seq {seq}"),
           "alertKey": format!("key-{key}"), "customDetails": {"seq": seq, "key": key}})
    .to_string()
    .into_bytes()
}

fn seqs_by_key(events: &[Value]) -> HashMap<u64, Vec<u64>> {
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for event in events {
        let key = event["customDetails"]["key"].as_u64().unwrap();
        by_key
            .entry(key)
            .or_default()
            .push(event["customDetails"]["seq"].as_u64().unwrap());
    }
    by_key
}

#[tokio::test]
async fn each_alert_keys_events_arrive_in_order_while_keys_are_delivered_in_parallel() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 50,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("ordered"), unique("group"));
    create_topic(&bootstrap, &topic, 3).await;
    let producer = producer(&bootstrap);
    const KEYS: usize = 100;
    const PER_KEY: usize = 5;
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            // The Kafka key keeps one alert key on one partition, as producers do.
            produce(
                &producer,
                &topic,
                None,
                Some(&format!("key-{key}")),
                &keyed_event(key, seq),
            )
            .await;
        }
    }

    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--rate_limit_events", "0"]);
    let agent = start_agent(&stand_in, &args);

    let requests = stand_in.wait_for_requests(KEYS * PER_KEY, WAIT).await;
    assert_eq!(requests.len(), KEYS * PER_KEY, "{}", agent.log());
    for (key, seqs) in seqs_by_key(&stand_in.events()) {
        assert_eq!(
            seqs,
            (0..PER_KEY as u64).collect::<Vec<_>>(),
            "key-{key} out of order"
        );
    }
    // With 50 ms per request, one-at-a-time delivery would let at most one request arrive
    // per 50 ms; many arriving together shows the keys went in parallel.
    let times: Vec<u64> = requests.iter().map(|r| r.received_at_ms).collect();
    let most_in_50ms = times
        .iter()
        .map(|t| times.iter().filter(|u| **u >= *t && **u < t + 50).count())
        .max()
        .unwrap();
    assert!(
        most_in_50ms >= 10,
        "at most {most_in_50ms} requests within 50 ms: keys were not delivered in parallel"
    );
    agent.kill().await;
}

#[tokio::test]
async fn kafka_offsets_start_a_partition_at_the_given_offset() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("replay"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    for seq in 0..5 {
        produce(&producer, &topic, None, None, &keyed_event(0, seq)).await;
    }

    let start = format!("{topic}:0:3");
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--kafka_offsets", &start]);
    let agent = start_agent(&stand_in, &args);

    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [5]).await,
        "{}",
        agent.log()
    );
    let seqs: Vec<u64> = stand_in
        .events()
        .iter()
        .map(|e| e["customDetails"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        [3, 4],
        "offsets 0 to 2 are skipped; log:\n{}",
        agent.log()
    );
    agent.kill().await;
}

/// The consumer asks for fetch responses of 64 KB to keep its memory small; a message
/// larger than that still arrives (the broker returns the first batch whatever its size),
/// in its place between the small ones.
#[tokio::test]
async fn a_message_larger_than_a_fetch_response_arrives_in_order() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("large"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    let event = |seq: u64, blob: &str| {
        json!({"integrationKey": "il1api-k1", "eventType": "ALERT", "summary": "big",
               "alertKey": "k", "customDetails": {"seq": seq, "blob": blob}})
        .to_string()
    };
    let blob = "x".repeat(900_000);
    produce(&producer, &topic, None, None, event(0, "").as_bytes()).await;
    produce(&producer, &topic, None, None, event(1, &blob).as_bytes()).await;
    produce(&producer, &topic, None, None, event(2, "").as_bytes()).await;

    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic]);
    let agent = start_agent(&stand_in, &args);

    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [3]).await,
        "{}",
        agent.log()
    );
    let events = stand_in.events();
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["customDetails"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2], "log:\n{}", agent.log());
    assert_eq!(
        events[1]["customDetails"]["blob"].as_str().map(str::len),
        Some(900_000)
    );
    agent.kill().await;
}
