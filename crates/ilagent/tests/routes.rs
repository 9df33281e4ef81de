//! Routes from the configuration file (`--config`) against real brokers (tansu, Mosquitto)
//! and the ilert stand-in: conditions that split one topic, per-route field expressions
//! on MQTT wildcards, an expression that fails at run time, flags that win over the
//! file, and configuration errors that stop the agent with the file, line and route.

mod common;
mod mqtt_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Agent, committed, create_topic, eventually, kafka_args, produce, producer, read_topic,
    run_ilagent, unique, write_config,
};
use ilert_standin::StandIn;
use serde_json::{Value, json};
use testkit::{Mosquitto, MosquittoConfig, Tansu, free_port};

const WAIT: Duration = Duration::from_secs(60);

fn start(stand_in: &StandIn, args: &[&str], extra_env: &[(&str, &str)]) -> Agent {
    common::start_against(stand_in, args, extra_env)
}

fn event_paths(stand_in: &StandIn) -> Vec<(String, Value)> {
    stand_in
        .requests()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status) && r.method == "POST")
        .filter_map(|r| Some((r.path.clone(), r.json.clone()?)))
        .collect()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[tokio::test]
async fn two_routes_split_one_kafka_topic_by_condition_and_what_neither_takes_is_skipped() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("monitoring"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            r#"
[[route]]
name = "critical"
source = "kafka"
topics = ["{topic}"]
when = '.level == "critical"'
[route.fields]
integration_key = "env:CRITICAL_KEY"
summary = '"\(.host): \(.check)"'
alert_key = '"\(.host)/\(.check)"'
priority = '"HIGH"'

[[route]]
name = "warnings"
source = "kafka"
topics = ["{topic}"]
when = '.level == "warning"'
[route.fields]
integration_key = '"il1api-warnings"'
summary = '"warning on \(.host)"'
alert_key = '"\(.host)/\(.check)"'
priority = '"LOW"'
custom_details = '{{host, check, key: $key, partition: $partition}}'
"#
        ),
    );
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(kafka_args(&bootstrap, &group));
    let agent = start(&stand_in, &args, &[("CRITICAL_KEY", "il1api-critical")]);

    let producer = producer(&bootstrap);
    for (level, check) in [("critical", "disk"), ("info", "cpu"), ("warning", "mem")] {
        let payload = json!({"level": level, "host": "db-1", "check": check}).to_string();
        produce(&producer, &topic, None, Some("db-1"), payload.as_bytes()).await;
    }

    assert!(
        eventually(WAIT, || event_paths(&stand_in).len() >= 2).await,
        "{}",
        agent.log()
    );
    // The skipped message is committed with the others.
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [3]).await,
        "{}",
        agent.log()
    );
    // Different alert keys: delivered in parallel, in either order.
    let mut events = event_paths(&stand_in);
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(events.len(), 2, "{events:#?}");
    let (path, critical) = &events[0];
    assert_eq!(path, "/api/v1/events/kafka/il1api-critical");
    assert_eq!(critical["summary"], "db-1: disk");
    assert_eq!(critical["alertKey"], "db-1/disk");
    assert_eq!(critical["priority"], "HIGH");
    let (path, warning) = &events[1];
    assert_eq!(path, "/api/v1/events/kafka/il1api-warnings");
    assert_eq!(warning["priority"], "LOW");
    assert_eq!(
        warning["customDetails"],
        json!({"host": "db-1", "check": "mem", "key": "db-1", "partition": 0})
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_field_that_fails_at_run_time_dead_letters_its_message_with_the_reason_and_the_next_flows()
 {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, dlq, group) = (unique("plc"), unique("dlq"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            r#"
kafka_dlq_topic = "{dlq}"

[[route]]
name = "machines"
source = "kafka"
topics = ["{topic}"]
[route.fields]
integration_key = '"il1api-machines"'
summary = '.machine | ascii_downcase'
"#
        ),
    );
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(kafka_args(&bootstrap, &group));
    let agent = start(&stand_in, &args, &[]);

    let producer = producer(&bootstrap);
    // A number where the expression needs text, then a good one.
    produce(&producer, &topic, None, Some("m"), br#"{"machine": 42}"#).await;
    produce(
        &producer,
        &topic,
        None,
        Some("m"),
        br#"{"machine": "PRESS-4"}"#,
    )
    .await;

    assert!(
        eventually(WAIT, || !event_paths(&stand_in).is_empty()).await,
        "{}",
        agent.log()
    );
    assert_eq!(event_paths(&stand_in)[0].1["summary"], "press-4");
    let letters = read_topic(&bootstrap, &dlq, 1, WAIT);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload, br#"{"machine": 42}"#);
    let reason = letters[0].header("ilagent.reason").unwrap_or_default();
    assert!(
        reason.contains("route `machines`: field `summary` failed"),
        "{reason}"
    );
    assert_eq!(letters[0].header("ilagent.reject.kind"), Some("invalid"));
    assert!(eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [2]).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn routes_on_mqtt_wildcards_map_each_topic_family_their_own_way() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db3");
    let client_id = unique("agent");
    let config = write_config(
        &dir,
        &format!(
            r#"
mqtt_host = "127.0.0.1"
mqtt_port = {port}
mqtt_name = "{client_id}"
file = "{db}"

[[route]]
name = "alarms"
source = "mqtt"
topics = ["plant/+/alarms"]
when = '.state != "ACK"'
[route.fields]
integration_key = '"il1api-plant"'
event_type = 'if .state == "CLEARED" then "RESOLVE" else "ALERT" end'
summary = '"\(.machine): \(.text)"'
alert_key = '"\($topic | split("/")[1])/\(.machine)"'

[[route]]
name = "alive"
source = "mqtt"
topics = ["plant/+/alive"]
kind = "heartbeat"
[route.fields]
integration_key = '"il1hbt-" + ($topic | split("/")[1])'
"#,
            port = broker.port(),
            db = db.display()
        ),
    );
    let config = config.display().to_string();
    let agent = start(&stand_in, &["--config", &config, "daemon", "-vv"], &[]);
    mqtt_support::wait_subscribed(&agent).await;

    let messages = [
        (
            "plant/l1/alarms",
            json!({"machine": "press-4", "state": "RAISED", "text": "oil low"}),
        ),
        (
            "plant/l1/alarms",
            json!({"machine": "press-4", "state": "ACK", "text": "oil low"}),
        ),
        ("plant/l2/alive", json!({})),
        (
            "plant/l1/alarms",
            json!({"machine": "press-4", "state": "CLEARED", "text": "oil ok"}),
        ),
    ]
    .map(|(topic, payload)| (topic.to_string(), payload.to_string().into_bytes()));
    mqtt_support::publish(broker.port(), &messages).await;

    let arrived = || {
        stand_in
            .requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .count()
    };
    assert!(eventually(WAIT, || arrived() >= 3).await, "{}", agent.log());
    let events = event_paths(&stand_in);
    let types: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["eventType"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, ["ALERT", "RESOLVE"], "the ACK is skipped");
    assert!(events.iter().all(|(path, e)| {
        path == "/api/v1/events/mqtt/il1api-plant" && e["alertKey"] == "l1/press-4"
    }));
    let pings: Vec<String> = stand_in
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert_eq!(pings, ["/api/heartbeats/il1hbt-l2"]);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn the_command_line_wins_over_the_file_and_env_references_fill_in_secrets() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (file_topic, cli_topic, group) = (unique("from-file"), unique("from-cli"), unique("g"));
    create_topic(&bootstrap, &file_topic, 1).await;
    create_topic(&bootstrap, &cli_topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            r#"
kafka_brokers = "{bootstrap}"
kafka_group_id = "{group}"
kafka_auto_offset_reset = "earliest"
event_topic = ["{file_topic}"]
event_key = "env:ROUTES_TEST_EVENT_KEY"
"#
        ),
    );
    let config = config.display().to_string();
    let agent = start(
        &stand_in,
        &["--config", &config, "daemon", "-vv", "-e", &cli_topic],
        &[("ROUTES_TEST_EVENT_KEY", "il1api-from-env")],
    );
    let producer = producer(&bootstrap);
    let payload = json!({"summary": "from the cli topic", "alertKey": "a"}).to_string();
    produce(&producer, &cli_topic, None, None, payload.as_bytes()).await;

    assert!(
        eventually(WAIT, || !event_paths(&stand_in).is_empty()).await,
        "{}",
        agent.log()
    );
    let (path, event) = &event_paths(&stand_in)[0];
    assert_eq!(path, "/api/v1/events/kafka/il1api-from-env");
    assert_eq!(event["summary"], "from the cli topic");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let started = log
        .lines()
        .find(|l| l.contains("kafka source started"))
        .unwrap_or_default();
    assert!(
        started.contains(&cli_topic) && !started.contains(&file_topic),
        "-e replaces the file's event_topic: {started}"
    );
    assert!(
        !log.contains("il1api-from-env"),
        "the key is a secret: never in the log"
    );
}

