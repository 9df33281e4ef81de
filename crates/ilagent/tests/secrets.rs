//! No secret appears in full in anything the agent prints, at the most verbose logging
//! (`-vvvv`, and `RUST_LOG=trace`, which also opens every library's trace lines): stderr,
//! stdout, `/metrics`, the proxy's answers, dead-letter reasons and `ilagent queue` output.
//!
//! Secrets are integration keys (from messages, from `--event_key`), heartbeat keys (from
//! messages, from `-b`, in the proxy's `/api/heartbeats/{key}` path), the user API key,
//! the proxy's token, MQTT and Kafka SASL passwords, and passwords inside `--ilert_url` and
//! `--ilert_beat_url`. Each is a long unique string, so a leak is found wherever it is;
//! what may be shown is the short prefix of the README (at most 8 characters, never more
//! than a quarter), or `****` in place of a URL's password. Every source runs its error
//! paths too: keys ilert answers 400, 401, 404, 429 or 500, dead letters, refused logins,
//! unreachable and invalid ilert URLs.

mod common;
mod http_support;
mod mqtt_support;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use common::{
    Agent, committed, create_topic, eventually, kafka_args, produce, producer, queue_command,
    read_topic, run_ilagent, unique, wait_for_stat,
};
use ilert_standin::{Behaviour, RequestKind, StandIn};
use serde_json::{Value, json};
use testkit::{Mosquitto, MosquittoConfig, Tansu, free_port};

const WAIT: Duration = Duration::from_secs(60);

/// Characters of a secret that may be shown (the README's rule for secrets of 32
/// characters or more).
const SHOWN: usize = 8;
/// Any run of this many characters of a secret past its shown prefix counts as a leak.
const WINDOW: usize = 10;

/// How the most verbose logging is asked for.
#[derive(Clone, Copy, Debug)]
enum Verbosity {
    /// `-vvvv`: the agent at trace, libraries at debug.
    Flag,
    /// `RUST_LOG=trace` (with `-vvvv`, which it overrides): every library at trace too.
    RustLog,
}

impl Verbosity {
    fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Verbosity::Flag => vec![],
            Verbosity::RustLog => vec![("RUST_LOG", "trace")],
        }
    }
}

/// A fresh secret: `tag` and 32 random hex digits (URL-safe, so a key in a path is the
/// same text as in a payload).
fn secret(tag: &str) -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut hasher = state.build_hasher();
    hasher.write(unique(tag).as_bytes());
    let a = hasher.finish();
    let b = state.hash_one(a);
    format!("{tag}{a:016x}{b:016x}")
}

/// The only form of `secret` that may be shown: its prefix and an ellipsis.
fn masked(secret: &str) -> String {
    format!("{}…", &secret[..SHOWN])
}

/// The first line of `text` holding more of `secret` than its prefix, if any.
fn leaked_line<'a>(secret: &str, text: &'a str) -> Option<&'a str> {
    let hidden = &secret[SHOWN..];
    text.lines().find(|line| {
        (0..=hidden.len() - WINDOW).any(|start| line.contains(&hidden[start..start + WINDOW]))
    })
}

