//! The `ilagent` binary as a user runs it: `event` and `heartbeat` end to end against the
//! ilert stand-in, and start-up validation of every invalid flag combination.

use std::process::Output;
use std::time::Duration;

use ilert_standin::{Behaviour, Scripted, StandIn};
use serde_json::json;

/// Runs the binary with `args` (plus the stand-in's URLs when given) and collects output.
async fn ilagent(stand_in: Option<&StandIn>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ILERT_INTEGRATION_KEY")
        .env_remove("ILERT_API_KEY");
    if let Some(stand_in) = stand_in {
        command
            .env("ILERT_API_URL", stand_in.url())
            .env("ILAGENT_ILERT_BEAT_URL", stand_in.url());
    }
    // Fast retries keep the 503-then-202 cases quick.
    command
        .env("ILAGENT_BACKOFF_INITIAL", "50ms")
        .env("ILAGENT_BACKOFF_MAX", "200ms");
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("ilagent did not finish within 60 s")
        .expect("ilagent could not be run")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn event_sends_exactly_the_flags_as_json_and_exits_0() {
    let stand_in = StandIn::start().await.unwrap();
    let output = ilagent(
        Some(&stand_in),
        &[
            "event",
            "-k",
            "il1api0123456789",
            "-t",
            "ALERT",
            "-s",
            "disk full",
            "-i",
            "db-1/disk",
            "-o",
            "HIGH",
            "-d",
            "sda1 at 99%",
            "-g",
            "https://img/1.png",
            "-l",
            "https://runbook",
            "-l",
            "https://grafana",
        ],
    )
    .await;

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).starts_with("ilert accepted the event (202"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        stand_in.events(),
        [json!({
            "integrationKey": "il1api0123456789",
            "eventType": "ALERT",
            "summary": "disk full",
            "alertKey": "db-1/disk",
            "priority": "HIGH",
            "details": "sda1 at 99%",
            "images": [{"src": "https://img/1.png"}],
            "links": [{"href": "https://runbook"}, {"href": "https://grafana"}]
        })]
    );
    assert_eq!(stand_in.requests()[0].path, "/api/events");
}

#[tokio::test]
async fn event_takes_the_integration_key_from_the_environment() {
    let stand_in = StandIn::start().await.unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"));
    let output = command
        .args(["event", "-t", "RESOLVE", "-i", "db-1/disk"])
        .env("ILERT_INTEGRATION_KEY", "il1api-from-env")
        .env("ILERT_API_URL", stand_in.url())
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(
        stand_in.events(),
        [
            json!({"integrationKey": "il1api-from-env", "eventType": "RESOLVE", "alertKey": "db-1/disk"})
        ]
    );
}

#[tokio::test]
async fn event_rejected_with_400_exits_1_with_ilerts_reason() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::Status(400)]);
    let output = ilagent(
        Some(&stand_in),
        &["event", "-k", "il1api0123456789", "-s", "x"],
    )
    .await;

    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.starts_with("error: ilert rejected the event: 400 Bad Request"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert_eq!(stand_in.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn event_for_an_unknown_key_exits_1_with_404() {
    let stand_in = StandIn::start().await.unwrap();
    let mut behaviour = Behaviour::default();
    behaviour
        .key_status
        .insert("il1api-unknown-key".into(), 404);
    stand_in.set_behaviour(behaviour);
    let output = ilagent(
        Some(&stand_in),
        &["event", "-k", "il1api-unknown-key", "-s", "x"],
    )
    .await;

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("404 Not Found"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn event_retries_a_503_and_exits_0_once_ilert_accepts() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::Status(503)]);
    let output = ilagent(
        Some(&stand_in),
        &["event", "-k", "il1api0123456789", "-s", "x"],
    )
    .await;

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let statuses: Vec<u16> = stand_in.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 202]);
    assert_eq!(stand_in.events().len(), 1);
}

#[tokio::test]
async fn event_gives_up_at_the_timeout_with_exit_3() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let output = ilagent(
        Some(&stand_in),
        &[
            "event",
            "-k",
            "il1api0123456789",
            "-s",
            "x",
            "--timeout",
            "1s",
        ],
    )
    .await;

    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(
        err.contains("not delivered") && err.contains("503"),
        "{err}"
    );
}