#[tokio::test]
async fn configuration_errors_stop_the_agent_with_exit_2_naming_the_file_line_and_route() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 8] = [
        (
            "[[route]]\nname = \"hook\"\nsource = \"http\"\ntopics = [\"/hooks/x\"]\n",
            ": route `hook` takes HTTP requests (/hooks/x) but the proxy is off: set port",
        ),
        (
            "port = 8977\n[[route]]\nname = \"hook\"\nsource = \"http\"\ntopics = [\"/api/events\"]\n",
            ":5:11: route `hook`: `/api/events` is served by the proxy itself",
        ),
        (
            "kafka_brokers = \"localhost:9092\"\nkafka_grup_id = \"g\"\n",
            ":2:1: unknown key `kafka_grup_id`",
        ),
        (
            "mqtt_host = \"localhost\"\nmqtt_port = \"high\"\n",
            ":2:13: `mqtt_port`: invalid value 'high'",
        ),
        (
            "kafka_brokers = \"localhost:9092\"\n\n[[route]]\nname = \"r1\"\nsource = \"kafka\"\ntopics = [\"t\"]\nwhen = '.a | | .b'\n",
            ":7:14: route `r1`: condition `when`: expected term",
        ),
        (
            "kafka_brokers = \"localhost:9092\"\n[[route]]\nname = \"r2\"\nsource = \"kafka\"\ntopics = [\"t\"]\n[route.fields]\nsummary = 'repeat(.)'\n",
            ":7:12: route `r2`: field `summary`: `repeat` loops without bound",
        ),
        (
            "[[route]]\nname = \"r3\"\nsource = \"kafka\"\ntopics = [\"t\"]\n",
            ": route `r3` consumes Kafka topics (t) but no Kafka broker is configured",
        ),
        (
            "kafka_brokers = \"localhost:9092\"\nevent_key = \"env:ROUTES_TEST_UNSET_VARIABLE\"\nevent_topic = [\"t\"]\n",
            ":2:13: `event_key`: `env:ROUTES_TEST_UNSET_VARIABLE`: the environment variable ROUTES_TEST_UNSET_VARIABLE is not set",
        ),
    ];
    for (text, says) in cases {
        let config = write_config(&dir, text);
        let config = config.display().to_string();
        let (code, stdout, stderr) = run_ilagent(&["--config", &config, "daemon"], &[]).await;
        assert_eq!(code, Some(2), "{text}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(
            stderr.contains(&format!("error: {config}")) && stderr.contains(says),
            "for\n{text}\nexpected `{says}` in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn every_example_file_passes_ilagent_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let config = path.display().to_string();
        let (code, stdout, stderr) = run_ilagent(
            &["--config", &config, "check"],
            &[
                ("PLANT_INTEGRATION_KEY", "il1api-plant-example"),
                (
                    "ALERTMANAGER_INTEGRATION_KEY",
                    "il1api-alertmanager-example",
                ),
                ("ALERTMANAGER_HEARTBEAT_KEY", "il1hbt-alertmanager-example"),
                ("ILERT_API_KEY", "il1-user-api-key-example"),
            ],
        )
        .await;
        assert_eq!(code, Some(0), "{config}\n{stdout}\n{stderr}");
        assert!(stdout.contains(" 0 failed"), "{stdout}");
        checked += 1;
    }
    assert!(
        checked >= 3,
        "no example found in {}",
        examples_dir().display()
    );
}

