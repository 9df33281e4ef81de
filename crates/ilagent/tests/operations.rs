//! The operations surface with the agent as a process: `/ready` follows sources that
//! cannot connect, the agent's heartbeat pings only while it is healthy, `/metrics` parses
//! as Prometheus text and counts what was sent, `/health` turns 503 when shutdown begins,
//! and a source that fails for good stops the whole agent with status 1.

mod common;
mod http_support;

use std::process::Stdio;
use std::time::Duration;

use common::{eventually, unique};
use http_support::*;
use ilert_standin::{Behaviour, RequestKind, StandIn};
use testkit::{Tansu, free_port, wait_for_port};
use tokio::process::{Child, Command};

/// A Mosquitto of this test's own on a port chosen before it starts, so that the agent
/// can be pointed at a broker that is not there yet, and the broker stopped and started.
fn mosquitto_on(port: u16) -> Child {
    let child = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto is installed (scripts/install-test-deps)");
    wait_for_port(port, Duration::from_secs(20)).unwrap();
    child
}

fn agent_pings(stand_in: &StandIn) -> usize {
    stand_in
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::HeartbeatLegacy && r.path.ends_with("il1hbt-agent"))
        .count()
}

#[tokio::test]
async fn ready_follows_an_mqtt_broker_and_the_heartbeat_pings_only_while_the_agent_is_healthy() {
    let stand_in = StandIn::start().await.unwrap();
    let (broker_port, ops_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mqtt.db3");
    let agent = start_agent(
        &stand_in.url(),
        &db,
        &[
            "-m",
            "127.0.0.1",
            "-q",
            &broker_port.to_string(),
            "-n",
            &unique("ops"),
            "-e",
            &unique("events"),
            "--metrics_port",
            &ops_port.to_string(),
            "-b",
            "il1hbt-agent",
            "--heartbeat_interval",
            "1s",
        ],
    );
    wait_up(&agent, ops_port).await;

    // No broker: not ready, and the report says which part and why.
    let (status, report) = wait_ready_status(ops_port, 503).await;
    assert!(status, "{report}");
    let mqtt = component(&report, "mqtt");
    assert_eq!(mqtt["ready"], false, "{report}");
    assert!(
        eventually(WAIT, || agent.full_log().contains("mqtt")
            && agent.full_log().contains("not ready"))
        .await,
        "{}",
        agent.log()
    );
    let (_, report) = ready(ops_port).await;
    assert!(
        component(&report, "mqtt")["last_error"].as_str().is_some(),
        "{report}"
    );
    assert_eq!(component(&report, "queue")["ready"], true, "{report}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        agent_pings(&stand_in),
        0,
        "no ping while the source is broken"
    );

    // The broker comes up: ready, and the pings start.
    let broker = mosquitto_on(broker_port);
    let (status, report) = wait_ready_status(ops_port, 200).await;
    assert!(status, "{report}\n{}", agent.log());
    assert_eq!(component(&report, "mqtt")["state"], "subscribed");
    assert!(
        eventually(WAIT, || agent_pings(&stand_in) >= 2).await,
        "{}",
        agent.log()
    );

    // The broker goes away: not ready, and the pings stop (one may have been under way).
    drop(broker);
    let (status, report) = wait_ready_status(ops_port, 503).await;
    assert!(status, "{report}");
    let pings_when_broken = agent_pings(&stand_in);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent_pings(&stand_in) <= pings_when_broken + 1,
        "pings went on while the source was broken"
    );

    // ...and resume when it is back.
    let _broker = mosquitto_on(broker_port);
    let pings_before = agent_pings(&stand_in);
    assert!(wait_ready_status(ops_port, 200).await.0, "{}", agent.log());
    assert!(
        eventually(WAIT, || agent_pings(&stand_in) >= pings_before + 2).await,
        "{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn ready_reports_a_kafka_source_that_cannot_connect_and_one_that_consumes() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kafka.db3");
    let start = |bootstrap: String, ops_port: u16| {
        let (group, topic) = (unique("ops-group"), unique("ops-events"));
        let mut args: Vec<String> = common::kafka_args(&bootstrap, &group)
            .into_iter()
            .skip(1) // "daemon": start_agent adds it
            .map(str::to_string)
            .collect();
        args.extend([
            "-e".into(),
            topic.clone(),
            "--metrics_port".into(),
            ops_port.to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (start_agent(&stand_in.url(), &db, &args), topic)
    };

    // Nothing listens on the broker's port.
    let ops_port = free_port();
    let (agent, _) = start(format!("127.0.0.1:{}", free_port()), ops_port);
    wait_up(&agent, ops_port).await;
    // librdkafka reports its state every 2 s: give it a few reports.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, report) = ready(ops_port).await;
    assert_eq!(status, 503, "{report}");
    let kafka = component(&report, "kafka");
    assert_eq!(kafka["ready"], false, "{report}");
    assert!(kafka["last_error"].as_str().is_some(), "{report}");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");

    // A broker that is there: ready once the group has assigned the partitions.
    let tansu = Tansu::start().unwrap();
    let ops_port = free_port();
    let (agent, topic) = start(tansu.bootstrap_servers(), ops_port);
    common::create_topic(&tansu.bootstrap_servers(), &topic, 2).await;
    wait_up(&agent, ops_port).await;
    let (status, report) = wait_ready_status(ops_port, 200).await;
    assert!(status, "{report}\n{}", agent.log());
    assert!(
        component(&report, "kafka")["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("consuming")),
        "{report}"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn the_allocators_figures_are_on_the_metrics_page() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &dir.path().join("q.db3"), port, &[]);
    wait_up(&agent, port).await;

    // Read every 5 s.
    let mut figures = (0.0, 0.0);
    for _ in 0..40 {
        let samples = scrape(port).await;
        figures = (
            value(&samples, "ilagent_memory_allocated_bytes", &[]),
            value(&samples, "ilagent_memory_resident_bytes", &[]),
        );
        if figures.0 > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (allocated, resident) = figures;
    assert!(
        allocated > 100_000.0,
        "allocated {allocated}\n{}",
        agent.log()
    );
    assert!(
        resident >= allocated,
        "resident {resident} < allocated {allocated}"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    const VALID: usize = 25;
    const INVALID: usize = 4;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metrics.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &["--rate_limit_events", "0"]);
    wait_up(&agent, port).await;
    let client = client();
    for seq in 0..VALID {
        assert_eq!(post_event(&client, port, &event(seq % 5, seq)).await.0, 202);
    }
    for _ in 0..INVALID {
        let (status, _) =
            post_event(&client, port, &serde_json::json!({"eventType": "ALERT"})).await;
        assert_eq!(status, 400);
    }
    assert!(
        wait_for_events(&stand_in, VALID, WAIT).await,
        "{}",
        agent.log()
    );
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);

    let samples = scrape(port).await;
    let http = [("source", "http")];
    let count = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(
        count(
            "ilagent_messages_received_total",
            &[("source", "http"), ("topic", "/api/events")]
        ),
        VALID as f64
    );
    assert_eq!(
        count(
            "ilagent_messages_total",
            &[("source", "http"), ("outcome", "delivered")]
        ),
        VALID as f64
    );
    assert_eq!(count("ilagent_queue_writes_total", &http), VALID as f64);
    assert_eq!(
        count(
            "ilagent_http_requests_total",
            &[("route", "events"), ("status", "202")]
        ),
        VALID as f64
    );
    assert_eq!(
        count(
            "ilagent_http_requests_total",
            &[("route", "events"), ("status", "400")]
        ),
        INVALID as f64
    );
    assert_eq!(
        count("ilagent_ilert_responses_total", &[("class", "2xx")]),
        VALID as f64
    );
    assert_eq!(
        count("ilagent_delivery_latency_seconds_count", &http),
        VALID as f64
    );
    assert_eq!(count("ilagent_queue_depth", &[]), 0.0);
    assert_eq!(count("ilagent_dead_letters", &[]), 0.0);
    assert_eq!(count("ilagent_ilert_requests_in_flight", &[]), 0.0);
    assert_eq!(
        count("ilagent_component_ready", &[("component", "queue")]),
        1.0
    );

    let root: serde_json::Value = client
        .get(url(port, "/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn health_turns_503_once_shutdown_begins_and_the_drained_agent_exits_zero() {
    let stand_in = StandIn::start().await.unwrap();
    // ilert is slow, so the drain after SIGTERM takes a moment to watch.
    stand_in.set_behaviour(Behaviour {
        latency_ms: 3_000,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("drain.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &[]);
    wait_up(&agent, port).await;
    let client = client();
    assert_eq!(post_event(&client, port, &event(1, 0)).await.0, 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.signal("TERM");
    // The signal is handled by the agent's own task: the first request may still
    // be served before it runs, so wait (briefly) for /health to turn.
    let turned = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let health = client.get(url(port, "/health")).send().await.unwrap();
            if health.status() == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        turned.is_ok(),
        "/health still 200 five seconds after SIGTERM"
    );
    let (status, report) = ready(port).await;
    assert_eq!((status, report["stopping"].as_bool()), (503, Some(true)));
    assert_eq!(
        post_event(&client, port, &event(1, 1)).await.0,
        503,
        "no new events while stopping"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(stand_in.events().len(), 1, "the in-flight event finished");
    assert_eq!(queue_stat(&db, "queued").await, 0);
}

#[tokio::test]
async fn a_source_that_fails_for_good_stops_the_whole_agent_with_status_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fail.db3");
    let port = free_port();
    // librdkafka refuses the property when the consumer is created: the Kafka source
    // fails at run time, and the proxy beside it must not go on alone.
    let agent = start_proxy(
        "http://127.0.0.1:9",
        &db,
        port,
        &[
            "--kafka_brokers",
            "127.0.0.1:9",
            "-e",
            "events",
            "--kafka_property",
            "fetch.wait.max.ms=soon",
        ],
    );
    let mut agent = agent;
    let status = tokio::time::timeout(WAIT, agent.child.wait())
        .await
        .unwrap()
        .unwrap();
    let log = agent.full_log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: kafka source: cannot create the consumer")),
        "the last line says which part failed and why:\n{log}"
    );
}

#[tokio::test]
async fn a_port_in_use_and_contradicting_flags_stop_the_agent_before_it_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("flags.db3");
    let run = |args: Vec<String>| {
        let db = db.clone();
        async move {
            let output = Command::new(env!("CARGO_BIN_EXE_ilagent"))
                .arg("-f")
                .arg(&db)
                .arg("daemon")
                .args(&args)
                .output()
                .await
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, stderr) = run(strings(&[
        "-p",
        &port.to_string(),
        "--http_bind",
        "127.0.0.1",
    ]))
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("-p/--port"),
        "{stderr}"
    );

    let (code, stderr) = run(strings(&["-b", "il1hbt-x", "--http_token", "t"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--http_token"), "{stderr}");
    let (code, stderr) = run(strings(&["-p", "8977", "--metrics_port", "8977"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--metrics_port"), "{stderr}");
    drop(taken);
}

#[tokio::test]
async fn a_normal_start_logs_no_warning_while_the_sources_connect_and_subscribe() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (topic, group) = (unique("start"), unique("group"));
    common::create_topic(&bootstrap, &topic, 1).await;
    let (port_text, db) = (port.to_string(), dir.path().join("start.db3"));
    let db_text = db.display().to_string();
    let mut args = common::kafka_args(&bootstrap, &group);
    args.extend([
        "-f",
        db_text.as_str(),
        "-e",
        topic.as_str(),
        "-m",
        "127.0.0.1",
        "-n",
        "normal-start",
        "-p",
        port_text.as_str(),
        "--http_bind",
        "127.0.0.1",
    ]);
    let url = stand_in.url();
    let agent = common::Agent::start(&args, &[("ILERT_API_URL", url.as_str())]);
    let (ready, report) = wait_ready_status(port, 200).await;
    assert!(ready, "{report}\n{}", agent.log());
    let log = agent.full_log();
    assert!(
        log.contains("not ready yet"),
        "the states on the way are logged: {log}"
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && !l.contains("librdkafka"))
        .collect();
    assert!(
        warnings.is_empty(),
        "a normal start warned:\n{}",
        warnings.join("\n")
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
