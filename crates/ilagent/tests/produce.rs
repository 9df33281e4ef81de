//! `ilagent produce`: messages from flags, JSON lines or the elastic.io document reach a
//! real broker (tansu, Mosquitto) with their keys, values and headers, each with the
//! broker's answer on its own line; bad input and unreachable brokers fail clearly.

mod common;

use std::time::Duration;

use common::{create_topic, read_topic, run_ilagent_with_input, unique};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use testkit::{Mosquitto, MosquittoConfig, Tansu};

const WAIT: Duration = Duration::from_secs(20);

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[tokio::test]
async fn produce_publishes_the_elastic_io_document_and_prints_each_message_s_metadata() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let topic = unique("produced");
    create_topic(&bootstrap, &topic, 2).await;
    let document = r#"{"messages": [
        {"key": "Car status", "value": "arrived"},
        {"key": "Car status", "value": {"speed": 0}},
        {"value": "no key", "headers": {"origin": "line-3"}}
    ]}"#;

    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "--kafka_brokers",
            &bootstrap,
            "--topic",
            &topic,
            "--header",
            "env=test",
        ],
        &[],
        document,
    )
    .await;

    assert_eq!(code, Some(0), "stderr: {stderr}\nstdout: {stdout}");
    let out = lines(&stdout);
    assert_eq!(out.len(), 3, "{stdout}");
    for line in &out {
        assert_eq!(line["topicName"], topic.as_str());
        assert_eq!(line["errorCode"], 0);
        assert!(
            line["partition"]
                .as_i64()
                .is_some_and(|p| (0..2).contains(&p)),
            "{line}"
        );
        assert!(
            line["baseOffset"]
                .as_str()
                .is_some_and(|o| o.parse::<i64>().is_ok()),
            "{line}"
        );
        assert_eq!(line["logStartOffset"], "0", "{line}");
        assert_eq!(line["logAppendTime"], "-1", "a CreateTime topic: {line}");
    }
    // One key, one partition, in order.
    assert_eq!(out[0]["partition"], out[1]["partition"]);
    let first: i64 = out[0]["baseOffset"].as_str().unwrap().parse().unwrap();
    let second: i64 = out[1]["baseOffset"].as_str().unwrap().parse().unwrap();
    assert_eq!(second, first + 1);

    let records = read_topic(&bootstrap, &topic, 3, WAIT);
    assert_eq!(records.len(), 3);
    let by_value = |v: &str| {
        records
            .iter()
            .find(|r| r.payload == v.as_bytes())
            .unwrap_or_else(|| panic!("{v} not in {records:?}"))
    };
    assert_eq!(by_value("arrived").key.as_deref(), Some(&b"Car status"[..]));
    assert_eq!(by_value(r#"{"speed":0}"#).header("env"), Some("test"));
    let third = by_value("no key");
    assert_eq!(third.key, None);
    assert_eq!(
        (third.header("env"), third.header("origin")),
        (Some("test"), Some("line-3"))
    );
}

#[tokio::test]
async fn produce_takes_json_lines_and_keeps_a_null_value_a_tombstone() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let topic = unique("lines");
    create_topic(&bootstrap, &topic, 1).await;
    let input = "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"a\",\"value\":null}\n";

    let (code, stdout, stderr) = run_ilagent_with_input(
        &["produce", "--kafka_brokers", &bootstrap, "--topic", &topic],
        &[],
        input,
    )
    .await;

    assert_eq!(code, Some(0), "{stderr}");
    let offsets: Vec<Value> = lines(&stdout)
        .iter()
        .map(|l| l["baseOffset"].clone())
        .collect();
    assert_eq!(offsets, ["0", "1"]);
    let records = read_topic(&bootstrap, &topic, 2, WAIT);
    assert_eq!(records.len(), 2);
    assert!(!records[0].tombstone && records[1].tombstone, "{records:?}");
}

#[tokio::test]
async fn produce_with_value_sends_one_message() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let topic = unique("one");
    create_topic(&bootstrap, &topic, 1).await;

    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "--kafka_brokers",
            &bootstrap,
            "--topic",
            &topic,
            "--key",
            "k",
            "--value",
            r#"{"summary":"disk full"}"#,
        ],
        &[],
        "",
    )
    .await;

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines(&stdout).len(), 1);
    let records = read_topic(&bootstrap, &topic, 1, WAIT);
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(records[0].payload, br#"{"summary":"disk full"}"#);
}