#[tokio::test]
async fn event_when_ilert_is_unreachable_gives_up_with_exit_3() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let output = ilagent(
        None,
        &[
            "event",
            "-k",
            "il1api0123456789",
            "-s",
            "x",
            "--timeout",
            "1s",
            "--ilert_url",
            &url,
        ],
    )
    .await;

    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("could not connect"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn heartbeat_pings_and_exits_0() {
    let stand_in = StandIn::start().await.unwrap();
    let legacy = ilagent(Some(&stand_in), &["heartbeat", "-k", "il1hbt0123456789"]).await;
    let ping = ilagent(Some(&stand_in), &["heartbeat", "-k", "monitor-0123456789"]).await;

    assert_eq!(legacy.status.code(), Some(0), "stderr: {}", stderr(&legacy));
    assert_eq!(ping.status.code(), Some(0), "stderr: {}", stderr(&ping));
    let paths: Vec<String> = stand_in.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/heartbeats/il1hbt0123456789",
            "/api/pings/monitor-0123456789"
        ]
    );
}

#[tokio::test]
async fn heartbeat_for_an_unknown_key_exits_1_and_503_then_202_exits_0() {
    let stand_in = StandIn::start().await.unwrap();
    let mut behaviour = Behaviour::default();
    behaviour.key_status.insert("il1hbt-unknown".into(), 404);
    stand_in.set_behaviour(behaviour);
    let unknown = ilagent(Some(&stand_in), &["heartbeat", "-k", "il1hbt-unknown"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("ilert rejected the heartbeat ping: 404"),
        "{}",
        stderr(&unknown)
    );

    stand_in.script([Scripted::Status(503)]);
    let retried = ilagent(Some(&stand_in), &["heartbeat", "-k", "il1hbt-known"]).await;
    assert_eq!(
        retried.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&retried)
    );
}

#[tokio::test]
async fn secrets_do_not_appear_in_output_even_at_trace_level() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::Status(503), Scripted::Drop, Scripted::Status(400)]);
    let key = "il1api-SECRET-0123456789abcdef";
    let output = ilagent(Some(&stand_in), &["-vvvv", "event", "-k", key, "-s", "x"]).await;

    assert_eq!(output.status.code(), Some(1));
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        !all.contains("SECRET-0123456789abcdef"),
        "the key leaked: {all}"
    );
}

