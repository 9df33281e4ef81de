//! The commands and payloads of ilagent's public documentation (the Kafka and MQTT consumer
//! pages), run as they are written against real brokers and the ilert stand-in. One test per
//! section, named after it; each checks what the section says happens. Where the agent
//! deliberately does better than the page (a failed Kafka delivery is retried in place
//! instead of exiting after 5 s; `--max_retries` moves a message to the dead letters instead
//! of dropping it), the test checks the better behaviour and says so.

mod common;

use std::time::Duration;

use common::{Agent, create_topic, eventually, produce, producer, queue_command};
use ilert_standin::{Behaviour, RequestKind, Scripted, StandIn};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use testkit::{Mosquitto, MosquittoConfig, Tansu, TestCerts, free_port};

const WAIT: Duration = Duration::from_secs(60);

/// The documentation's example event payload (Kafka page, MQTT page).
fn documented_event(from: &str) -> Vec<u8> {
    json!({"integrationKey": "il1api123...", "eventType": "ALERT", "summary": format!("Hey from {from}")})
        .to_string()
        .into_bytes()
}

/// The documentation's example heartbeat payload.
fn documented_heartbeat() -> Vec<u8> {
    json!({"integrationKey": "il1hbt123..."})
        .to_string()
        .into_bytes()
}

/// The agent as a user starts it: exactly `command` (after `ilagent`), in a directory of its
/// own (so the default `./ilagent.db3` is its own), with ilert played by `stand_in`.
/// `env` carries what the page leaves to the environment.
fn run(stand_in: &StandIn, command: &str, env: &[(&str, &str)]) -> Agent {
    let args: Vec<&str> = command
        .split_whitespace()
        .map(|a| a.trim_matches('\''))
        .collect();
    let url = stand_in.url();
    // Info lines (the tests wait for "mqtt subscribed"), whatever the command's -v says.
    let mut envs = vec![
        ("ILERT_API_URL", url.as_str()),
        ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
        ("RUST_LOG", "info"),
    ];
    envs.extend_from_slice(env);
    Agent::start(&args, &envs)
}

/// The exit status of an agent that stops by itself (a refused start), and its log.
async fn exited(mut agent: Agent) -> (Option<i32>, String) {
    let status = tokio::time::timeout(WAIT, agent.child.wait()).await;
    let code = status.ok().and_then(Result::ok).and_then(|s| s.code());
    (code, agent.full_log())
}

/// tansu joins a consumer group in ~20 s with librdkafka's defaults; the environment (not
/// the command) makes it a few seconds.
const FAST_GROUP_JOIN: (&str, &str) = (
    "ILAGENT_KAFKA_PROPERTY",
    "session.timeout.ms=10000;heartbeat.interval.ms=500;auto.offset.reset=earliest",
);

fn pings(stand_in: &StandIn, key: &str) -> usize {
    stand_in
        .requests()
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                RequestKind::HeartbeatPing | RequestKind::HeartbeatLegacy
            )
        })
        .filter(|r| r.key.as_deref() == Some(key) && (200..300).contains(&r.status))
        .count()
}

