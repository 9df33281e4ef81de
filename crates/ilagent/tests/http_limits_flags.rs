//! The flags of the proxy's limits as a user meets them: `--metrics_port` listens on the
//! `--http_bind` address, invalid limits stop the agent before it starts (exit 2, the flag
//! and the fix named), and the defaults are in `--help` and the README. What the limits do
//! is `http_limits.rs`.

mod common;
mod http_support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_support::*;
use ilert_standin::StandIn;
use testkit::free_port;
use tokio::net::TcpStream;

/// A non-loopback IPv4 address of this machine (`hostname -I`), if it has one.
fn other_local_address() -> Option<IpAddr> {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

async fn connects(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn metrics_port_listens_on_the_http_bind_address_only() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No proxy: --http_bind applies to --metrics_port on its own (a Kafka- or MQTT-only
    // agent), and here the agent only pings its heartbeat.
    let loopback_port = free_port();
    let loopback = start_agent(
        &stand_in.url(),
        &dir.path().join("loopback.db3"),
        &[
            "-b",
            "il1hbt-agent",
            "--metrics_port",
            &loopback_port.to_string(),
            "--http_bind",
            "127.0.0.1",
        ],
    );
    wait_up(&loopback, loopback_port).await;
    let log = loopback.full_log();
    assert!(
        log.contains(&format!("metrics=Some(127.0.0.1:{loopback_port})")),
        "the start line names the address: {log}"
    );
    // The default (0.0.0.0), for contrast: reachable on every address of the machine.
    let everywhere_port = free_port();
    let everywhere = start_agent(
        &stand_in.url(),
        &dir.path().join("everywhere.db3"),
        &[
            "-b",
            "il1hbt-agent",
            "--metrics_port",
            &everywhere_port.to_string(),
        ],
    );
    wait_up(&everywhere, everywhere_port).await;
    assert!(
        everywhere
            .full_log()
            .contains(&format!("metrics=Some(0.0.0.0:{everywhere_port})")),
        "{}",
        everywhere.log()
    );
    match other_local_address() {
        Some(other) => {
            assert!(
                connects(SocketAddr::new(other, everywhere_port)).await,
                "the default listens on {other} too"
            );
            assert!(
                !connects(SocketAddr::new(other, loopback_port)).await,
                "--http_bind 127.0.0.1 keeps --metrics_port off {other}"
            );
        }
        None => eprintln!("no non-loopback address on this machine: the start lines must do"),
    }
    for agent in [loopback, everywhere] {
        let (code, log) = agent.stop().await;
        assert_eq!(code, Some(0), "{log}");
    }
}

#[tokio::test]
async fn invalid_limits_stop_the_agent_at_start_with_exit_2_naming_the_flag_and_the_fix() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-p", "8977", "--http_max_connections", "0"],
            "--http_max_connections must be at least 1",
        ),
        (
            &[
                "--metrics_port",
                "9977",
                "-b",
                "il1hbt-x",
                "--http_max_connections",
                "0",
            ],
            "--http_max_connections must be at least 1",
        ),
        (
            &["-p", "8977", "--http_max_connections", "many"],
            "--http_max_connections",
        ),
        (
            &["-p", "8977", "--http_max_in_flight", "0"],
            "--http_max_in_flight must be at least 1",
        ),
        (
            &["-p", "8977", "--http_header_timeout", "0"],
            "--http_header_timeout must be longer than 0",
        ),
        (
            &["-p", "8977", "--http_header_timeout", "soon"],
            "--http_header_timeout",
        ),
        (
            &["-p", "8977", "--http_body_timeout", "0s"],
            "--http_body_timeout must be longer than 0",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in cases {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"))
            .arg("-f")
            .arg(dir.path().join("never.db3"))
            .arg("daemon")
            .args(*args)
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in: {err}"
        );
        // Our own checks say what to do instead; clap's name the flag and the value.
        if expected.contains(" must ") {
            assert!(err.contains("e.g. "), "{args:?}: no fix in: {err}");
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn the_limits_and_their_defaults_are_in_the_help_and_the_readme() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilagent"))
        .args(["daemon", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for (flag, default) in [
        ("--http_max_connections", "1024"),
        ("--http_max_in_flight", "256"),
        ("--http_header_timeout", "10s"),
        ("--http_body_timeout", "30s"),
    ] {
        let entry = help
            .split(&format!("{flag} <"))
            .nth(1)
            .unwrap_or_else(|| panic!("{flag} is not in --help:\n{help}"));
        let shown = entry
            .split("[default: ")
            .nth(1)
            .and_then(|d| d.split(']').next());
        assert_eq!(shown, Some(default), "{flag} in --help:\n{help}");
        let env = format!(
            "ILAGENT_{}",
            flag.trim_start_matches("--").to_ascii_uppercase()
        );
        let row = format!("| `{flag}` | `{env}` | `{default}` |");
        assert!(readme.contains(&row), "README has no row `{row}`");
    }
}
