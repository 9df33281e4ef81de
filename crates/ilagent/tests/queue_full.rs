//! A capped queue (`--queue_max_size`): when the SQLite file is full the proxy answers 503
//! with `Retry-After` and stores nothing, the MQTT buffer stops acknowledging and the
//! broker keeps the rest; everything accepted is delivered once ilert is back, and new
//! messages are taken again. The state change is logged and counted once, not per
//! message. A cap too small for the sources' messages stops the start with exit 2.

mod common;
mod http_support;
mod mqtt_support;

use std::time::Duration;

use common::{Agent, eventually, unique};
use http_support::{
    assert_each_once_in_order, client, event, post_with_retry_after as post, scrape, start_proxy,
    value, wait_for_events, wait_up,
};
use ilert_standin::{Behaviour, StandIn};
use mqtt_support::{
    agent_args, assert_all_arrive_in_order, broker_publishes_and_acks, keyed_event, publish,
    queue_stat, start_agent, wait_for_stat, wait_subscribed,
};
use serde_json::{Value, json};
use testkit::{Mosquitto, MosquittoConfig, free_port};

/// Generous: CI machines are slow; tests wait for conditions, never for time.
const WAIT: Duration = Duration::from_secs(120);
/// The smallest cap the default message sizes allow (4 of 1 MiB); new messages stop at
/// half of it, the other half is the reserve for draining.
const CAP: &str = "4MiB";
/// Bytes of padding per message, so that a few dozen fill the queue.
const PAD: usize = 96 << 10;
/// The log lines of the state changes.
const FILLED: &str = "new messages are refused";
const ROOM_AGAIN: &str = "SQLite queue has room again";

/// ilert does not answer: every attempt times out (after `--request_timeout`), so the
/// rows stay and few attempts eat into the per-key rate limit before ilert is back.
fn unresponsive() -> Behaviour {
    Behaviour {
        latency_ms: 600_000,
        ..Behaviour::default()
    }
}

/// [`event`] padded to about [`PAD`] bytes.
fn big_event(key: usize, seq: usize) -> Value {
    let mut body = event(key, seq);
    // An integration key per alert key: ilert's budget of 50 a minute is per key.
    body["integrationKey"] = json!(format!("il1api-proxy-{key}"));
    body["details"] = json!("x".repeat(PAD));
    body
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_every_accepted_event_arrives_once() {
    const KEYS: usize = 3;
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(unresponsive());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("capped.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &["--queue_max_size", CAP]);
    wait_up(&agent, port).await;
    let client = client();

    // ilert fails, so every accepted event stays queued until the queue is full.
    let mut accepted = 0;
    let refusal = loop {
        let (status, retry_after, body) =
            post(&client, port, &big_event(accepted % KEYS, accepted / KEYS)).await;
        match status {
            202 => accepted += 1,
            _ => break (status, retry_after, body),
        }
        assert!(accepted < 200, "never full; log:\n{}", agent.log());
    };
    let (status, retry_after, body) = refusal;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "QUEUE_FULL", "{body}");
    assert_eq!(body["status"], 503, "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(retry_after > 0);
    assert!(accepted >= 10, "only {accepted} events fit in {CAP}");
    // Still full while nothing is delivered; a refused event left nothing behind.
    for _ in 0..5 {
        let (status, _, body) = post(&client, port, &big_event(0, 9999)).await;
        assert_eq!((status, body["code"].as_str()), (503, Some("QUEUE_FULL")));
    }
    assert_eq!(queue_stat(&db, "queued").await, accepted as u64);

    let metrics = scrape(port).await;
    assert_eq!(value(&metrics, "ilagent_queue_full", &[]), 1.0);
    assert_eq!(value(&metrics, "ilagent_queue_full_total", &[]), 1.0);
    assert_eq!(value(&metrics, "ilagent_queue_max_bytes", &[]), 4194304.0);
    let bytes = value(&metrics, "ilagent_queue_bytes", &[]);
    assert!(
        bytes > 1e6 && bytes <= 4194304.0,
        "ilagent_queue_bytes {bytes}"
    );

    // ilert is back: everything accepted arrives, once and in order per key.
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_events(&stand_in, accepted, WAIT).await,
        "{} of {accepted} arrived; log:\n{}",
        stand_in.events().len(),
        agent.log()
    );
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);

    // Room again: the next events of each key are accepted and delivered behind the others.
    let mut total = accepted;
    while total % KEYS != 0 || total == accepted {
        let (status, _, body) = post(&client, port, &big_event(total % KEYS, total / KEYS)).await;
        assert_eq!(status, 202, "{body}");
        total += 1;
    }
    assert!(wait_for_events(&stand_in, total, WAIT).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = stand_in.events();
    assert_eq!(events.len(), total, "each accepted event once");
    assert_each_once_in_order(&events, KEYS, total / KEYS, &agent.log());
    assert_eq!(value(&scrape(port).await, "ilagent_queue_full", &[]), 0.0);

    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches(FILLED).count(),
        1,
        "one line when it fills:\n{log}"
    );
    assert_eq!(
        log.matches(ROOM_AGAIN).count(),
        1,
        "one when it has room:\n{log}"
    );
}

