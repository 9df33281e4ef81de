//! Switching from ilagent 0.9 in place: the agent started on the SQLite file that 0.9 left
//! behind (its own schema, rows still pending after an ilert outage) delivers every one of
//! those rows once, in order, and says so; 0.9's tables are empty afterwards.

mod common;
mod mqtt_support;

use std::time::Duration;

use common::{eventually, unique};
use ilert_standin::StandIn;
use mqtt_support::*;
use testkit::{Mosquitto, MosquittoConfig};

/// 0.9's schema, as its migrations leave it, with `events` rows pending in `event_items`
/// (the first for an MQTT alert source, the rest for the generic API) and `messages` raw
/// MQTT messages pending in `mqtt_queue`.
fn file_left_by_0_9(path: &std::path::Path, events: usize, messages: usize, topic: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE ilagent (key TEXT PRIMARY KEY, val TEXT NOT NULL, created_at TEXT NOT NULL);
         INSERT INTO ilagent VALUES ('mig_v4', '1', '2026-11-01 10:00:00');
         CREATE TABLE event_items (id TEXT PRIMARY KEY, integration_key TEXT NOT NULL,
           event_type TEXT NOT NULL, alert_key TEXT NULL, summary TEXT NOT NULL,
           created_at TEXT NOT NULL, priority TEXT NULL, images TEXT NULL, links TEXT NULL,
           custom_details TEXT NULL, details TEXT NULL,
           inserted_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')),
           event_api_path TEXT NULL);
         CREATE TABLE mqtt_queue (id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload TEXT NOT NULL,
           inserted_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));",
    )
    .unwrap();
    for seq in 0..events {
        let path = (seq == 0).then_some("/v1/events/mqtt/{key}");
        c.execute(
            "INSERT INTO event_items (id, integration_key, event_type, alert_key, summary,
               created_at, custom_details, inserted_at, event_api_path)
             VALUES (?1, 'il1api-legacy', ?2, 'pump-3', ?3, '', ?4, ?5, ?6)",
            rusqlite::params![
                format!("uuid-{seq}"),
                if seq + 1 == events {
                    "RESOLVE"
                } else {
                    "ALERT"
                },
                format!("queued by 0.9, number {seq}"),
                format!("{{\"seq\": {seq}}}"),
                format!("2026-11-30 10:00:{:02}.000", seq),
                path,
            ],
        )
        .unwrap();
    }
    for seq in 0..messages {
        c.execute(
            "INSERT INTO mqtt_queue (id, topic, payload, inserted_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                format!("m-{seq}"),
                topic,
                format!(
                    "{{\"integrationKey\": \"il1api-buffered\", \"summary\": \"buffered {seq}\", \
                     \"alertKey\": \"line-1\", \"customDetails\": {{\"seq\": {seq}}}}}"
                ),
                format!("2026-11-30 11:00:{:02}.000", seq),
            ],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn rows_that_ilagent_0_9_left_pending_are_delivered_once_in_order_after_the_switch() {
    const EVENTS: usize = 5;
    const MESSAGES: usize = 4;
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ilagent.db3");
    let topic = format!("{}/events", unique("legacy"));
    file_left_by_0_9(&db, EVENTS, MESSAGES, &topic);

    // The user's 0.9 command, unchanged: MQTT with the buffer, no proxy.
    let mut args = agent_args(broker.port(), &unique("legacy"), &db);
    args.extend(["-e".into(), topic.clone(), "--mqtt_buffer".into()]);
    let agent = start_agent(&stand_in, &args, &[]);

    assert!(
        eventually(WAIT, || stand_in.events().len() >= EVENTS + MESSAGES).await,
        "{} of {} rows arrived; log:\n{}",
        stand_in.events().len(),
        EVENTS + MESSAGES,
        agent.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = stand_in.requests();
    let seqs = |key: &str| -> Vec<u64> {
        requests
            .iter()
            .filter(|r| r.key.as_deref() == Some(key) && (200..300).contains(&r.status))
            .filter_map(|r| r.json.as_ref()?["customDetails"]["seq"].as_u64())
            .collect()
    };
    assert_eq!(
        seqs("il1api-legacy"),
        (0..EVENTS as u64).collect::<Vec<_>>(),
        "0.9's events once, in order"
    );
    assert_eq!(
        seqs("il1api-buffered"),
        (0..MESSAGES as u64).collect::<Vec<_>>(),
        "0.9's buffered messages once, in order"
    );
    let legacy_paths: Vec<&str> = requests
        .iter()
        .filter(|r| r.key.as_deref() == Some("il1api-legacy"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        legacy_paths[0], "/api/v1/events/mqtt/il1api-legacy",
        "the path 0.9 would have used"
    );
    assert!(
        legacy_paths[1..].iter().all(|p| *p == "/api/events"),
        "{legacy_paths:?}"
    );
    let last = requests
        .iter()
        .rfind(|r| r.key.as_deref() == Some("il1api-legacy"))
        .and_then(|r| r.json.clone())
        .unwrap();
    assert_eq!(last["eventType"], "RESOLVE");
    assert_eq!(last["alertKey"], "pump-3");

    let log = agent.full_log();
    assert!(
        log.contains(&format!("events={EVENTS}"))
            && log.contains(&format!("mqtt_messages={MESSAGES}")),
        "the import is logged with its counts; log:\n{log}"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let c = rusqlite::Connection::open(&db).unwrap();
    for table in ["event_items", "mqtt_queue", "queue"] {
        let left: i64 = c
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "{table} is empty");
    }
}
