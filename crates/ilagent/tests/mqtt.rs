//! The MQTT source without the buffer, against real Mosquitto brokers and the ilert
//! stand-in, with the agent as a separate process: mapping from wildcard topics, QoS 1
//! at least once through API failures and a SIGKILL, dead letters, large payloads and
//! shared subscriptions, and metrics labelled by the subscription, never the concrete topic.

mod common;
mod http_support;
mod mqtt_support;

use std::collections::HashSet;

use common::unique;
use ilert_standin::{Behaviour, StandIn};
use mqtt_support::*;
use serde_json::{Value, json};
use testkit::{Mosquitto, MosquittoConfig};

/// The machine's own Mosquitto.
const SYSTEM_BROKER: u16 = 1883;

fn without_custom_details(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.remove("customDetails");
    }
    event
}

#[tokio::test]
async fn events_and_heartbeats_from_wildcard_topics_and_several_event_topics_arrive_as_mapped() {
    let stand_in = StandIn::start().await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let prefix = unique("it-wildcards");
    let mut args = agent_args(SYSTEM_BROKER, &unique("agent"), &db.path().join("q.db3"));
    args.extend([
        "-e".to_string(),
        format!("{prefix}/+/alarms"),
        "-e".to_string(),
        format!("{prefix}/direct"),
        "-r".to_string(),
        format!("{prefix}/beats/#"),
    ]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    let alert = json!({"integrationKey": "il1api-mqtt-1", "eventType": "ALERT", "summary": "pump 7 stopped", "alertKey": "pump-7", "priority": "HIGH"});
    let resolve =
        json!({"integrationKey": "il1api-mqtt-1", "eventType": "RESOLVE", "alertKey": "pump-7"});
    publish(
        SYSTEM_BROKER,
        &[
            (
                format!("{prefix}/pump7/alarms"),
                alert.to_string().into_bytes(),
            ),
            (
                format!("{prefix}/not/subscribed"),
                alert.to_string().into_bytes(),
            ),
            (format!("{prefix}/direct"), resolve.to_string().into_bytes()),
            (
                format!("{prefix}/beats/site-1/agent"),
                br#"{"integrationKey": "il1hbt-mqtt-1"}"#.to_vec(),
            ),
        ],
    )
    .await;

    let requests = stand_in.wait_for_requests(3, WAIT).await;
    assert_eq!(requests.len(), 3, "agent log:\n{}", agent.log());
    let events = stand_in.events();
    assert_eq!(events.len(), 2, "{events:?}");
    // Where each came from is in customDetails: the exact topic, wildcards resolved.
    assert_eq!(
        events[0]["customDetails"]["topic"],
        json!(format!("{prefix}/pump7/alarms"))
    );
    assert_eq!(
        events[1]["customDetails"]["topic"],
        json!(format!("{prefix}/direct"))
    );
    let events: Vec<Value> = events.into_iter().map(without_custom_details).collect();
    assert_eq!(events, [alert, resolve]);
    let mut paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/heartbeats/il1hbt-mqtt-1",
            "/api/v1/events/mqtt/il1api-mqtt-1",
            "/api/v1/events/mqtt/il1api-mqtt-1"
        ]
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("mqtt source stopped"), "{log}");
    assert_eq!(stand_in.requests().len(), 3, "nothing else arrived");
}