/// Each invalid command line exits 2, before anything is sent, with a message that
/// names the flag.
#[tokio::test]
async fn invalid_flags_exit_2_naming_the_flag_and_the_fix() {
    let stand_in = StandIn::start().await.unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["event", "-s", "x"], "-k/--integration_key"),
        (&["event", "-k", "k"], "-s/--summary is required for ALERT"),
        (
            &["event", "-k", "k", "-t", "CLOSE", "-s", "x"],
            "--event_type",
        ),
        (
            &["event", "-k", "k", "-s", "x", "-o", "URGENT"],
            "--priority",
        ),
        (
            &["event", "-k", "k", "-s", "x", "--timeout", "soon"],
            "--timeout",
        ),
        (
            &["event", "-k", "k", "-s", "x", "--timeout", "0"],
            "--timeout",
        ),
        (
            &["event", "-k", "k", "-s", "x", "--ilert_url", "not a url"],
            "--ilert_url",
        ),
        (
            &["event", "-k", "k", "-s", "x", "--ilert_url", "ftp://host"],
            "--ilert_url",
        ),
        (
            &[
                "event",
                "-k",
                "k",
                "-s",
                "x",
                "--backoff_initial",
                "2m",
                "--backoff_max",
                "1m",
            ],
            "--backoff_initial",
        ),
        (
            &["event", "-k", "k", "-s", "x", "--rate_limit_window", "0s"],
            "--rate_limit_window",
        ),
        (&["heartbeat"], "-k/--integration_key"),
        (&["daemon"], "nothing to run"),
        (
            &["daemon", "-m", "127.0.0.1"],
            "at least one topic (-e, -r, or --policy_topic)",
        ),
        (
            &["daemon", "--kafka_brokers", "localhost:9092"],
            "at least one topic",
        ),
        (&["daemon", "-e", "events"], "no broker is configured"),
        (
            &["daemon", "--kafka_brokers", "k:9092", "-e", "t", "-r", "t"],
            "more than one of -e, -r and --policy_topic",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_property",
                "enable.auto.offset.store=true",
            ],
            "would break at-least-once",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_property",
                "nonsense",
            ],
            "--kafka_property",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_username",
                "u",
            ],
            "ILAGENT_KAFKA_PASSWORD",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_ssl_cert",
                "/nonexistent.pem",
                "--kafka_ssl_key",
                "/nonexistent.key",
            ],
            "--kafka_ssl_cert: cannot read /nonexistent.pem",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_offsets",
                "t:x:1",
            ],
            "--kafka_offsets",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_drain_timeout",
                "60s",
            ],
            "--kafka_drain_timeout",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_security_protocol",
                "sasl_ssl",
            ],
            "needs --kafka_username",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_sasl_mechanism",
                "SCRAM-SHA-512",
            ],
            "--kafka_sasl_mechanism needs",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-e",
                "t",
                "--kafka_max_in_flight",
                "0",
            ],
            "--kafka_max_in_flight",
        ),
        (
            &["daemon", "--kafka_brokers", "localhost", "-e", "t"],
            "--kafka_brokers",
        ),
        (
            &["daemon", "--kafka_brokers", " , ", "-e", "t"],
            "--kafka_brokers is empty",
        ),
        (
            &[
                "daemon",
                "--kafka_brokers",
                "k:9092",
                "-m",
                "h",
                "-e",
                "a/+",
            ],
            "none of -e/-r/--policy_topic is a Kafka topic name",
        ),
        (
            &["daemon", "--kafka_brokers", "k:9092", "-e", "plant/+/alarm"],
            "`plant/+/alarm` is not a Kafka topic name",
        ),
        (
            &["daemon", "-m", "h", "-q", "99999", "-e", "t"],
            "--mqtt_port",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "--policy_topic",
                "p",
                "--policy_routing_keys",
                "team",
            ],
            "ILERT_API_KEY",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "--policy_topic",
                "p",
                "--ilert_api_key",
                "k",
            ],
            "--policy_routing_keys",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--filter_val", "ALARM"],
            "--filter_val needs --filter_key",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--map_key_etype", "a..b"],
            "--map_key_etype",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--map_val_etype_alert",
                "X",
                "--map_val_etype_resolve",
                "X",
            ],
            "--map_val_etype_alert and --map_val_etype_resolve",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--ilert_event_path",
                "events",
            ],
            "--ilert_event_path",
        ),
        (
            &["daemon", "-b", "k", "--heartbeat_interval", "10ms"],
            "--heartbeat_interval",
        ),
        (&["daemon", "-p", "0"], "-p/--port 0"),
        (
            &["daemon", "--shift_offset", "x", "-b", "k"],
            "--shift_offset",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_qos", "0"],
            "--mqtt_qos 0 needs --mqtt_buffer",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_qos", "3"],
            "--mqtt_qos",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_max_unacked", "0"],
            "--mqtt_max_unacked must be at least 1",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_spill_after", "1ms"],
            "--mqtt_spill_after must be at least 10ms",
        ),
        (&["daemon", "-m", " ", "-e", "t"], "-m/--mqtt_host is empty"),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_username", "u"],
            "--mqtt_username needs a password: set ILAGENT_MQTT_PASSWORD",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_password", "p"],
            "--mqtt_password needs --mqtt_username",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--mqtt_client_cert",
                "/nonexistent.pem",
            ],
            "--mqtt_client_cert needs --mqtt_client_key",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--mqtt_tls",
                "--mqtt_ca",
                "/nonexistent.pem",
            ],
            "--mqtt_ca: cannot read /nonexistent.pem",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--mqtt_ca",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            ],
            "Cargo.toml is not a valid PEM file",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_shared_group", "a/b"],
            "--mqtt_shared_group `a/b` is not a group name",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_version", "6"],
            "--mqtt_version",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--mqtt_max_packet_size",
                "10",
            ],
            "--mqtt_max_packet_size 10 is out of range",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--mqtt_max_packet_size",
                "lots",
            ],
            "--mqtt_max_packet_size",
        ),
        (
            &["daemon", "-m", "h", "-e", "t", "--mqtt_max_in_flight", "0"],
            "--mqtt_max_in_flight must be at least 1",
        ),
        (
            &[
                "daemon",
                "-m",
                "h",
                "-e",
                "t",
                "--mqtt_tls_reload_interval",
                "0s",
            ],
            "--mqtt_tls_reload_interval must be at least 100ms",
        ),
    ];
    for (args, expected) in cases {
        let output = ilagent(Some(&stand_in), args).await;
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} exited {:?}: {err}",
            output.status.code()
        );
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?}: {err}"
        );
    }
    assert!(
        stand_in.requests().is_empty(),
        "nothing may be sent on invalid input"
    );
}

