//! Values from a message cannot forge the agent's log: a wrong field value that carries
//! line breaks, ANSI escapes or NUL bytes is quoted escaped in the rejection's log line
//! and in its dead-letter reason, with the agent as a process behind the machine's
//! Mosquitto.

mod common;
mod mqtt_support;

use common::{queue_command, unique, wait_for_stat};
use ilert_standin::StandIn;
use mqtt_support::*;
use serde_json::json;

const SYSTEM_BROKER: u16 = 1883;

#[tokio::test]
async fn a_value_with_line_breaks_escapes_and_nul_is_logged_and_dead_lettered_escaped() {
    let stand_in = StandIn::start().await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let topic = unique("it-hostile");
    let mut args = agent_args(SYSTEM_BROKER, &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    let forged = "X\nINJECTED-LINE ERROR forged\r\u{1b}[31mred\u{0}end";
    let hostile = json!({"integrationKey": "il1hostile", "eventType": forged, "summary": "s"});
    let valid = json!({"integrationKey": "il1hostile", "eventType": "ALERT", "summary": "next"});
    publish(
        SYSTEM_BROKER,
        &[
            (topic.clone(), hostile.to_string().into_bytes()),
            (topic.clone(), valid.to_string().into_bytes()),
        ],
    )
    .await;
    assert_eq!(stand_in.wait_for_requests(1, WAIT).await.len(), 1);
    assert!(wait_for_stat(&db_file, "dead_letters", |n| n == 1).await);

    let log = agent.full_log();
    assert!(log.contains("message rejected"), "{log}");
    assert!(
        !log.lines().any(|line| line.starts_with("INJECTED-LINE")),
        "no log line begins with the forged text:\n{log}"
    );
    assert!(
        !log.contains('\u{0}') && !log.contains('\u{1b}') && !log.contains('\r'),
        "no NUL, escape or carriage return reaches the log"
    );
    assert!(
        log.contains(r"X\nINJECTED-LINE ERROR forged\r\u{1b}[31mred\0end"),
        "the value is shown escaped, as sent:\n{log}"
    );
    let (code, listing) = queue_command(&db_file, &["dead_letters", "--json"]).await;
    assert_eq!(code, Some(0), "{listing}");
    let row: serde_json::Value =
        serde_json::from_str(listing.lines().next().unwrap_or_default()).unwrap();
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(r"X\nINJECTED-LINE") && !reason.contains('\n'),
        "the dead letter's reason is escaped too: {reason:?}"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
