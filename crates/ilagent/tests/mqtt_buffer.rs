//! The MQTT source with `--mqtt_buffer`: messages acknowledged on the SQLite write survive
//! a SIGKILL, attempt counts survive restarts, ilert's `Retry-After` is waited out,
//! exhausted messages become dead letters and `ilagent queue requeue` brings them back.

mod common;
mod mqtt_support;

use std::time::Duration;

use common::unique;
use ilert_standin::{Behaviour, Scripted, StandIn};
use mqtt_support::*;
use testkit::{Mosquitto, MosquittoConfig};

fn failing() -> Behaviour {
    Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    }
}

#[tokio::test]
async fn buffered_messages_survive_a_sigkill_and_are_delivered_in_order_after_the_restart() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(failing());
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("buffer.db3");
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("first"), &db_file);
    args.extend(["-e".to_string(), topic.clone(), "--mqtt_buffer".to_string()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    const KEYS: usize = 5;
    const PER_KEY: usize = 6;
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| (topic.clone(), keyed_event("il1api-buffered", key, seq)))
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == (KEYS * PER_KEY) as u64).await,
        "{}",
        agent.log()
    );
    agent.kill().await;
    assert!(stand_in.events().is_empty());

    // Another client id: whatever arrives now comes from the SQLite file, not from the
    // broker's session of the first agent.
    stand_in.set_behaviour(Behaviour::default());
    let mut args = agent_args(broker.port(), &unique("second"), &db_file);
    args.extend(["-e".to_string(), topic.clone(), "--mqtt_buffer".to_string()]);
    let agent = start_agent(&stand_in, &args, &[]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while stand_in.events().len() < KEYS * PER_KEY && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all_in_order(&stand_in.events(), KEYS, PER_KEY, &agent.log());
    assert!(wait_for_stat(&db_file, "queued", |n| n == 0).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn attempts_survive_a_restart_exhausted_messages_are_dead_lettered_and_can_be_requeued() {
    const MAX_RETRIES: usize = 5;
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(failing());
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("retries.db3");
    let (topic, client_id) = (unique("events"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db_file);
    args.extend(
        [
            "-e",
            &topic,
            "--mqtt_buffer",
            "--max_retries",
            &MAX_RETRIES.to_string(),
            // Slow retries, so that the kill below lands between two attempts.
            "--backoff_initial",
            "1500ms",
            "--backoff_max",
            "1500ms",
        ]
        .map(str::to_string),
    );
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;
    publish(
        broker.port(),
        &[(topic.clone(), keyed_event("il1api-retries", 1, 0))],
    )
    .await;

    // Two failed attempts, both recorded in the row; then a crash.
    stand_in.wait_for_requests(2, WAIT).await;
    assert!(wait_for_stat(&db_file, "retrying", |n| n == 1).await);
    let (_, listing) = queue_command(&db_file, &["list"]).await;
    let attempts_before: usize = listing.split('\t').nth(4).unwrap().parse().unwrap();
    agent.kill().await;
    let requests_before = stand_in.requests().len();
    assert!(
        attempts_before >= 2 && requests_before <= attempts_before + 1,
        "{listing}"
    );

    // After the restart the count goes on: MAX_RETRIES attempts in all, not MAX_RETRIES
    // more. (An attempt cut off by the kill before its row was updated may add one.)
    let agent = start_agent(&stand_in, &args, &[]);
    assert!(
        wait_for_stat(&db_file, "dead_letters", |n| n == 1).await,
        "{}",
        agent.log()
    );
    let total = stand_in.requests().len();
    assert!(
        (MAX_RETRIES..=MAX_RETRIES + 1).contains(&total),
        "{total} attempts in all; {attempts_before} were recorded before the restart"
    );
    let (_, letters) = queue_command(&db_file, &["dead_letters"]).await;
    let fields: Vec<&str> = letters.trim_end().split('\t').collect();
    assert_eq!(fields[4], "exhausted", "{letters}");
    assert_eq!(fields[5], MAX_RETRIES.to_string(), "{letters}");
    assert!(
        fields[6].starts_with(&format!("gave up after {MAX_RETRIES} attempts: 503")),
        "{letters}"
    );
    assert!(agent.full_log().contains("message rejected"));
    assert_eq!(queue_stat(&db_file, "queued").await, 0);

    // Requeued while the daemon runs, and ilert is back: delivered within the idle poll.
    stand_in.set_behaviour(Behaviour::default());
    let id = fields[0];
    let (code, out) = queue_command(&db_file, &["requeue", id]).await;
    assert_eq!((code, out.as_str()), (Some(0), "requeued 1\n"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while stand_in.events().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stand_in.events().len(), 1, "{}", agent.log());
    assert!(wait_for_stat(&db_file, "queued", |n| n == 0).await);
    assert_eq!(queue_stat(&db_file, "dead_letters").await, 0);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn the_queue_commands_list_requeue_and_purge_dead_letters() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: [("il1api-gone".to_string(), 404)].into(),
        ..Behaviour::default()
    });
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("commands.db3");
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone(), "--mqtt_buffer".to_string()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;
    let gone = keyed_event("il1api-gone", 1, 0);
    publish(
        broker.port(),
        &[(topic.clone(), gone.clone()), (topic.clone(), gone)],
    )
    .await;
    assert!(
        wait_for_stat(&db_file, "dead_letters", |n| n == 2).await,
        "{}",
        agent.log()
    );
    let (code, out) = agent.stop().await;
    assert_eq!(code, Some(0), "{out}");

    let (_, status) = queue_command(&db_file, &["status"]).await;
    assert_eq!(
        status,
        "queued 0\nretrying 0\ndead_letters 2\naccepted_ids 0\n"
    );
    let (_, letters) = queue_command(&db_file, &["dead_letters"]).await;
    let ids: Vec<&str> = letters
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{letters}");
    let (code, out) = queue_command(&db_file, &["purge", ids[0]]).await;
    assert_eq!((code, out.as_str()), (Some(0), "purged 1\n"));
    let (code, out) = queue_command(&db_file, &["requeue", "--all"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "requeued 1\n"));
    let (_, listing) = queue_command(&db_file, &["list"]).await;
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(
        listing.contains(&format!("\tmqtt\t{topic}\t0\t-\t-")),
        "{listing}"
    );
    let (code, _) = queue_command(&db_file, &["requeue"]).await;
    assert_eq!(code, Some(2), "ids or --all are required");
    let (code, _) = queue_command(&db.path().join("missing.db3"), &["status"]).await;
    assert_eq!(code, Some(1));
}

#[tokio::test]
async fn a_retry_after_of_three_seconds_is_honoured_by_the_buffer() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([
        Scripted::RetryAfterSeconds {
            status: 429,
            seconds: 3,
        },
        Scripted::RetryAfterSeconds {
            status: 429,
            seconds: 3,
        },
    ]);
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("retry-after.db3");
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone(), "--mqtt_buffer".to_string()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;
    publish(
        broker.port(),
        &[(topic.clone(), keyed_event("il1api-retry-after", 1, 0))],
    )
    .await;

    let requests = stand_in.wait_for_requests(3, WAIT).await;
    let answers: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(answers, [429, 429, 202], "{}", agent.log());
    for pair in requests.windows(2) {
        let waited = pair[1].received_at_ms - pair[0].received_at_ms;
        assert!(
            waited >= 2_900,
            "retried {waited} ms after a 429 with Retry-After: 3"
        );
    }
    assert_eq!(stand_in.events().len(), 1);
    assert!(wait_for_stat(&db_file, "queued", |n| n == 0).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_burst_of_ten_thousand_messages_is_written_and_acknowledged_without_a_stall() {
    // A burst as fast as one connection publishes, while ilert does not answer (so that no retry competes with the writes): the agent must keep reading, writing and acknowledging until the whole burst
    // is in its file. (A bounded hand-over between the connection and the buffer once
    // deadlocked here: the buffer waited to acknowledge through the connection, which
    // waited for room in the buffer.)
    const MESSAGES: usize = 10_000;
    // Mosquitto keeps 1,000 messages for a subscriber by default and drops the rest of a
    // burst that outruns it (see the README on broker limits); here it keeps them all, so
    // that whatever is missing was lost by the agent.
    let broker = Mosquitto::start(MosquittoConfig {
        extra: format!("max_queued_messages {}\n", MESSAGES * 2),
        ..MosquittoConfig::default()
    })
    .unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 300_000,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("burst.db3");
    let topic = unique("burst");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone(), "--mqtt_buffer".to_string()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    let messages: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|n| (topic.clone(), keyed_event("il1api-burst", n % 100, n / 100)))
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == MESSAGES as u64).await,
        "{} of {MESSAGES} written; log:\n{}",
        queue_stat(&db_file, "queued").await,
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
