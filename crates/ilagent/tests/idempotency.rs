//! Idempotency against real brokers (tansu, Mosquitto), the SQLite file on disk and the
//! ilert stand-in: a route's `dedupe` id reaches ilert once per window, also when a SIGKILL
//! makes Kafka redeliver what was delivered but not committed; the proxy's
//! `Idempotency-Key` works the same way across a restart; ids count only inside their
//! window; settings that cannot work stop the agent at start.

mod common;
mod http_support;
mod mqtt_support;

use std::time::Duration;

use common::{
    Agent, committed, create_topic, eventually, kafka_args, produce, producer, run_ilagent, unique,
    write_config,
};
use http_support::{scrape, value};
use ilert_standin::{Behaviour, StandIn};
use serde_json::{Value, json};
use testkit::{Mosquitto, MosquittoConfig, Tansu, free_port};

const WAIT: Duration = Duration::from_secs(60);

fn start(stand_in: &StandIn, args: &[&str]) -> Agent {
    common::start_against(stand_in, args, &[])
}

/// How many times ilert accepted an event whose custom details carry `id`.
fn accepted(stand_in: &StandIn, id: &str) -> usize {
    stand_in
        .events()
        .iter()
        .filter(|e| e["customDetails"]["id"] == id)
        .count()
}

async fn duplicates(port: u16, source: &str) -> f64 {
    value(
        &scrape(port).await,
        "ilagent_messages_total",
        &[("source", source), ("outcome", "duplicate")],
    )
}

/// The duplicates counted, once they reach `at_least` (or after 10 s, what there is): a
/// duplicate is settled just after the event it copies.
async fn duplicates_after_waiting(port: u16, source: &str, at_least: f64) -> f64 {
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = duplicates(port, source).await;
        if seen >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test]