#[tokio::test]
async fn ilagent_map_prints_the_request_with_the_key_masked_and_exits_1_for_an_invalid_message() {
    let config = examples_dir().join("plc-alarms.toml").display().to_string();
    let env = [("PLANT_INTEGRATION_KEY", "il1api-plant-example")];
    let map = |payload: &'static str| {
        let config = config.clone();
        async move {
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"))
                .args(["--config", &config, "map", "--topic", "plant/line-1/alarms"])
                .envs(env)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(payload.as_bytes()).await.unwrap();
            drop(stdin);
            let output = child.wait_with_output().await.unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            )
        }
    };
    let (code, stdout) =
        map(r#"{"machine": "press-4", "code": 17, "state": "RAISED", "text": "oil low"}"#).await;
    assert_eq!(code, Some(0), "{stdout}");
    let shown: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(shown["route"], "plc-alarms");
    assert_eq!(shown["request"]["method"], "POST");
    assert_eq!(shown["request"]["body"]["alertKey"], "line-1/press-4/17");
    assert!(
        !stdout.contains("il1api-plant-example"),
        "the integration key is masked: {stdout}"
    );

    let (code, stdout) = map("press-4;17;RAISED").await;
    assert_eq!(code, Some(1), "{stdout}");
    let shown: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        shown["invalid"]
            .as_str()
            .unwrap_or_default()
            .contains("plc-alarms")
    );
}