/// An MQTT message for key `key` padded to about [`PAD`] bytes.
fn big_message(key: usize, seq: usize) -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&keyed_event(&format!("il1api-full-{key}"), key, seq)).unwrap();
    body["details"] = json!("x".repeat(PAD));
    body.to_string().into_bytes()
}

#[tokio::test]
async fn a_full_buffer_stops_acknowledging_and_the_broker_keeps_the_rest_until_there_is_room() {
    const KEYS: usize = 3;
    const PER_KEY: usize = 20;
    let broker = Mosquitto::start(MosquittoConfig {
        extra: "log_type all\n".into(),
        ..MosquittoConfig::default()
    })
    .unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(unresponsive());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db3");
    let (topic, client_id) = (unique("events"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db);
    args.extend(["-e", &topic, "--mqtt_buffer", "--queue_max_size", CAP].map(str::to_string));
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // About 5.6 MiB for a queue that takes 2 MiB of new messages.
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| (topic.clone(), big_message(key, seq)))
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        eventually(WAIT, || agent.full_log().contains(FILLED)).await,
        "{}",
        agent.log()
    );
    let queued = queue_stat(&db, "queued").await;
    assert!(queued < messages.len() as u64, "{queued} queued");
    let broker_log = std::fs::read_to_string(broker.log_path()).unwrap();
    let (_, acked) = broker_publishes_and_acks(&broker_log, &client_id);
    assert!(
        acked.len() < messages.len(),
        "the agent acknowledged {} of {} while full",
        acked.len(),
        messages.len()
    );

    // ilert is back: the queue drains, the broker sends the rest, none is lost.
    stand_in.set_behaviour(Behaviour::default());
    let all = messages.len();
    assert_all_arrive_in_order(&stand_in, &agent, KEYS, PER_KEY).await;
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);

    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let (filled, room) = (log.matches(FILLED).count(), log.matches(ROOM_AGAIN).count());
    assert!(filled >= 1 && room >= 1, "{log}");
    // Once per time it fills, never once per message.
    assert!(
        filled <= all / 10,
        "{filled} lines for {all} messages:\n{log}"
    );
}

