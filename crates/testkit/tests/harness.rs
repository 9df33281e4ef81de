//! Smoke tests for the harness itself: the brokers it starts are real, reachable, configured as
//! asked, and gone after drop. If these fail, every integration test built on testkit would fail
//! for reasons that have nothing to do with the agent.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    Transport,
};
use testkit::{Mosquitto, MosquittoConfig, Tansu, TestCerts};
use tokio::time::timeout;

/// Generous: a loaded CI machine is slow, and a deadline here only bounds a hang.
const DEADLINE: Duration = Duration::from_secs(120);

/// A name no other test (in this run or a concurrent one) uses.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn tansu_starts_and_accepts_a_produce_and_consume_round_trip() {
    let started = Instant::now();
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    assert_eq!(bootstrap, format!("127.0.0.1:{}", tansu.port()));
    let topic = unique("testkit-harness");
    let group = unique("testkit-harness-group");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].as_ref().unwrap(), &topic);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key("key-1").payload("hello tansu"),
            Duration::from_secs(60),
        )
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    assert_eq!(delivery.partition, 0);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = timeout(DEADLINE, consumer.recv())
        .await
        .expect("no message consumed before the deadline")
        .unwrap();
    assert_eq!(message.topic(), topic);
    assert_eq!(message.partition(), 0);
    assert_eq!(message.offset(), delivery.offset);
    assert_eq!(message.key(), Some(&b"key-1"[..]));
    assert_eq!(message.payload(), Some(&b"hello tansu"[..]));

    consumer.commit_message(&message, CommitMode::Sync).unwrap();
    let committed = consumer.committed(Duration::from_secs(30)).unwrap();
    let partition = committed.find_partition(&topic, 0).unwrap();
    assert_eq!(partition.offset(), Offset::Offset(message.offset() + 1));
    eprintln!(
        "tansu round trip (start, create topic, produce, group join, consume, commit) took {:?}",
        started.elapsed()
    );
}

#[test]
fn dropping_tansu_stops_the_broker_and_removes_its_dir() {
    let tansu = Tansu::start().unwrap();
    let port = tansu.port();
    let dir = tansu.dir().to_path_buf();
    assert!(accepts_connections(port));
    assert!(fs::read_to_string(tansu.log_path()).is_ok());
    drop(tansu);
    assert!(!accepts_connections(port), "port {port} still accepts");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// Connects and waits for the broker's answer to CONNECT: the client and its event loop when
/// accepted, the error when refused.
async fn connect(options: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut events) = AsyncClient::new(options, 10);
    loop {
        let event = timeout(DEADLINE, events.poll())
            .await
            .expect("no answer to CONNECT before the deadline")?;
        if let Event::Incoming(Packet::ConnAck(ack)) = event {
            assert_eq!(ack.code, ConnectReturnCode::Success);
            return Ok((client, events));
        }
    }
}

/// Subscribes, publishes one message to itself and waits until it comes back.
async fn round_trip(client: &AsyncClient, events: &mut EventLoop) {
    let topic = unique("testkit/harness");
    let payload = unique("payload");
    client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    let mut published = false;
    loop {
        let event = timeout(DEADLINE, events.poll())
            .await
            .expect("message did not come back before the deadline")
            .unwrap();
        match event {
            Event::Incoming(Packet::SubAck(_)) if !published => {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .unwrap();
                published = true;
            }
            Event::Incoming(Packet::Publish(publish)) => {
                assert_eq!(publish.topic, topic);
                assert_eq!(publish.payload, payload.as_bytes());
                return;
            }
            _ => {}
        }
    }
}

fn mqtt_options(broker: &Mosquitto) -> MqttOptions {
    let mut options = MqttOptions::new(unique("testkit-harness"), broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_default_instance_accepts_anonymous_clients() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    assert_eq!(broker.host(), "127.0.0.1");
    let (client, mut events) = connect(mqtt_options(&broker)).await.unwrap();
    round_trip(&client, &mut events).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_instance_with_password_rejects_anonymous_and_accepts_the_user() {
    let broker = Mosquitto::start(MosquittoConfig {
        users: vec![
            ("alice".to_string(), "s3cret alice".to_string()),
            ("bob".to_string(), "bob-pw".to_string()),
        ],
        ..MosquittoConfig::default()
    })
    .unwrap();

    let anonymous = connect(mqtt_options(&broker)).await;
    assert!(
        matches!(
            anonymous,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized
            ))
        ),
        "anonymous client was not refused: {:?}",
        anonymous.map(|_| ())
    );

    let mut wrong = mqtt_options(&broker);
    wrong.set_credentials("alice", "not her password");
    let wrong = connect(wrong).await;
    assert!(
        matches!(
            wrong,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized
            ))
        ),
        "wrong password was not refused: {:?}",
        wrong.map(|_| ())
    );

    for (user, password) in [("alice", "s3cret alice"), ("bob", "bob-pw")] {
        let mut options = mqtt_options(&broker);
        options.set_credentials(user, password);
        let (client, mut events) = connect(options).await.unwrap();
        round_trip(&client, &mut events).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_tls_instance_accepts_a_client_with_the_generated_ca() {
    let certs = TestCerts::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig {
        tls: Some(certs.mosquitto_tls(true)),
        ..MosquittoConfig::default()
    })
    .unwrap();
    let ca = fs::read(&certs.ca).unwrap();
    let client_cert = fs::read(&certs.client_cert).unwrap();
    let client_key = fs::read(&certs.client_key).unwrap();

    let mut options = mqtt_options(&broker);
    options.set_transport(Transport::tls(
        ca.clone(),
        Some((client_cert.clone(), client_key.clone())),
        None,
    ));
    let (client, mut events) = connect(options).await.unwrap();
    round_trip(&client, &mut events).await;

    // The listener requires a client certificate...
    let mut no_client_cert = mqtt_options(&broker);
    no_client_cert.set_transport(Transport::tls(ca, None, None));
    let refused = connect(no_client_cert).await.map(|_| ());
    assert!(
        format!("{refused:?}").contains("CertificateRequired"),
        "not refused for lack of a client certificate: {refused:?}"
    );

    // ...and the client only trusts the server when it trusts the CA that signed it.
    let foreign = TestCerts::generate().unwrap();
    let mut untrusted = mqtt_options(&broker);
    untrusted.set_transport(Transport::tls(
        fs::read(&foreign.ca).unwrap(),
        Some((client_cert, client_key)),
        None,
    ));
    let untrusted = connect(untrusted).await.map(|_| ());
    assert!(
        matches!(untrusted, Err(ConnectionError::Tls(_))),
        "server not rejected by a client trusting a foreign CA: {untrusted:?}"
    );
}

#[test]
fn dropping_mosquitto_stops_the_broker_and_removes_its_dir() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let port = broker.port();
    let dir = broker.dir().to_path_buf();
    assert!(accepts_connections(port));
    let config = fs::read_to_string(broker.config_path()).unwrap();
    assert!(
        config.contains(&format!("listener {port} 127.0.0.1")),
        "{config}"
    );
    drop(broker);
    assert!(!accepts_connections(port), "port {port} still accepts");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn a_broken_mosquitto_config_fails_with_the_log_in_the_error() {
    let err = Mosquitto::start(MosquittoConfig {
        extra: "this_is_not_an_option 1".to_string(),
        ..MosquittoConfig::default()
    })
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("did not start"), "{message}");
    assert!(message.contains("this_is_not_an_option"), "{message}");
}