async fn publish(port: u16, login: Option<(&str, &str)>, qos: QoS, messages: &[(&str, Vec<u8>)]) {
    let mut options = MqttOptions::new(common::unique("publisher"), "127.0.0.1", port);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    for (topic, payload) in messages {
        client
            .publish(*topic, qos, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked < messages.len() {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("the broker acknowledged every publish")
            .expect("the publisher stays connected");
        match (qos, event) {
            (QoS::AtMostOnce, Event::Outgoing(rumqttc::Outgoing::Publish(_)))
            | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
            | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => acked += 1,
            _ => {}
        }
    }
    // QoS 0 has no acknowledgement: give the broker a moment to route it.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn wait_subscribed(agent: &Agent) {
    assert!(
        eventually(WAIT, || agent.full_log().contains("mqtt subscribed")).await,
        "the agent did not subscribe; log:\n{}",
        agent.log()
    );
}

// ---- Kafka Consumer -----------------------------------------------------------------

#[tokio::test]
async fn kafka_connection_and_payload_format_events_and_heartbeats_from_the_two_topics() {
    let tansu = Tansu::start().unwrap();
    let brokers = tansu.bootstrap_servers();
    create_topic(&brokers, "events-topic", 1).await;
    create_topic(&brokers, "heartbeats-topic", 1).await;
    let stand_in = StandIn::start().await.unwrap();
    let agent = run(
        &stand_in,
        &format!(
            "daemon --kafka_brokers {brokers} --kafka_group_id ilagent -e 'events-topic' -r 'heartbeats-topic'"
        ),
        &[FAST_GROUP_JOIN],
    );
    let producer = producer(&brokers);
    produce(
        &producer,
        "events-topic",
        None,
        None,
        &documented_event("Kafka"),
    )
    .await;
    produce(
        &producer,
        "heartbeats-topic",
        None,
        None,
        &documented_heartbeat(),
    )
    .await;

    assert!(
        eventually(WAIT, || !stand_in.events().is_empty()
            && pings(&stand_in, "il1hbt123...") == 1)
        .await,
        "log:\n{}",
        agent.log()
    );
    let event = stand_in
        .requests()
        .into_iter()
        .find(|r| r.kind == RequestKind::Event)
        .unwrap();
    // "must belong to a Kafka alert source": posted to the Kafka alert-source API.
    assert_eq!(event.path, "/api/v1/events/kafka/il1api123...");
    assert_eq!(event.json.as_ref().unwrap()["summary"], "Hey from Kafka");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn kafka_at_least_once_delivery_the_offset_waits_until_ilert_accepted() {
    let tansu = Tansu::start().unwrap();
    let brokers = tansu.bootstrap_servers();
    create_topic(&brokers, "events-topic", 1).await;
    let stand_in = StandIn::start().await.unwrap();
    // ilert fails the first three attempts.
    stand_in.script([
        Scripted::Status(503),
        Scripted::Status(503),
        Scripted::Status(503),
    ]);
    produce(
        &producer(&brokers),
        "events-topic",
        None,
        None,
        &documented_event("Kafka"),
    )
    .await;
    let mut agent = run(
        &stand_in,
        &format!("daemon --kafka_brokers {brokers} --kafka_group_id ilagent -e 'events-topic'"),
        &[FAST_GROUP_JOIN],
    );
    assert!(
        eventually(WAIT, || stand_in.events().len() == 1).await,
        "log:\n{}",
        agent.log()
    );
    assert!(
        eventually(WAIT, || common::committed(
            &brokers,
            "ilagent",
            "events-topic",
            1
        ) == [1])
        .await,
        "committed once delivered"
    );
    // The page says ilagent exits after 5 s when a delivery fails; this one retries in place
    // (the offset still waits), so nothing needs a restart.
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent kept running"
    );
    assert_eq!(
        stand_in.requests().len(),
        4,
        "three 503s, then the delivery"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn kafka_sample_command_runs_as_documented() {
    let tansu = Tansu::start().unwrap();
    let brokers = tansu.bootstrap_servers();
    create_topic(&brokers, "events-topic", 1).await;
    create_topic(&brokers, "heartbeats-topic", 1).await;
    let stand_in = StandIn::start().await.unwrap();
    let agent = run(
        &stand_in,
        &format!(
            "daemon -v -v --kafka_brokers {brokers} --kafka_group_id ilagent -e 'events-topic' -r 'heartbeats-topic'"
        ),
        &[FAST_GROUP_JOIN],
    );
    produce(
        &producer(&brokers),
        "events-topic",
        None,
        None,
        &documented_event("Kafka"),
    )
    .await;
    assert!(
        eventually(WAIT, || stand_in.events().len() == 1).await,
        "log:\n{}",
        agent.log()
    );
    assert!(
        agent.full_log().contains("kafka source started"),
        "-v -v logs at info level"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

// ---- MQTT Consumer ------------------------------------------------------------------

#[tokio::test]
async fn mqtt_connection_and_payload_format_events_and_heartbeats_from_the_two_topics() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let port = broker.port();
    let agent = run(
        &stand_in,
        &format!(
            "daemon -m 127.0.0.1 -q {port} -n ilagent -e 'ilert/events' -r 'ilert/heartbeats'"
        ),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        port,
        None,
        QoS::AtLeastOnce,
        &[
            ("ilert/events", documented_event("MQTT")),
            ("ilert/heartbeats", documented_heartbeat()),
        ],
    )
    .await;
    assert!(
        eventually(WAIT, || stand_in.events().len() == 1
            && pings(&stand_in, "il1hbt123...") == 1)
        .await,
        "log:\n{}",
        agent.log()
    );
    let event = stand_in
        .requests()
        .into_iter()
        .find(|r| r.kind == RequestKind::Event)
        .unwrap();
    // "must belong to an MQTT alert source": posted to the MQTT alert-source API.
    assert_eq!(event.path, "/api/v1/events/mqtt/il1api123...");
    assert_eq!(event.json.as_ref().unwrap()["summary"], "Hey from MQTT");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn mqtt_connection_without_a_topic_exits_with_an_error() {
    let stand_in = StandIn::start().await.unwrap();
    let agent = run(&stand_in, "daemon -m 127.0.0.1 -q 1883 -n ilagent", &[]);
    let (code, log) = exited(agent).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("at least one topic (-e, -r, or --policy_topic)"),
        "{log}"
    );
}

#[tokio::test]
async fn mqtt_authentication_with_the_brokers_user_and_password() {
    let broker = Mosquitto::start(MosquittoConfig {
        users: vec![("my-user".into(), "my-pass".into())],
        ..MosquittoConfig::default()
    })
    .unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let port = broker.port();
    let agent = run(
        &stand_in,
        &format!(
            "daemon -m 127.0.0.1 -q {port} -n ilagent -e 'ilert/events' --mqtt_username 'my-user' --mqtt_password 'my-pass'"
        ),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        port,
        Some(("my-user", "my-pass")),
        QoS::AtLeastOnce,
        &[("ilert/events", documented_event("MQTT"))],
    )
    .await;
    assert!(
        eventually(WAIT, || stand_in.events().len() == 1).await,
        "log:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("my-pass"), "the password is never logged");
}

#[tokio::test]
async fn mqtt_tls_with_the_ca_and_a_client_certificate() {
    let certs = TestCerts::generate().unwrap();
    let plain = free_port();
    let broker = Mosquitto::start(MosquittoConfig {
        tls: Some(certs.mosquitto_tls(true)),
        extra: format!(
            "use_identity_as_username true\nlistener {plain} 127.0.0.1\nallow_anonymous true\n"
        ),
        ..MosquittoConfig::default()
    })
    .unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let (ca, cert, key) = (
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display(),
    );
    let agent = run(
        &stand_in,
        &format!(
            "daemon -m localhost -q {} -n ilagent -e 'ilert/events' --mqtt_tls --mqtt_ca {ca} --mqtt_client_cert {cert} --mqtt_client_key {key}",
            broker.port()
        ),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        plain,
        None,
        QoS::AtLeastOnce,
        &[("ilert/events", documented_event("MQTT"))],
    )
    .await;
    assert!(
        eventually(WAIT, || stand_in.events().len() == 1).await,
        "log:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn mqtt_qos_table_0_needs_the_buffer_and_1_and_2_deliver() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let port = broker.port();
    // "QoS 0 without --mqtt_buffer is rejected at startup".
    let refused = run(
        &stand_in,
        &format!("daemon -m 127.0.0.1 -q {port} -n ilagent -e 'ilert/events' --mqtt_qos 0"),
        &[],
    );
    let (code, log) = exited(refused).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--mqtt_buffer"), "{log}");

    for (qos, level, extra) in [
        (QoS::AtMostOnce, 0, "--mqtt_buffer"),
        (QoS::AtLeastOnce, 1, ""),
        (QoS::ExactlyOnce, 2, ""),
    ] {
        stand_in.clear();
        let agent = run(
            &stand_in,
            &format!(
                "daemon -m 127.0.0.1 -q {port} -n ilagent-{level} -e 'ilert/qos{level}' --mqtt_qos {level} {extra}"
            ),
            &[],
        );
        wait_subscribed(&agent).await;
        let topic = format!("ilert/qos{level}");
        publish(
            port,
            None,
            qos,
            &[(topic.as_str(), documented_event("MQTT"))],
        )
        .await;
        assert!(
            eventually(WAIT, || stand_in.events().len() == 1).await,
            "QoS {level}; log:\n{}",
            agent.log()
        );
        let (code, log) = agent.stop().await;
        assert_eq!(code, Some(0), "QoS {level}: {log}");
    }
}

#[tokio::test]
async fn mqtt_subscribing_to_wildcards_delivers_each_message_once() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let port = broker.port();
    let agent = run(
        &stand_in,
        &format!("daemon -m 127.0.0.1 -q {port} -n ilagent -e 'ilert/+' -e '#'"),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        port,
        None,
        QoS::AtLeastOnce,
        &[
            ("ilert/alarms", documented_event("ilert/+")),
            ("plant/7/alarms", documented_event("#")),
        ],
    )
    .await;
    assert!(
        eventually(WAIT, || stand_in.events().len() >= 2).await,
        "log:\n{}",
        agent.log()
    );
    // `ilert/alarms` matches both filters: the broker would send it once per subscription.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut summaries: Vec<String> = stand_in
        .events()
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    summaries.sort();
    assert_eq!(summaries, ["Hey from #", "Hey from ilert/+"]);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn mqtt_buffering_and_retries_max_retries_sets_a_message_aside_and_0_retries_forever() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let port = broker.port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ilagent.db3");
    let db_flag = db.display().to_string();
    let agent = run(
        &stand_in,
        &format!(
            "-f {db_flag} daemon -m 127.0.0.1 -q {port} -n ilagent -e 'ilert/events' --mqtt_buffer --max_retries 2"
        ),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        port,
        None,
        QoS::AtLeastOnce,
        &[("ilert/events", documented_event("MQTT"))],
    )
    .await;
    // The page says "dropped from the queue"; here it is set aside as a dead letter, with
    // its reason, where `ilagent queue requeue` can bring it back.
    assert!(
        eventually(WAIT, || stand_in.requests().len() >= 2).await,
        "two attempts; log:\n{}",
        agent.log()
    );
    assert!(
        common::wait_for_stat(&db, "dead_letters", |n| n == 1).await,
        "log:\n{}",
        agent.log()
    );
    let (_, letters) = queue_command(&db, &["dead_letters"]).await;
    assert!(letters.contains("gave up after 2 attempts"), "{letters}");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");

    // `--max_retries 0`: retried until ilert is back, never set aside.
    stand_in.clear();
    let agent = run(
        &stand_in,
        &format!(
            "-f {db_flag} daemon -m 127.0.0.1 -q {port} -n ilagent -e 'ilert/events' --mqtt_buffer --max_retries 0"
        ),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        port,
        None,
        QoS::AtLeastOnce,
        &[("ilert/events", documented_event("MQTT 0"))],
    )
    .await;
    assert!(
        eventually(WAIT, || stand_in.requests().len() >= 4).await,
        "log:\n{}",
        agent.log()
    );
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        eventually(WAIT, || stand_in.events().len() == 1).await,
        "log:\n{}",
        agent.log()
    );
    assert_eq!(
        common::queue_stat(&db, "dead_letters").await,
        1,
        "only the first one"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn mqtt_sample_command_pings_heartbeats_and_delivers_events() {
    let broker = Mosquitto::start(MosquittoConfig {
        users: vec![("my-user".into(), "my-pass".into())],
        ..MosquittoConfig::default()
    })
    .unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let port = broker.port();
    let agent = run(
        &stand_in,
        &format!(
            "daemon -v -v -m 127.0.0.1 -q {port} -n ilagent -e '#' -r 'ilert/heartbeats' \
             --mqtt_username 'my-user' --mqtt_password 'my-pass' --mqtt_qos 1"
        ),
        &[],
    );
    wait_subscribed(&agent).await;
    publish(
        port,
        Some(("my-user", "my-pass")),
        QoS::AtLeastOnce,
        &[
            ("ilert/heartbeats", documented_heartbeat()),
            ("ilert/events", documented_event("MQTT")),
        ],
    )
    .await;
    // The heartbeat also matches `#`, yet it is a heartbeat: heartbeat topics win.
    assert!(
        eventually(WAIT, || pings(&stand_in, "il1hbt123...") == 1
            && stand_in.events().len() == 1)
        .await,
        "log:\n{}",
        agent.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stand_in.events().len(),
        1,
        "the heartbeat was not sent as an event"
    );
    assert_eq!(pings(&stand_in, "il1hbt123..."), 1, "one ping");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("dead letter"), "{log}");
}