#[tokio::test]
async fn produce_refuses_bad_input_before_it_sends_anything() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let topic = unique("refused");
    create_topic(&bootstrap, &topic, 1).await;
    let input = "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"vaule\":\"2\"}\n";

    let (code, stdout, stderr) = run_ilagent_with_input(
        &["produce", "--kafka_brokers", &bootstrap, "--topic", &topic],
        &[],
        input,
    )
    .await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("vaule"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        read_topic(&bootstrap, &topic, 1, Duration::from_secs(3)).is_empty(),
        "the valid first line was sent anyway"
    );
}

#[tokio::test]
async fn produce_to_an_unreachable_broker_fails_and_names_every_message() {
    let port = testkit::free_port();
    let bootstrap = format!("127.0.0.1:{port}");

    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "--kafka_brokers",
            &bootstrap,
            "--topic",
            "t",
            "--timeout",
            "2s",
        ],
        &[],
        "{\"value\":\"1\"}\n{\"value\":\"2\"}\n",
    )
    .await;

    assert_eq!(code, Some(1), "{stderr}");
    let out = lines(&stdout);
    assert_eq!(out.len(), 2);
    for line in &out {
        assert_ne!(line["errorCode"], 0, "{line}");
        assert!(
            line["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{line}"
        );
    }
    assert!(
        stderr.contains("2 of 2 messages were not acknowledged") && stderr.contains("#1"),
        "{stderr}"
    );
}

#[tokio::test]
async fn produce_with_scram_credentials_tansu_does_not_know_fails_without_showing_the_password() {
    // tansu 0.6 authenticates with SCRAM but its users cannot be created from a test (see
    // testkit::Tansu::start_with_auth): the login is refused, which is what this checks.
    let tansu = Tansu::start_with_auth().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let password = "hunter2-very-secret-password";

    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "-vvvv",
            "produce",
            "--kafka_brokers",
            &bootstrap,
            "--topic",
            "t",
            "--value",
            "x",
            "--timeout",
            "3s",
            "--kafka_security_protocol",
            "sasl_plaintext",
            "--kafka_sasl_mechanism",
            "SCRAM-SHA-256",
            "--kafka_username",
            "agent",
        ],
        &[("ILAGENT_KAFKA_PASSWORD", password)],
        "",
    )
    .await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not acknowledged"), "{stderr}");
    assert!(!stderr.contains(password) && !stdout.contains(password));
}

#[tokio::test]
async fn produce_needs_exactly_one_broker() {
    let (code, _, stderr) =
        run_ilagent_with_input(&["produce", "--topic", "t", "--value", "x"], &[], "").await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--kafka_brokers") && stderr.contains("--mqtt_host"),
        "{stderr}"
    );
    let (code, _, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "--topic",
            "t",
            "--value",
            "x",
            "--kafka_brokers",
            "a:1",
            "-m",
            "b",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--to kafka"), "{stderr}");
}

#[tokio::test]
async fn produce_chooses_the_broker_with_to_when_the_environment_sets_both() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let topic = unique("chosen");
    create_topic(&bootstrap, &topic, 1).await;
    let env = [
        ("ILAGENT_KAFKA_BROKERS", bootstrap.as_str()),
        ("ILAGENT_MQTT_HOST", "127.0.0.1"),
    ];
    let (code, _, stderr) =
        run_ilagent_with_input(&["produce", "--topic", &topic, "--value", "x"], &env, "").await;
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "produce", "--topic", &topic, "--value", "x", "--to", "kafka",
        ],
        &env,
        "",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines(&stdout)[0]["topicName"], topic.as_str());
}