/// Fails naming every output, secret and line where more than a prefix of a secret shows.
fn assert_no_secret_in_full(secrets: &[&str], outputs: &[(&str, &str)]) {
    let mut leaks = Vec::new();
    for (name, text) in outputs {
        for secret in secrets {
            if let Some(line) = leaked_line(secret, text) {
                let line: String = line.chars().take(600).collect();
                leaks.push(format!("{name}: `{secret}` in: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets shown in full:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn the_leak_check_allows_the_prefix_and_finds_any_more_of_a_secret() {
    let key = secret("il1api");
    assert_eq!(leaked_line(&key, &format!("key={}", masked(&key))), None);
    assert!(leaked_line(&key, &format!("a\nurl /api/heartbeats/{key} b\n")).is_some());
    assert!(leaked_line(&key, &format!("tail {}", &key[20..])).is_some());
}

/// Logging is really on: debug lines (what -vvvv opens beyond -vvv for libraries, and
/// below what the agent logs at -vv).
fn assert_verbose(log: &str) {
    assert!(
        log.lines().any(|l| l.contains(" DEBUG ")),
        "no debug lines: is -vvvv honoured?\n{log}"
    );
}

/// An ilert base URL on the stand-in with a user and password in it.
fn url_with_password(stand_in: &StandIn, user: &str, password: &str) -> String {
    format!("http://{user}:{password}@{}", stand_in.addr())
}

/// Starts the agent with `args` (after which `-vvvv` goes) and `verbosity`'s environment.
fn start(args: &[&str], verbosity: Verbosity, extra_env: &[(&str, &str)]) -> Agent {
    let mut args = args.to_vec();
    args.push("-vvvv");
    let mut env = verbosity.env();
    env.extend_from_slice(extra_env);
    Agent::start(&args, &env)
}

async fn get_text(url: &str) -> String {
    let response = http_support::client().get(url).send().await.unwrap();
    response.text().await.unwrap()
}

/// What `ilagent queue` prints for the queue in `db`: every listing, and the JSON dead
/// letters without their payloads (the stored message itself, which the operator asked
/// for and which `requeue` sends again).
async fn queue_outputs(db: &std::path::Path) -> String {
    let mut all = String::new();
    for args in [&["status"][..], &["list"][..], &["dead_letters"][..]] {
        let (code, out) = queue_command(db, args).await;
        assert_eq!(code, Some(0), "queue {args:?}: {out}");
        all.push_str(&out);
    }
    let (code, out) = queue_command(db, &["dead_letters", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    for line in out.lines() {
        let mut row: Value = serde_json::from_str(line).unwrap();
        row.as_object_mut().unwrap().remove("payload");
        all.push_str(&row.to_string());
        all.push('\n');
    }
    for args in [&["requeue", "--all"][..], &["list"][..]] {
        let (code, out) = queue_command(db, args).await;
        assert_eq!(code, Some(0), "queue {args:?}: {out}");
        all.push_str(&out);
    }
    all
}

/// Keys ilert (the stand-in) answers with an error, by status.
fn failing_keys(tag: &str, statuses: &[u16]) -> Vec<(u16, String)> {
    statuses.iter().map(|s| (*s, secret(tag))).collect()
}

fn key_status(keys: &[(u16, String)]) -> HashMap<String, u16> {
    keys.iter().map(|(s, k)| (k.clone(), *s)).collect()
}

fn alert(key: &str, summary: &str) -> Vec<u8> {
    json!({"integrationKey": key, "eventType": "ALERT", "summary": summary})
        .to_string()
        .into_bytes()
}

async fn kafka_keys_passwords_and_url_credentials_are_masked(verbosity: Verbosity) {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let (ok_key, invalid_key) = (secret("il1api"), secret("il1api"));
    let failing = failing_keys("il1api", &[400, 401, 404, 429, 500]);
    let (legacy_beat, new_beat, missing_beat, agent_beat) = (
        secret("il1hbt"),
        secret("monitor"),
        secret("il1hbt"),
        secret("il1hbt"),
    );
    let api_key = secret("il1usr");
    let (api_password, beat_password) = (secret("pwapi"), secret("pwbeat"));

    let stand_in = StandIn::start().await.unwrap();
    let mut statuses = key_status(&failing);
    statuses.insert(missing_beat.clone(), 404);
    stand_in.set_behaviour(Behaviour {
        key_status: statuses,
        // The agent's API key is not this one: every policy call is refused (401).
        api_key: Some(secret("other")),
        ..Behaviour::default()
    });

    let (events, beats, shifts, dlq) = (
        unique("s-events"),
        unique("s-beats"),
        unique("s-shifts"),
        unique("s-dlq"),
    );
    for topic in [&events, &beats, &shifts, &dlq] {
        create_topic(&bootstrap, topic, 1).await;
    }
    let producer = producer(&bootstrap);
    let mut event_messages = vec![alert(&ok_key, "delivered")];
    for (status, key) in &failing {
        event_messages.push(alert(key, &format!("answered {status}")));
    }
    event_messages.push(
        json!({"integrationKey": invalid_key, "eventType": "BOGUS", "summary": "invalid"})
            .to_string()
            .into_bytes(),
    );
    for payload in &event_messages {
        produce(&producer, &events, None, None, payload).await;
    }
    let beat_messages = [
        json!({"integrationKey": legacy_beat}),
        json!({"apiKey": new_beat}),
        json!({"integrationKey": missing_beat}),
    ];
    for payload in &beat_messages {
        produce(
            &producer,
            &beats,
            None,
            None,
            payload.to_string().as_bytes(),
        )
        .await;
    }
    let shift =
        json!({"team": "ops", "region": "-eu", "data": {"email": "bob@example.com", "shift": 1}});
    produce(&producer, &shifts, None, None, shift.to_string().as_bytes()).await;

    let group = unique("s-group");
    let metrics_port = free_port().to_string();
    let api_url = url_with_password(&stand_in, "apiuser", &api_password);
    let beat_url = url_with_password(&stand_in, "beatuser", &beat_password);
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &events,
        "-r",
        &beats,
        "--policy_topic",
        &shifts,
        "--policy_routing_keys",
        "team,region",
        "--kafka_dlq_topic",
        &dlq,
        "--max_retries",
        "2",
        "--rate_limit_events",
        "0",
        "-b",
        &agent_beat,
        "--heartbeat_interval",
        "1s",
        "--http_bind",
        "127.0.0.1",
        "--metrics_port",
        &metrics_port,
        "--ilert_url",
        &api_url,
        "--ilert_beat_url",
        &beat_url,
        "--ilert_api_key",
        &api_key,
    ]);
    let agent = start(&args, verbosity, &[]);

    let settled = eventually(WAIT, || {
        committed(&bootstrap, &group, &events, 1) == [event_messages.len() as i64]
            && committed(&bootstrap, &group, &beats, 1) == [beat_messages.len() as i64]
            && committed(&bootstrap, &group, &shifts, 1) == [1]
    })
    .await;
    assert!(settled, "not everything settled; log:\n{}", agent.log());
    let agent_pings = eventually(WAIT, || {
        stand_in
            .requests()
            .iter()
            .filter(|r| r.key.as_deref() == Some(agent_beat.as_str()))
            .count()
            >= 2
    })
    .await;
    assert!(
        agent_pings,
        "the -b heartbeat was not pinged; log:\n{}",
        agent.log()
    );
    // Every key reached ilert, through the URLs with credentials.
    let arrived: Vec<String> = stand_in
        .requests()
        .iter()
        .filter_map(|r| r.key.clone())
        .collect();
    for key in [&ok_key, &legacy_beat, &new_beat, &missing_beat]
        .into_iter()
        .chain(failing.iter().map(|(_, k)| k))
    {
        assert!(arrived.contains(key), "{key} did not reach ilert");
    }
    assert!(
        stand_in.requests().iter().any(|r| matches!(
            r.kind,
            RequestKind::UserSearch | RequestKind::PolicyResolve
        ) && r.status == 401),
        "the policy update did not reach ilert"
    );

    let metrics = get_text(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    // 400, 401, 404, 429, 500 (after 2 attempts), the invalid event and the refused
    // policy update.
    let dead = read_topic(&bootstrap, &dlq, failing.len() + 2, WAIT);
    assert_eq!(
        dead.len(),
        failing.len() + 2,
        "dead letters; log:\n{}",
        agent.log()
    );
    let dead_headers: String = dead
        .iter()
        .flat_map(|r| r.headers.iter().map(|(k, v)| format!("{k}: {v}\n")))
        .collect();
    let stdout = agent.stdout();
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");

    let mut secrets = vec![
        ok_key.as_str(),
        invalid_key.as_str(),
        legacy_beat.as_str(),
        new_beat.as_str(),
        missing_beat.as_str(),
        agent_beat.as_str(),
        api_key.as_str(),
        api_password.as_str(),
        beat_password.as_str(),
    ];
    secrets.extend(failing.iter().map(|(_, k)| k.as_str()));
    assert_no_secret_in_full(
        &secrets,
        &[
            ("stderr", &log),
            ("stdout", &stdout),
            ("/metrics", &metrics),
            ("dead-letter headers", &dead_headers),
        ],
    );
    assert_verbose(&log);
    assert!(log.contains("message rejected"), "{log}");
    assert!(metrics.contains("ilagent_"), "{metrics}");
}

#[tokio::test]
async fn kafka_keys_passwords_and_url_credentials_are_masked_at_vvvv() {
    kafka_keys_passwords_and_url_credentials_are_masked(Verbosity::Flag).await;
}

#[tokio::test]
async fn kafka_keys_passwords_and_url_credentials_are_masked_with_rust_log_trace() {
    kafka_keys_passwords_and_url_credentials_are_masked(Verbosity::RustLog).await;
}

async fn a_refused_kafka_sasl_password_is_masked(verbosity: Verbosity) {
    let tansu = Tansu::start_with_auth().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (flag_password, topic, group) = (secret("kafkapw"), unique("s-sasl"), unique("s-group"));
    let url = stand_in.url();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--kafka_security_protocol",
        "sasl_plaintext",
        "--kafka_sasl_mechanism",
        "SCRAM-SHA-512",
        "--kafka_username",
        "agent",
        "--kafka_password",
        &flag_password,
        // librdkafka's own debug output of every context, at trace.
        "--kafka_property",
        "debug=all",
        "--ilert_url",
        &url,
    ]);
    let agent = start(&args, verbosity, &[]);
    let refused = eventually(WAIT, || {
        agent
            .full_log()
            .matches("SASL SCRAM authentication failed")
            .count()
            >= 2
    })
    .await;
    assert!(refused, "no refused login; log:\n{}", agent.log());
    let stdout = agent.stdout();
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_no_secret_in_full(&[&flag_password], &[("stderr", &log), ("stdout", &stdout)]);
    assert_verbose(&log);
    if let Verbosity::RustLog = verbosity {
        // librdkafka's own dump of its configuration (debug=all) names the password.
        assert!(log.contains("sasl.password = [redacted]"), "{log}");
    }
}

#[tokio::test]
async fn a_refused_kafka_sasl_password_is_masked_at_vvvv() {
    a_refused_kafka_sasl_password_is_masked(Verbosity::Flag).await;
}

#[tokio::test]
async fn a_refused_kafka_sasl_password_is_masked_with_rust_log_trace() {
    a_refused_kafka_sasl_password_is_masked(Verbosity::RustLog).await;
}

async fn mqtt_keys_passwords_and_url_credentials_are_masked(verbosity: Verbosity) {
    let mqtt_password = secret("mqttpw");
    let broker = Mosquitto::start(MosquittoConfig {
        users: vec![("agent".into(), mqtt_password.clone())],
        ..MosquittoConfig::default()
    })
    .unwrap();
    let port = broker.port();
    let (ok_key, beat, missing_beat, fixed_key) = (
        secret("il1api"),
        secret("il1hbt"),
        secret("il1hbt"),
        secret("il1fix"),
    );
    let failing = failing_keys("il1api", &[400, 401, 404, 429, 500]);
    let (api_password, beat_password, wrong_password) =
        (secret("pwapi"), secret("pwbeat"), secret("mqttwrong"));
    let stand_in = StandIn::start().await.unwrap();
    let mut statuses = key_status(&failing);
    statuses.insert(missing_beat.clone(), 404);
    statuses.insert(fixed_key.clone(), 404);
    stand_in.set_behaviour(Behaviour {
        key_status: statuses,
        ..Behaviour::default()
    });
    let api_url = url_with_password(&stand_in, "apiuser", &api_password);
    let beat_url = url_with_password(&stand_in, "beatuser", &beat_password);
    let urls = [
        ("ILERT_API_URL", api_url.as_str()),
        ("ILAGENT_ILERT_BEAT_URL", beat_url.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (direct_db, buffered_db, fixed_db, wrong_db) = (
        dir.path().join("direct.db3"),
        dir.path().join("buffered.db3"),
        dir.path().join("fixed.db3"),
        dir.path().join("wrong.db3"),
    );
    let (direct_topic, beat_topic, buffered_topic, fixed_topic) = (
        unique("s-direct"),
        unique("s-beats"),
        unique("s-buffered"),
        unique("s-fixed"),
    );
    let with = |db: &std::path::Path, extra: &[&str]| {
        let mut args = mqtt_support::agent_args(port, &unique("agent"), db);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--max_retries", "2", "--mqtt_username", "agent"].map(str::to_string));
        args
    };
    let password_env = [("ILAGENT_MQTT_PASSWORD", mqtt_password.as_str())];
    let direct_args = with(&direct_db, &["-e", &direct_topic, "-r", &beat_topic]);
    let buffered_args = with(
        &buffered_db,
        &[
            "-e",
            &buffered_topic,
            "--mqtt_buffer",
            "--mqtt_password",
            &mqtt_password,
        ],
    );
    let fixed_args = with(&fixed_db, &["-e", &fixed_topic, "--event_key", &fixed_key]);
    let wrong_args = with(
        &wrong_db,
        &["-e", &fixed_topic, "--mqtt_password", &wrong_password],
    );
    let start_mqtt = |args: &[String], env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = env.to_vec();
        env.extend_from_slice(&urls);
        start(&args, verbosity, &env)
    };
    let direct = start_mqtt(&direct_args, &password_env);
    let buffered = start_mqtt(&buffered_args, &[]);
    let fixed = start_mqtt(&fixed_args, &password_env);
    let wrong = start_mqtt(&wrong_args, &[]);
    for agent in [&direct, &buffered, &fixed] {
        mqtt_support::wait_subscribed(agent).await;
    }

    let mut messages = Vec::new();
    for topic in [&direct_topic, &buffered_topic] {
        messages.push((topic.clone(), alert(&ok_key, "delivered")));
        for (status, key) in &failing {
            messages.push((topic.clone(), alert(key, &format!("answered {status}"))));
        }
    }
    messages.push((fixed_topic.clone(), alert(&ok_key, "key overridden")));
    for key in [&beat, &missing_beat] {
        messages.push((
            beat_topic.clone(),
            json!({"integrationKey": key}).to_string().into_bytes(),
        ));
    }
    mqtt_support::publish_as(port, "agent", &mqtt_password, &messages).await;

    // Direct: every key was tried (the 429 and 500 ones twice); buffered: all settled.
    let tried = |key: &str| {
        stand_in
            .requests()
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .count()
    };
    let all_tried = eventually(WAIT, || {
        failing.iter().all(|(_, k)| tried(k) >= 2)
            && [&ok_key, &beat, &missing_beat, &fixed_key]
                .iter()
                .all(|k| tried(k) >= 1)
    })
    .await;
    assert!(
        all_tried,
        "not every key reached ilert; log:\n{}",
        direct.log()
    );
    assert!(
        wait_for_stat(&buffered_db, "dead_letters", |n| n == failing.len() as u64).await,
        "buffered dead letters; log:\n{}",
        buffered.log()
    );
    assert!(
        mqtt_support::wait_for_log(&wrong, "the MQTT broker refused the login", 2).await,
        "{}",
        wrong.log()
    );
    let queue = queue_outputs(&buffered_db).await;
    assert!(queue.contains("dead_letters"), "{queue}");

    let mut outputs = Vec::new();
    for (name, agent) in [
        ("direct", direct),
        ("buffered", buffered),
        ("event_key", fixed),
        ("wrong password", wrong),
    ] {
        let stdout = agent.stdout();
        let (code, log) = agent.stop().await;
        assert_eq!(code, Some(0), "{name}: {log}");
        if name == "wrong password" {
            assert!(log.contains("the MQTT broker refused the login"), "{log}");
        } else {
            assert_verbose(&log);
            assert!(log.contains("message rejected"), "{name}: {log}");
        }
        outputs.push((format!("{name} stderr"), log));
        outputs.push((format!("{name} stdout"), stdout));
    }
    outputs.push(("queue commands".into(), queue));
    let mut secrets = vec![
        mqtt_password.as_str(),
        wrong_password.as_str(),
        ok_key.as_str(),
        beat.as_str(),
        missing_beat.as_str(),
        fixed_key.as_str(),
        api_password.as_str(),
        beat_password.as_str(),
    ];
    secrets.extend(failing.iter().map(|(_, k)| k.as_str()));
    let outputs: Vec<(&str, &str)> = outputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_no_secret_in_full(&secrets, &outputs);
}

#[tokio::test]
async fn mqtt_keys_passwords_and_url_credentials_are_masked_at_vvvv() {
    mqtt_keys_passwords_and_url_credentials_are_masked(Verbosity::Flag).await;
}

#[tokio::test]
async fn mqtt_keys_passwords_and_url_credentials_are_masked_with_rust_log_trace() {
    mqtt_keys_passwords_and_url_credentials_are_masked(Verbosity::RustLog).await;
}

async fn proxy_keys_in_paths_and_bodies_and_its_token_are_masked(verbosity: Verbosity) {
    let (ok_key, invalid_key, path_key) = (secret("il1api"), secret("il1api"), secret("il1api"));
    let failing = failing_keys("il1api", &[400, 401, 404, 429, 500]);
    let (beat, missing_beat, empty_answer_beat) =
        (secret("il1hbt"), secret("il1hbt"), secret("monitor"));
    let (token, wrong_token) = (secret("tok"), secret("wrongtok"));
    let (api_password, beat_password) = (secret("pwapi"), secret("pwbeat"));
    let stand_in = StandIn::start().await.unwrap();
    let mut statuses = key_status(&failing);
    statuses.insert(missing_beat.clone(), 404);
    statuses.insert(empty_answer_beat.clone(), 500);
    stand_in.set_behaviour(Behaviour {
        key_status: statuses,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proxy.db3");
    let db_flag = db.display().to_string();
    let port = free_port();
    let port_flag = port.to_string();
    let api_url = url_with_password(&stand_in, "apiuser", &api_password);
    let beat_url = url_with_password(&stand_in, "beatuser", &beat_password);
    let agent = start(
        &[
            "-f",
            &db_flag,
            "daemon",
            "-p",
            &port_flag,
            "--http_bind",
            "127.0.0.1",
            "--http_token",
            &token,
            "--max_retries",
            "2",
            "--ilert_url",
            &api_url,
            "--ilert_beat_url",
            &beat_url,
        ],
        verbosity,
        &[],
    );
    http_support::wait_up(&agent, port).await;

    let client = http_support::client();
    let mut answers = String::new();
    let mut send =
        async |method: reqwest::Method, path: &str, bearer: &str, body: Option<Value>| {
            let mut request = client
                .request(method.clone(), http_support::url(port, path))
                .bearer_auth(bearer);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            answers.push_str(&format!("{method} {status} {text}\n"));
            status
        };
    let event = |key: &str| json!({"integrationKey": key, "eventType": "ALERT", "summary": "s"});
    for key in std::iter::once(&ok_key).chain(failing.iter().map(|(_, k)| k)) {
        let status = send(
            reqwest::Method::POST,
            "/api/events",
            &token,
            Some(event(key)),
        )
        .await;
        assert_eq!(status, 202);
    }
    let invalid = json!({"integrationKey": invalid_key, "eventType": "BOGUS", "summary": "s"});
    let status = send(
        reqwest::Method::POST,
        "/api/v1/events",
        &token,
        Some(invalid),
    )
    .await;
    assert_eq!(status / 100, 4, "{status}");
    // Not routes of the proxy, but a key in them must not show either.
    for path in ["/api/v1/events/kafka", "/api/v1/events/mqtt", "/api/events"] {
        let path = format!("{path}/{path_key}");
        let status = send(reqwest::Method::POST, &path, &token, Some(event(&path_key))).await;
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    for (path, expected) in [
        (format!("/api/heartbeats/{beat}"), 2),
        (format!("/api/v1/heartbeats/{beat}"), 2),
        (format!("/api/heartbeats/{missing_beat}"), 4),
        (format!("/api/heartbeats/{empty_answer_beat}"), 5),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let status = send(method, &path, &token, None).await;
            assert_eq!(status / 100, expected, "{path}: {status}");
        }
    }
    let path = format!("/api/heartbeats/{beat}");
    let refused = send(reqwest::Method::GET, &path, &wrong_token, None).await;
    assert_eq!(refused, 401);

    assert!(
        wait_for_stat(&db, "dead_letters", |n| n == failing.len() as u64).await,
        "dead letters; log:\n{}",
        agent.log()
    );
    let metrics = get_text(&http_support::url(port, "/metrics")).await;
    let queue = queue_outputs(&db).await;
    let stdout = agent.stdout();
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");

    let mut secrets = vec![
        ok_key.as_str(),
        invalid_key.as_str(),
        path_key.as_str(),
        beat.as_str(),
        missing_beat.as_str(),
        empty_answer_beat.as_str(),
        token.as_str(),
        wrong_token.as_str(),
        api_password.as_str(),
        beat_password.as_str(),
    ];
    secrets.extend(failing.iter().map(|(_, k)| k.as_str()));
    assert_no_secret_in_full(
        &secrets,
        &[
            ("stderr", &log),
            ("stdout", &stdout),
            ("/metrics", &metrics),
            ("proxy answers", &answers),
            ("queue commands", &queue),
        ],
    );
    assert_verbose(&log);
    // Where a heartbeat key is logged, it is its prefix.
    assert!(log.contains(&masked(&missing_beat)), "{log}");
    assert!(metrics.contains("ilagent_"), "{metrics}");
}

#[tokio::test]
async fn proxy_keys_in_paths_and_bodies_and_its_token_are_masked_at_vvvv() {
    proxy_keys_in_paths_and_bodies_and_its_token_are_masked(Verbosity::Flag).await;
}

#[tokio::test]
async fn proxy_keys_in_paths_and_bodies_and_its_token_are_masked_with_rust_log_trace() {
    proxy_keys_in_paths_and_bodies_and_its_token_are_masked(Verbosity::RustLog).await;
}

async fn passwords_in_ilert_urls_are_masked_when_invalid_unreachable_or_refused(
    verbosity: Verbosity,
) {
    let env = verbosity.env();
    // Invalid: exit 2 before anything is sent, the flag named, the password as ****.
    for flag in ["--ilert_url", "--ilert_beat_url"] {
        let password = secret("pw");
        for form in [
            "https://user:{pw}@",
            "https://user:{pw}@api.ilert.com:port",
            "https://user:{pw}@[::1",
            "https://user:{pw}@ho st",
            " https://user:{pw}@exa mple.com/x",
            "https://{pw}@ho st",
            "ftp://user:{pw}@api.ilert.com",
            "user:{pw}@api.ilert.com",
            "https://user:{pw}/x@api.ilert.com:port",
            "https://user:{pw}?x@api.ilert.com:port",
            "https://user:{pw}#x@api.ilert.com:port",
        ] {
            let url = form.replace("{pw}", &password);
            for command in [
                &["daemon", "-p", "0"][..],
                &["event", "-k", "il1api-some-key", "-s", "x"][..],
                &["heartbeat", "-k", "il1hbt-some-key"][..],
            ] {
                let mut args = command.to_vec();
                args.extend(["-vvvv", flag, &url]);
                let (code, stdout, stderr) = run_ilagent(&args, &env).await;
                assert_eq!(code, Some(2), "{args:?}: {stderr}");
                assert_no_secret_in_full(&[&password], &[("stderr", &stderr), ("stdout", &stdout)]);
                assert!(stderr.contains(flag), "{args:?}: {stderr}");
                assert!(stderr.contains("****"), "{args:?}: {stderr}");
            }
        }
    }

    // Valid but unreachable (a closed port), and reachable but refusing the key.
    let stand_in = StandIn::start().await.unwrap();
    let (key, beat, password) = (secret("il1api"), secret("il1hbt"), secret("pw"));
    stand_in.set_behaviour(Behaviour {
        key_status: [(key.clone(), 401), (beat.clone(), 404)].into(),
        ..Behaviour::default()
    });
    let closed = format!("http://user:{password}@127.0.0.1:{}", free_port());
    let refusing = url_with_password(&stand_in, "user", &password);
    for url in [&closed, &refusing] {
        for args in [
            vec!["event", "-k", &key, "-s", "x", "--timeout", "1s"],
            vec!["heartbeat", "-k", &beat, "--timeout", "1s"],
        ] {
            let mut args = args;
            args.extend(["-vvvv", "--ilert_url", url, "--ilert_beat_url", url]);
            // Fast retries to a closed port would use up the rate budget, and a wait
            // for budget outlasts --timeout.
            args.extend(["--rate_limit_events", "0", "--rate_limit_heartbeats", "0"]);
            let (code, stdout, stderr) = run_ilagent(&args, &env).await;
            // 1: ilert refused; 3: gave up at --timeout.
            assert!(matches!(code, Some(1 | 3)), "{args:?}: {code:?} {stderr}");
            assert_no_secret_in_full(
                &[&key, &beat, &password],
                &[("stderr", &stderr), ("stdout", &stdout)],
            );
            assert_verbose(&stderr);
        }
    }
    assert!(
        stand_in.requests().len() >= 2,
        "the refusing stand-in was not reached"
    );
}

#[tokio::test]
async fn passwords_in_ilert_urls_are_masked_when_invalid_unreachable_or_refused_at_vvvv() {
    passwords_in_ilert_urls_are_masked_when_invalid_unreachable_or_refused(Verbosity::Flag).await;
}

#[tokio::test]
async fn passwords_in_ilert_urls_are_masked_when_invalid_unreachable_or_refused_with_rust_log_trace()
 {
    passwords_in_ilert_urls_are_masked_when_invalid_unreachable_or_refused(Verbosity::RustLog)
        .await;
}