#[tokio::test]
async fn the_readme_s_example_configuration_passes_ilagent_check() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split("## Routes and the configuration file")
        .nth(1)
        .expect("the README has a routes section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("the routes section shows a TOML file");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, example).display().to_string();
    let (code, stdout, stderr) = run_ilagent(
        &["--config", &config, "check"],
        &[("CRITICAL_INTEGRATION_KEY", "il1api-readme-example")],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 tests, 3 passed, 0 failed"), "{stdout}");
}

#[tokio::test]
async fn an_http_route_maps_what_is_posted_to_its_path_and_refuses_what_it_cannot_map() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        &dir,
        &format!(
            r#"
port = {port}
http_bind = "127.0.0.1"
http_token = "hook-token"
file = "{db}"

[[route]]
name = "webhook"
source = "http"
topics = ["/hooks/monitor"]
when = '.status != "ignored"'
[route.fields]
integration_key = '"il1api-webhook"'
event_type = 'if .status == "resolved" then "RESOLVE" else "ALERT" end'
summary = '.title | ascii_downcase'
alert_key = '.fingerprint'
"#,
            db = dir.path().join("q.db3").display()
        ),
    );
    let config = config.display().to_string();
    let agent = start(&stand_in, &["--config", &config, "daemon", "-vv"], &[]);
    let client = testkit::http_client().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/monitor");
    let post = |body: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            for _ in 0..100 {
                let request = client.post(&url).bearer_auth("hook-token").body(body);
                if let Ok(response) = request.send().await {
                    let status = response.status().as_u16();
                    let json: Value = response.json().await.unwrap_or(Value::Null);
                    return (status, json);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the proxy did not come up");
        }
    };

    let (status, body) =
        post(r#"{"status": "firing", "title": "DISK FULL", "fingerprint": "db-1"}"#).await;
    assert_eq!(
        (status, body["eventType"].as_str()),
        (202, Some("ALERT")),
        "{body}"
    );
    let (status, body) =
        post(r#"{"status": "resolved", "title": "Disk full", "fingerprint": "db-1"}"#).await;
    assert_eq!(
        (status, body["eventType"].as_str()),
        (202, Some("RESOLVE")),
        "{body}"
    );
    let (status, body) = post(r#"{"status": "ignored", "title": "x", "fingerprint": "y"}"#).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("skipped")),
        "{body}"
    );
    let (status, body) = post(r#"{"status": "firing", "title": 42, "fingerprint": "db-2"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "INVALID_MESSAGE");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("route `webhook`: field `summary` failed"),
        "{body}"
    );
    let unauthorized = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(
        unauthorized.status(),
        401,
        "a route's path needs the token too"
    );
    let (status, body) = post("not json at all").await;
    assert_eq!(
        status, 400,
        "text is `.`, and `.status` of a string fails: {body}"
    );

    assert!(
        eventually(WAIT, || event_paths(&stand_in).len() >= 2).await,
        "{}",
        agent.log()
    );
    let events = event_paths(&stand_in);
    assert_eq!(
        events.len(),
        2,
        "only what was answered 202 is delivered: {events:#?}"
    );
    assert!(events.iter().all(|(path, e)| path == "/api/events"
        && e["integrationKey"] == "il1api-webhook"
        && e["alertKey"] == "db-1"));
    assert_eq!(
        events[0].1["eventType"], "ALERT",
        "in the order they were posted"
    );
    assert_eq!(events[0].1["summary"], "disk full");
    assert_eq!(events[1].1["eventType"], "RESOLVE");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