async fn what_kafka_redelivers_after_a_sigkill_is_not_sent_again_when_ilert_accepted_its_id() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    // One integration key is down: its event holds the partition's commit back while the
    // events after it are delivered.
    let mut behaviour = Behaviour::default();
    behaviour.key_status.insert("il1api-down".into(), 503);
    stand_in.set_behaviour(behaviour);
    let (topic, group, dlq) = (unique("orders"), unique("group"), unique("dlq"));
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db3");
    // With a dead-letter topic Kafka needs no file of its own: the route's ids open it.
    let config = write_config(
        &dir,
        &format!(
            r#"
file = "{db}"
kafka_dlq_topic = "{dlq}"

[[route]]
name = "orders"
source = "kafka"
topics = ["{topic}"]
dedupe = ".id"
[route.fields]
integration_key = ".key"
summary = '"order \(.id)"'
alert_key = ".id"
custom_details = "{{id}}"
"#,
            db = db.display()
        ),
    );
    let config = config.display().to_string();
    let metrics = free_port().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(kafka_args(&bootstrap, &group));
    args.extend([
        "--metrics_port",
        metrics.as_str(),
        "--http_bind",
        "127.0.0.1",
    ]);
    let agent = start(&stand_in, &args);

    let producer = producer(&bootstrap);
    let messages = [
        ("a", "il1api-up"),
        ("b", "il1api-down"),
        ("c", "il1api-up"),
        // A producer's retry: the same order again.
        ("c", "il1api-up"),
    ];
    for (id, key) in messages {
        let payload = json!({"id": id, "key": key}).to_string();
        produce(&producer, &topic, None, Some(id), payload.as_bytes()).await;
    }
    let metrics_port: u16 = metrics.parse().unwrap();
    assert!(
        eventually(WAIT, || accepted(&stand_in, "a") == 1
            && accepted(&stand_in, "c") == 1)
        .await,
        "{}",
        agent.log()
    );
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [1]).await,
        "`b` holds the commit back"
    );
    assert_eq!(
        duplicates_after_waiting(metrics_port, "kafka", 1.0).await,
        1.0,
        "the producer's second `c` is a duplicate"
    );
    agent.kill().await;

    // ilert is back; the restarted agent gets `b`, `c` and `c` again from the committed
    // offset.
    stand_in.set_behaviour(Behaviour::default());
    let agent = start(&stand_in, &args);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [4]).await,
        "{}",
        agent.log()
    );
    assert_eq!(accepted(&stand_in, "a"), 1);
    assert_eq!(accepted(&stand_in, "b"), 1);
    assert_eq!(
        accepted(&stand_in, "c"),
        1,
        "`c` was accepted before the kill: its id is in the file"
    );
    assert_eq!(duplicates(metrics_port, "kafka").await, 2.0);
    assert_eq!(
        value(
            &scrape(metrics_port).await,
            "ilagent_duplicates_total",
            &[("scope", "orders")]
        ),
        2.0
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

async fn post_keyed(port: u16, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = http_support::client()
        .post(http_support::url(port, "/api/events"))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn proxied(id: &str) -> Value {
    json!({
        "integrationKey": "il1api-proxy",
        "eventType": "ALERT",
        "summary": format!("payment {id} failed"),
        "alertKey": format!("payment-{id}"),
        "customDetails": {"id": id},
    })
}

#[tokio::test]
async fn the_proxy_delivers_an_idempotency_key_once_also_after_a_sigkill_restart() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db3");
    let port = free_port();
    let agent = http_support::start_proxy(&stand_in.url(), &db, port, &[]);
    http_support::wait_up(&agent, port).await;

    for _ in 0..2 {
        let (status, _) = post_keyed(port, Some("pay-1"), &proxied("1")).await;
        assert_eq!(status, 202, "a duplicate is accepted as the first was");
    }
    let (status, _) = post_keyed(port, None, &proxied("2")).await;
    assert_eq!(status, 202);
    // Two copies under different alert keys are delivered in parallel, yet only one
    // reaches ilert: the second waits for the first's answer.
    let (mut copy_a, mut copy_b) = (proxied("5"), proxied("5"));
    copy_a["alertKey"] = json!("payment-5a");
    copy_b["alertKey"] = json!("payment-5b");
    let (a, b) = tokio::join!(
        post_keyed(port, Some("pay-5"), &copy_a),
        post_keyed(port, Some("pay-5"), &copy_b)
    );
    assert_eq!((a.0, b.0), (202, 202));
    // Another application (integration key) may choose the same key.
    let mut other = proxied("1-other");
    other["integrationKey"] = json!("il1api-other");
    let (status, _) = post_keyed(port, Some("pay-1"), &other).await;
    assert_eq!(status, 202);
    assert!(
        eventually(WAIT, || {
            accepted(&stand_in, "2") == 1
                && accepted(&stand_in, "1-other") == 1
                && accepted(&stand_in, "5") == 1
        })
        .await,
        "{}",
        agent.log()
    );
    assert_eq!(
        duplicates_after_waiting(port, "http", 2.0).await,
        2.0,
        "{}",
        agent.log()
    );
    assert_eq!(accepted(&stand_in, "1"), 1);
    assert_eq!(accepted(&stand_in, "5"), 1, "one of the two copies");
    agent.kill().await;

    let agent = http_support::start_proxy(&stand_in.url(), &db, port, &[]);
    http_support::wait_up(&agent, port).await;
    let (status, _) = post_keyed(port, Some("pay-1"), &proxied("1")).await;
    assert_eq!(status, 202);
    let (status, _) = post_keyed(port, Some("pay-3"), &proxied("3")).await;
    assert_eq!(status, 202);
    assert!(
        eventually(WAIT, || accepted(&stand_in, "3") == 1).await,
        "{}",
        agent.log()
    );
    assert_eq!(
        duplicates_after_waiting(port, "http", 1.0).await,
        1.0,
        "the id survived the SIGKILL in the file"
    );
    assert_eq!(accepted(&stand_in, "1"), 1);

    // Without a window, the header is ignored, even a malformed one.
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let agent = http_support::start_proxy(
        &stand_in.url(),
        &db,
        port,
        &["--http_idempotency_window", "0"],
    );
    http_support::wait_up(&agent, port).await;
    let (status, _) = post_keyed(port, Some("pay-1"), &proxied("1")).await;
    assert_eq!(status, 202);
    let (status, _) = post_keyed(port, Some(""), &proxied("4")).await;
    assert_eq!(status, 202);
    assert!(
        eventually(WAIT, || accepted(&stand_in, "1") == 2
            && accepted(&stand_in, "4") == 1)
        .await,
        "{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_with_400_and_nothing_is_stored() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db3");
    let port = free_port();
    let agent = http_support::start_proxy(&stand_in.url(), &db, port, &[]);
    http_support::wait_up(&agent, port).await;

    let too_long = "k".repeat(513);
    for key in ["", "   ", too_long.as_str()] {
        let (status, body) = post_keyed(port, Some(key), &proxied("x")).await;
        assert_eq!(status, 400, "{key:?}: {body}");
        assert_eq!(body["code"], "INVALID_IDEMPOTENCY_KEY", "{body}");
    }
    let response = http_support::client()
        .post(http_support::url(port, "/api/events"))
        .header("Idempotency-Key", "one")
        .header("Idempotency-Key", "two")
        .json(&proxied("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let (status, _) = post_keyed(port, Some("fine"), &proxied("y")).await;
    assert_eq!(status, 202);
    assert!(eventually(WAIT, || accepted(&stand_in, "y") == 1).await);
    assert_eq!(accepted(&stand_in, "x"), 0, "nothing refused was stored");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn on_mqtt_an_id_suppresses_its_copies_only_inside_the_route_s_window() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db3");
    let metrics = free_port();
    let config = write_config(
        &dir,
        &format!(
            r#"
mqtt_host = "127.0.0.1"
mqtt_port = {port}
mqtt_name = "{client_id}"
file = "{db}"
metrics_port = {metrics}
http_bind = "127.0.0.1"

[[route]]
name = "alarms"
source = "mqtt"
topics = ["plant/+/alarms"]
dedupe = '.frame'
dedupe_window = "3s"
[route.fields]
integration_key = '"il1api-plant"'
summary = '"alarm \(.frame)"'
alert_key = '.machine'
custom_details = '{{id: (.frame | tostring)}}'
"#,
            port = broker.port(),
            client_id = unique("agent"),
            db = db.display()
        ),
    );
    let config = config.display().to_string();
    let agent = start(&stand_in, &["--config", &config, "daemon", "-vv"]);
    mqtt_support::wait_subscribed(&agent).await;

    let frame = |n: u64| {
        (
            "plant/l1/alarms".to_string(),
            json!({"frame": n, "machine": "press-4"})
                .to_string()
                .into_bytes(),
        )
    };
    mqtt_support::publish(broker.port(), &[frame(7), frame(7), frame(8)]).await;
    assert!(
        eventually(WAIT, || accepted(&stand_in, "8") == 1).await,
        "{}",
        agent.log()
    );
    assert_eq!(accepted(&stand_in, "7"), 1, "frame 7 came twice");
    assert_eq!(duplicates(metrics, "mqtt").await, 1.0);

    // Once the window has passed, the same frame is news again.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    mqtt_support::publish(broker.port(), &[frame(7)]).await;
    assert!(
        eventually(WAIT, || accepted(&stand_in, "7") == 2).await,
        "{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn dedupe_settings_that_cannot_work_stop_the_agent_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let route = "kafka_brokers = \"localhost:9092\"\n[[route]]\nname = \"r\"\nsource = \"kafka\"\ntopics = [\"t\"]\n";
    let cases = [
        (
            format!("{route}kind = \"heartbeat\"\ndedupe = \".id\"\n"),
            ":7:10: route `r`: `dedupe` belongs to event routes",
        ),
        (
            format!("{route}dedupe_window = \"1h\"\n"),
            ":6:17: route `r`: `dedupe_window` without `dedupe`",
        ),
        (
            format!("{route}dedupe = \".id\"\ndedupe_window = \"soon\"\n"),
            ":7:17: route `r`: `dedupe_window`: `soon` is not a duration",
        ),
        (
            format!("{route}dedupe = \".id\"\ndedupe_window = \"0s\"\n"),
            ":7:17: route `r`: `dedupe_window` is 0",
        ),
        (
            format!("{route}dedupe = \".id\"\ndedupe_window = \"31d\"\n"),
            ":7:17: route `r`: `dedupe_window` is longer than 30 days",
        ),
        (
            format!("{route}dedupe = \".id |\"\n"),
            "route `r`: `dedupe`: ",
        ),
    ];
    for (text, says) in cases {
        let config = write_config(&dir, &text);
        let config = config.display().to_string();
        let (code, stdout, stderr) = run_ilagent(&["--config", &config, "daemon"], &[]).await;
        assert_eq!(code, Some(2), "{text}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(
            stderr.contains(&format!("error: {config}")) && stderr.contains(says),
            "for\n{text}\nexpected `{says}` in: {stderr}"
        );
    }
    let port = free_port().to_string();
    for (flags, says) in [
        (
            ["--dedupe_max_ids", "0"],
            "--dedupe_max_ids must be at least 1",
        ),
        (
            ["--http_idempotency_window", "40d"],
            "--http_idempotency_window is longer than 30 days",
        ),
    ] {
        let mut args = vec!["daemon", "-p", port.as_str()];
        args.extend(flags);
        let (code, _, stderr) = run_ilagent(&args, &[]).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
