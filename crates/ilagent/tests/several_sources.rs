//! Kafka, MQTT and the HTTP proxy in one agent, as ilagent 0.9 runs them: the topic flags
//! apply to both brokers, each source reports its own readiness, and every source delivers.

mod common;
mod http_support;

use std::time::Duration;

use common::{Agent, create_topic, eventually, kafka_args, produce, producer, unique};
use http_support::{component, post_event, wait_ready_status, wait_up};
use ilert_standin::StandIn;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use testkit::{Mosquitto, MosquittoConfig, Tansu, free_port};

const WAIT: Duration = Duration::from_secs(60);

async fn publish_once(port: u16, topic: &str, payload: Vec<u8>) {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new(unique("pub"), "127.0.0.1", port), 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker acknowledged the publish");
}

#[tokio::test]
async fn kafka_mqtt_and_the_proxy_run_in_one_agent_each_with_its_own_readiness() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    // One name that is both a Kafka topic and an MQTT topic: `-e` applies to both brokers.
    let (topic, group) = (unique("shared-events"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("several.db3");
    let (port, mqtt_port) = (free_port(), broker.port().to_string());
    let port_text = port.to_string();
    let db_text = db.display().to_string();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-f",
        db_text.as_str(),
        "-e",
        topic.as_str(),
        "-m",
        "127.0.0.1",
        "-q",
        mqtt_port.as_str(),
        "-n",
        "several-sources",
        "-p",
        port_text.as_str(),
        "--http_bind",
        "127.0.0.1",
    ]);
    let url = stand_in.url();
    let agent = Agent::start(
        &args,
        &[
            ("ILERT_API_URL", url.as_str()),
            ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
        ],
    );
    wait_up(&agent, port).await;

    let event = |from: &str| json!({"integrationKey": "il1api-multi", "eventType": "ALERT", "summary": format!("from {from}"), "alertKey": from});
    produce(
        &producer(&bootstrap),
        &topic,
        None,
        Some("k"),
        event("kafka").to_string().as_bytes(),
    )
    .await;
    publish_once(
        broker.port(),
        &topic,
        event("mqtt").to_string().into_bytes(),
    )
    .await;
    let (status, body) = post_event(&http_support::client(), port, &event("proxy")).await;
    assert_eq!(status, 202, "{body}");

    let arrived = |stand_in: &StandIn| {
        let mut from: Vec<String> = stand_in
            .events()
            .iter()
            .filter_map(|e| e["alertKey"].as_str().map(str::to_string))
            .collect();
        from.sort();
        from
    };
    assert!(
        eventually(WAIT, || arrived(&stand_in) == ["kafka", "mqtt", "proxy"]).await,
        "arrived: {:?}; log:\n{}",
        arrived(&stand_in),
        agent.log()
    );
    let kafka_path = stand_in
        .requests()
        .iter()
        .find(|r| r.json.as_ref().is_some_and(|j| j["alertKey"] == "kafka"))
        .map(|r| r.path.clone());
    assert_eq!(
        kafka_path.as_deref(),
        Some("/api/v1/events/kafka/il1api-multi")
    );

    // Each source reports its own state; the agent is ready once all of them are.
    let (became_ready, report) = wait_ready_status(port, 200).await;
    assert!(became_ready, "{report}");
    for name in ["kafka", "mqtt", "http", "queue"] {
        assert_eq!(component(&report, name)["ready"], true, "{name}: {report}");
    }
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