#[tokio::test]
async fn daemon_pings_its_own_heartbeat_and_stops_cleanly_on_sigterm() {
    let stand_in = StandIn::start().await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"))
        .args([
            "daemon",
            "-b",
            "il1hbt-agent-0001",
            "--heartbeat_interval",
            "1s",
        ])
        .env("ILERT_API_URL", stand_in.url())
        .spawn()
        .unwrap();
    let pings = stand_in.wait_for_requests(2, Duration::from_secs(20)).await;
    assert!(pings.len() >= 2, "expected two pings, got {}", pings.len());
    assert!(
        pings
            .iter()
            .all(|p| p.path == "/api/heartbeats/il1hbt-agent-0001")
    );

    let pid = child.id().unwrap() as i32;
    // SAFETY-free: kill(1) via the shell keeps the test free of a libc dependency.
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_kubernetes_service_link_in_our_port_variables_does_not_stop_the_agent() {
    // A Service named `ilagent` gives every pod of the namespace this variable.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"));
    command
        .args(["daemon", "-vvv", "--policy_topic", "x"])
        .env("ILAGENT_PORT", "tcp://10.96.0.12:8977")
        .env("ILAGENT_MQTT_PORT", "tcp://10.96.0.13:1883")
        .env("ILAGENT_METRICS_PORT", "tcp://10.96.0.14:9977")
        .env_remove("RUST_LOG");
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap()
        .unwrap();
    let text = stderr(&output);
    // The topic needs a broker: the agent gets as far as validating the sources, so no
    // port variable was read as a port.
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(!text.contains("invalid value"), "{text}");
    assert!(text.contains("broker"), "{text}");
}

#[tokio::test]
async fn the_version_continues_the_ilagent_line_above_0_9() {
    let output = ilagent(None, &["--version"]).await;
    let version = stdout(&output);
    assert!(version.starts_with("ilagent 1."), "{version}");
}

#[tokio::test]
async fn a_password_inside_an_invalid_ilert_url_is_not_printed() {
    for url in [
        "https://user:hunter2-secret@ho st",
        "ftp://user:hunter2-secret@host",
        "https://user:hunter2-secret@",
    ] {
        let output = ilagent(None, &["event", "-k", "k", "-s", "x", "--ilert_url", url]).await;
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.contains("--ilert_url"), "{text}");
        assert!(
            !text.contains("hunter2"),
            "the password was printed: {text}"
        );
        assert!(text.contains("user:****@"), "{text}");
    }
}

#[tokio::test]
async fn a_queue_listing_cut_at_its_limit_says_so_on_stderr_and_status_counts_the_accepted_ids() {
    use ilagent::message::SourceKind;
    use ilagent::queue::{NewDeadLetter, Store, StoredMeta};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db3");
    let mut store = Store::open(&db).unwrap();
    for n in 0..3 {
        store
            .add_dead_letter(&NewDeadLetter {
                queue_id: None,
                source: SourceKind::Mqtt,
                topic: "plant/alarms".into(),
                payload: format!("frame {n}").into_bytes(),
                meta: StoredMeta::default(),
                order_key: None,
                kind: "invalid".into(),
                reason: "not JSON".into(),
                attempts: 0,
                created_at_ms: 1,
            })
            .unwrap();
    }
    drop(store);
    let db = db.display().to_string();

    let cut = ilagent(None, &["-f", &db, "queue", "dead_letters", "--limit", "2"]).await;
    assert!(cut.status.success());
    assert_eq!(String::from_utf8_lossy(&cut.stdout).lines().count(), 2);
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(stderr.contains("2 of 3 dead letters shown"), "{stderr}");

    let all = ilagent(None, &["-f", &db, "queue", "dead_letters"]).await;
    assert_eq!(String::from_utf8_lossy(&all.stdout).lines().count(), 3);
    assert!(all.stderr.is_empty(), "nothing cut, nothing said");

    let status = ilagent(None, &["-f", &db, "queue", "status"]).await;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.lines().any(|l| l == "dead_letters 3"), "{status}");
    assert!(status.lines().any(|l| l == "accepted_ids 0"), "{status}");
}