#[tokio::test]
async fn without_the_buffer_a_full_queue_holds_back_the_spill_and_its_acknowledgements() {
    const KEYS: usize = 3;
    const PER_KEY: usize = 20;
    let broker = Mosquitto::start(MosquittoConfig {
        extra: "log_type all\n".into(),
        ..MosquittoConfig::default()
    })
    .unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(unresponsive());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spill.db3");
    let (topic, client_id) = (unique("events"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db);
    args.extend(["-e", &topic, "--queue_max_size", CAP].map(str::to_string));
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // ilert does not answer, so every message is spilled to the file after 1 s, until
    // the file is full.
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| (topic.clone(), big_message(key, seq)))
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        eventually(WAIT, || agent.full_log().contains(FILLED)).await,
        "{}",
        agent.log()
    );
    let broker_log = std::fs::read_to_string(broker.log_path()).unwrap();
    let (_, acked) = broker_publishes_and_acks(&broker_log, &client_id);
    assert!(
        acked.len() < messages.len(),
        "the agent acknowledged {} of {} while full",
        acked.len(),
        messages.len()
    );

    stand_in.set_behaviour(Behaviour::default());
    assert_all_arrive_in_order(&stand_in, &agent, KEYS, PER_KEY).await;
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_cap_too_small_for_the_largest_message_stops_the_start_with_exit_2() {
    let port = free_port().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["-p", &port, "--queue_max_size", "1MiB"], "at least 4MiB"),
        (
            &[
                "-p",
                &port,
                "--http_max_body",
                "2MiB",
                "--queue_max_size",
                "4MiB",
            ],
            "at least 8MiB",
        ),
        (&["-p", &port, "--queue_max_size", "lots"], "1GiB"),
    ];
    for (args, fix) in cases {
        let mut all = vec!["daemon"];
        all.extend_from_slice(args);
        let mut agent = Agent::start(&all, &[]);
        let status = tokio::time::timeout(Duration::from_secs(30), agent.child.wait())
            .await
            .unwrap()
            .unwrap();
        let log = agent.full_log();
        assert_eq!(status.code(), Some(2), "{args:?}: {log}");
        assert!(log.contains("--queue_max_size"), "{args:?}: {log}");
        assert!(log.contains(fix), "{args:?}: {log}");
    }
}

#[tokio::test]
async fn a_kafka_dead_letter_waits_for_room_in_a_full_queue_and_its_offset_waits_with_it() {
    const KEYS: usize = 3;
    let tansu = testkit::Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let (group, topic) = (unique("full-dl-group"), unique("full-dl"));
    common::create_topic(&bootstrap, &topic, 1).await;
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(unresponsive());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kafka-full.db3");
    let port = free_port();
    // Kafka without --kafka_dlq_topic: its dead letters go to the SQLite file.
    let mut extra: Vec<&str> = common::kafka_args(&bootstrap, &group)
        .into_iter()
        .skip(1) // "daemon": start_proxy adds it
        .collect();
    extra.extend(["-e", topic.as_str(), "--queue_max_size", CAP]);
    let agent = start_proxy(&stand_in.url(), &db, port, &extra);
    wait_up(&agent, port).await;

    // The proxy fills the queue while ilert does not answer.
    let client = client();
    let mut accepted = 0;
    while post(&client, port, &big_event(accepted % KEYS, accepted / KEYS))
        .await
        .0
        == 202
    {
        accepted += 1;
        assert!(accepted < 200, "never full; log:\n{}", agent.log());
    }

    // An invalid Kafka message: its dead letter finds no room, so it is retried (quietly:
    // the full queue was logged once) and its offset stays uncommitted.
    let producer = common::producer(&bootstrap);
    common::produce(&producer, &topic, Some(0), Some("bad"), b"not json").await;
    let mut received = 0.0;
    for _ in 0..300 {
        let metrics = scrape(port).await;
        received = value(
            &metrics,
            "ilagent_messages_received_total",
            &[("source", "kafka")],
        );
        if received >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        received >= 1.0,
        "the Kafka message never came; log:\n{}",
        agent.log()
    );
    // Whatever the agent does with it now, it must not settle it while the queue is full.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(queue_stat(&db, "dead_letters").await, 0);
        assert!(
            common::committed(&bootstrap, &group, &topic, 1)[0] <= 0,
            "committed past a dead letter that was not written"
        );
    }

    // ilert is back: the queue drains, the dead letter is written, the offset moves on and
    // the next Kafka event flows.
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_stat(&db, "dead_letters", |n| n == 1).await,
        "{}",
        agent.log()
    );
    let next = json!({
        "integrationKey": "il1api-kafka-after-full",
        "eventType": "ALERT",
        "summary": "after the full queue",
        "alertKey": "after-full",
    });
    common::produce(
        &producer,
        &topic,
        Some(0),
        Some("good"),
        next.to_string().as_bytes(),
    )
    .await;
    assert!(
        eventually(WAIT, || common::committed(&bootstrap, &group, &topic, 1)[0]
            >= 2)
        .await,
        "offsets not committed past the dead letter; log:\n{}",
        agent.log()
    );
    assert!(
        wait_for_events(&stand_in, accepted + 1, WAIT).await,
        "{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