/// Subscribes to `topic` with MQTT 5 and collects what arrives: (payload, QoS, user
/// properties, retain).
async fn subscribe(
    port: u16,
    topic: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, u8, Vec<(String, String)>, bool)>,
) {
    let options = MqttOptions::new(unique("subscriber"), "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe(topic, QoS::ExactlyOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let properties = p.properties.map(|p| p.user_properties).unwrap_or_default();
                    let _ = tx.send((p.payload.to_vec(), p.qos as u8, properties, p.retain));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed_rx)
        .await
        .unwrap()
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn produce_to_mqtt_waits_for_the_acknowledgements_at_each_qos_and_version() {
    let mosquitto = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let port = mosquitto.port().to_string();
    let topic = unique("plant/line-1/alarms");
    let (_subscriber, mut received) = subscribe(mosquitto.port(), &topic).await;

    for (qos, version) in [("0", "3"), ("1", "3"), ("2", "3"), ("1", "5"), ("2", "5")] {
        let value = format!("qos {qos} v{version}");
        let (code, stdout, stderr) = run_ilagent_with_input(
            &[
                "produce",
                "-m",
                "127.0.0.1",
                "-q",
                &port,
                "--topic",
                &topic,
                "--mqtt_qos",
                qos,
                "--mqtt_version",
                version,
                "--value",
                &value,
            ],
            &[],
            "",
        )
        .await;
        assert_eq!(code, Some(0), "QoS {qos} v{version}: {stderr}");
        let out = lines(&stdout);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["topic"], topic.as_str());
        assert_eq!(out[0]["qos"].as_u64(), qos.parse().ok());
        if qos != "0" {
            assert!(out[0]["pkid"].as_u64().is_some_and(|p| p > 0), "{stdout}");
        }
        let (payload, _, _, _) = tokio::time::timeout(WAIT, received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payload, value.as_bytes());
    }
}

#[tokio::test]
async fn produce_to_mqtt_5_sends_headers_as_user_properties_in_order() {
    let mosquitto = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let port = mosquitto.port().to_string();
    let topic = unique("shift/updates");
    let (_subscriber, mut received) = subscribe(mosquitto.port(), &topic).await;
    let input: String = (0..50)
        .map(|i| format!("{{\"value\":\"{i}\",\"headers\":{{\"seq\":\"{i}\"}}}}\n"))
        .collect();

    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "-q",
            &port,
            "--topic",
            &topic,
            "--mqtt_version",
            "5",
            "--header",
            "site=berlin",
        ],
        &[],
        &input,
    )
    .await;

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines(&stdout).len(), 50);
    for i in 0..50 {
        let (payload, _, properties, _) = tokio::time::timeout(WAIT, received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payload, i.to_string().as_bytes());
        assert_eq!(
            properties,
            [
                ("site".to_string(), "berlin".to_string()),
                ("seq".into(), i.to_string())
            ]
        );
    }
}

#[tokio::test]
async fn produce_to_mqtt_refuses_what_mqtt_cannot_carry() {
    let (code, _, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "--topic",
            "t",
            "--key",
            "k",
            "--value",
            "v",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no key"), "{stderr}");
    let (code, _, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "--topic",
            "t",
            "--header",
            "a=b",
            "--value",
            "v",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--mqtt_version 5"), "{stderr}");
    let (code, _, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "--topic",
            "plant/+/alarms",
            "--value",
            "v",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("wildcards"), "{stderr}");
    let big = "x".repeat(2000);
    let (code, _, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "--topic",
            "t",
            "--mqtt_max_packet_size",
            "1KiB",
            "--value",
            &big,
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--mqtt_max_packet_size"), "{stderr}");
}

#[tokio::test]
async fn produce_to_an_unreachable_mqtt_broker_fails() {
    let port = testkit::free_port().to_string();
    let (code, stdout, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "-q",
            &port,
            "--topic",
            "t",
            "--value",
            "v",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        lines(&stdout)[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("MQTT")),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 1 messages were not acknowledged"),
        "{stderr}"
    );
}

#[tokio::test]
async fn produce_with_mqtt_retain_leaves_the_message_for_later_subscribers() {
    let mosquitto = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let port = mosquitto.port().to_string();
    let topic = unique("plant/line-2/state");
    let (code, _, stderr) = run_ilagent_with_input(
        &[
            "produce",
            "-m",
            "127.0.0.1",
            "-q",
            &port,
            "--topic",
            &topic,
            "--mqtt_retain",
            "--value",
            "running",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    // Subscribed only now: the broker hands over the retained message, flagged so.
    let (_subscriber, mut received) = subscribe(mosquitto.port(), &topic).await;
    let (payload, _, _, retain) = tokio::time::timeout(WAIT, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((payload.as_slice(), retain), (&b"running"[..], true));
}