#[tokio::test]
async fn qos1_messages_wait_for_a_failing_api_and_arrive_in_order_after_it_recovers() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("agent"), &db.path().join("q.db3"));
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    const KEYS: usize = 4;
    const PER_KEY: usize = 5;
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| (topic.clone(), keyed_event("il1api-flaky", key, seq)))
        .collect();
    publish(broker.port(), &messages).await;

    // Failing for a while: every key's first message is retried, none gets through.
    stand_in.wait_for_requests(3 * KEYS, WAIT).await;
    assert!(stand_in.events().is_empty());
    stand_in.set_behaviour(Behaviour::default());

    let deadline = tokio::time::Instant::now() + WAIT;
    while stand_in.events().len() < KEYS * PER_KEY && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let events = stand_in.events();
    assert_all_in_order(&events, KEYS, PER_KEY, &agent.log());
    assert_eq!(
        events.len(),
        KEYS * PER_KEY,
        "no duplicates without a reconnect"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn sigkill_mid_stream_and_a_restart_with_the_same_client_id_lose_nothing() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    // Slow enough that the kill lands with messages in flight and unacknowledged.
    stand_in.set_behaviour(Behaviour {
        latency_ms: 40,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let (topic, client_id) = (unique("events"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db.path().join("q.db3"));
    args.extend([
        "-e".to_string(),
        topic.clone(),
        "--rate_limit_events".to_string(),
        "0".to_string(),
    ]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    const KEYS: usize = 10;
    const PER_KEY: usize = 20;
    let batch = |seqs: std::ops::Range<usize>| -> Vec<(String, Vec<u8>)> {
        seqs.flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
            .map(|(seq, key)| (topic.clone(), keyed_event("il1api-crash", key, seq)))
            .collect()
    };
    publish(broker.port(), &batch(0..10)).await;
    stand_in.wait_for_requests(30, WAIT).await;
    agent.kill().await;
    let before_restart = stand_in.events().len();
    assert!(
        before_restart < KEYS * 10,
        "the kill came too late to test anything"
    );

    // Published while the agent is down: the broker keeps them in the session.
    publish(broker.port(), &batch(10..PER_KEY)).await;
    let agent = start_agent(&stand_in, &args, &[]);
    let deadline = tokio::time::Instant::now() + WAIT;
    let complete = |events: &[Value]| {
        let seen: HashSet<(u64, u64)> = events
            .iter()
            .map(|e| {
                (
                    e["customDetails"]["key"].as_u64().unwrap_or(0),
                    e["customDetails"]["seq"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        seen.len() == KEYS * PER_KEY
    };
    while !complete(&stand_in.events()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_all_in_order(&stand_in.events(), KEYS, PER_KEY, &agent.log());
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_permanently_rejected_message_does_not_hold_back_later_ones_and_is_dead_lettered() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: [("il1api-unknown".to_string(), 404)].into(),
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    let unknown_key = json!({"integrationKey": "il1api-unknown", "eventType": "ALERT", "summary": "x", "alertKey": "k"});
    let bad_type = json!({"integrationKey": "il1api-good", "eventType": "CLOSE", "alertKey": "k"});
    let first = json!({"integrationKey": "il1api-good", "eventType": "ALERT", "summary": "after", "alertKey": "k"});
    let second = json!({"integrationKey": "il1api-good", "eventType": "RESOLVE", "alertKey": "k"});
    publish(
        broker.port(),
        &[
            (topic.clone(), unknown_key.to_string().into_bytes()),
            (topic.clone(), bad_type.to_string().into_bytes()),
            (topic.clone(), b"not json".to_vec()),
            (topic.clone(), first.to_string().into_bytes()),
            (topic.clone(), second.to_string().into_bytes()),
        ],
    )
    .await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while stand_in.events().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let events: Vec<Value> = stand_in
        .events()
        .into_iter()
        .map(without_custom_details)
        .collect();
    assert_eq!(events, [first, second], "{}", agent.log());

    assert!(wait_for_stat(&db_file, "dead_letters", |n| n == 3).await);
    let (code, listing) = queue_command(&db_file, &["dead_letters"]).await;
    assert_eq!(code, Some(0));
    // Different keys go in parallel, so the rows are in the order they failed.
    let mut rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    rows.sort_by_key(|r| r[6]);
    let found: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[3], r[4], r[5])).collect();
    assert_eq!(
        found,
        [
            (topic.as_str(), "permanent", "1"),
            (topic.as_str(), "invalid", "0"),
            (topic.as_str(), "invalid", "0")
        ],
        "{listing}"
    );
    assert!(rows[0][6].starts_with("404"), "{listing}");
    assert!(rows[1][6].contains("`CLOSE`"), "{listing}");
    assert!(
        rows[2][6].starts_with("payload is not valid JSON"),
        "{listing}"
    );
    let (_, json_lines) = queue_command(&db_file, &["dead_letters", "--json"]).await;
    let payloads: HashSet<String> = json_lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: HashSet<String> = [
        unknown_key.to_string(),
        bad_type.to_string(),
        "not json".to_string(),
    ]
    .into();
    assert_eq!(
        payloads, expected,
        "the dead letters keep the payloads as received"
    );
    let log = agent.full_log();
    assert_eq!(
        log.matches("message rejected").count(),
        3,
        "one error line each:\n{log}"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_large_payload_up_to_the_packet_limit_is_delivered() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("agent"), &db.path().join("q.db3"));
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // About 900 KiB: over rumqttc's 10 KiB default, under the 1 MiB default limit.
    let details = "x".repeat(900 * 1024);
    let event = json!({"integrationKey": "il1api-large", "eventType": "ALERT", "summary": "big", "details": details});
    publish(broker.port(), &[(topic, event.to_string().into_bytes())]).await;
    stand_in.wait_for_requests(1, WAIT).await;
    let events = stand_in.events();
    assert_eq!(events.len(), 1, "{}", agent.log());
    assert_eq!(
        events[0]["details"].as_str().map(str::len),
        Some(900 * 1024)
    );
    agent.kill().await;
}

#[tokio::test]
async fn two_agents_in_a_shared_group_each_deliver_part_and_together_all() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let (one, two) = (
        StandIn::start().await.unwrap(),
        StandIn::start().await.unwrap(),
    );
    let db = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("shared"), unique("group"));
    let start = |stand_in: &StandIn, name: &str| {
        let mut args = agent_args(
            broker.port(),
            &unique(name),
            &db.path().join(format!("{name}.db3")),
        );
        args.extend([
            "-e".to_string(),
            format!("{topic}/+"),
            "--mqtt_shared_group".to_string(),
            group.clone(),
            "--rate_limit_events".to_string(),
            "0".to_string(),
        ]);
        start_agent(stand_in, &args, &[])
    };
    let (agent_one, agent_two) = (start(&one, "one"), start(&two, "two"));
    wait_subscribed(&agent_one).await;
    wait_subscribed(&agent_two).await;

    const MESSAGES: usize = 200;
    let messages: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|seq| {
            (
                format!("{topic}/{}", seq % 7),
                keyed_event("il1api-shared", seq, 0),
            )
        })
        .collect();
    publish(broker.port(), &messages).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while one.events().len() + two.events().len() < MESSAGES
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let keys = |stand_in: &StandIn| -> HashSet<u64> {
        stand_in
            .events()
            .iter()
            .filter_map(|e| e["customDetails"]["key"].as_u64())
            .collect()
    };
    let (first, second) = (keys(&one), keys(&two));
    assert!(
        !first.is_empty() && !second.is_empty(),
        "one agent got everything: {} and {}",
        first.len(),
        second.len()
    );
    let all: HashSet<u64> = first.union(&second).copied().collect();
    assert_eq!(
        all.len(),
        MESSAGES,
        "{}\n{}",
        agent_one.log(),
        agent_two.log()
    );
    assert!(
        agent_one
            .full_log()
            .contains(&format!("$share/{group}/{topic}/+"))
    );
    agent_one.kill().await;
    agent_two.kill().await;
}

#[tokio::test]
async fn messages_under_a_wildcard_are_counted_under_the_filter_not_under_each_topic() {
    const MACHINES: usize = 30;
    let stand_in = StandIn::start().await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let prefix = unique("it-labels");
    let filter = format!("{prefix}/+/alarms");
    let metrics_port = testkit::free_port();
    let mut args = agent_args(SYSTEM_BROKER, &unique("agent"), &db.path().join("q.db3"));
    args.extend([
        "-e".to_string(),
        filter.clone(),
        "--metrics_port".to_string(),
        metrics_port.to_string(),
    ]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // One producer per machine, each on its own concrete topic.
    let messages: Vec<(String, Vec<u8>)> = (0..MACHINES)
        .map(|machine| {
            (
                format!("{prefix}/machine-{machine}/alarms"),
                keyed_event("il1api-labels", machine, 0),
            )
        })
        .collect();
    publish(SYSTEM_BROKER, &messages).await;
    let requests = stand_in.wait_for_requests(MACHINES, WAIT).await;
    assert_eq!(requests.len(), MACHINES, "agent log:\n{}", agent.log());

    let samples = http_support::scrape(metrics_port).await;
    let received: Vec<&http_support::Sample> = samples
        .iter()
        .filter(|s| s.name == "ilagent_messages_received_total")
        .collect();
    assert_eq!(
        http_support::value(
            &samples,
            "ilagent_messages_received_total",
            &[("source", "mqtt"), ("topic", filter.as_str())]
        ),
        MACHINES as f64,
        "{received:?}"
    );
    assert!(
        samples.iter().all(|s| s
            .labels
            .iter()
            .all(|(_, value)| !value.contains("machine-"))),
        "no concrete topic is a label value: {received:?}"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
