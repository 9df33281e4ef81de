//! What the Kafka source commits, and when, in the cases that used to lose: without a
//! dead-letter topic nothing undelivered is committed silently (transient failures are
//! retried without limit, rejected messages go to the SQLite dead letters first), an
//! aborted shutdown ends on time, and a hot integration key does not hold up a quiet one.
//! (Rebalances: kafka_rebalance.rs.) Against tansu and the ilert
//! stand-in, with the agent as a separate process and the production rate limits.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{
    Agent, Outgoing, committed, create_topic, end_offsets, eventually, kafka_args, produce_all,
    producer, queue_command, queue_stat, unique, wait_for_stat,
};
use ilert_standin::{Behaviour, StandIn};
use serde_json::{Value, json};
use testkit::Tansu;

const WAIT: Duration = Duration::from_secs(60);

fn start_agent(stand_in: &StandIn, args: &[&str]) -> Agent {
    let url = stand_in.url();
    Agent::start(
        args,
        &[
            ("ILERT_API_URL", url.as_str()),
            ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
        ],
    )
}

/// An ALERT whose `customDetails.id` says which message it is.
fn event(integration_key: &str, alert_key: &str, id: usize) -> Vec<u8> {
    json!({"integrationKey": integration_key, "eventType": "ALERT", "summary": format!("message {id}"),
           "alertKey": alert_key, "customDetails": {"id": id}})
    .to_string()
    .into_bytes()
}

fn ids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e["customDetails"]["id"].as_u64())
        .collect()
}

fn arrived(stand_in: &StandIn) -> HashSet<u64> {
    ids(&stand_in.events()).into_iter().collect()
}

fn requests_for(stand_in: &StandIn, integration_key: &str) -> usize {
    stand_in
        .requests()
        .iter()
        .filter(|r| r.key.as_deref() == Some(integration_key))
        .count()
}

/// The agent's SQLite file, in a directory that lives as long as the test.
fn db_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ilagent.db3").display().to_string();
    (dir, path)
}

#[tokio::test]
async fn kafka_without_a_dlq_retries_exhausted_messages_until_ilert_recovers() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("no-dlq-retry"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let keys: Vec<String> = (0..3).map(|i| format!("il1api-retry-{i}")).collect();
    let records: Vec<Outgoing> = keys
        .iter()
        .enumerate()
        .map(|(id, key)| {
            (
                Some(0),
                format!("a-{id}"),
                event(key, &format!("a-{id}"), id),
            )
        })
        .collect();
    let positions = produce_all(&producer(&bootstrap), &topic, &records).await;
    let (_dir, db) = db_file();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-f", &db, "-e", &topic, "--max_retries", "2"]);
    let agent = start_agent(&stand_in, &args);

    // ilert answers 503 to everything: each message is tried far more often than
    // --max_retries, and nothing is committed meanwhile.
    assert!(
        eventually(WAIT, || keys
            .iter()
            .all(|k| requests_for(&stand_in, k) >= 6))
        .await,
        "not retried past --max_retries; log:\n{}",
        agent.log()
    );
    for _ in 0..10 {
        let offsets = committed(&bootstrap, &group, &topic, 1);
        assert!(
            offsets[0] <= 0,
            "committed {offsets:?} while nothing was delivered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(queue_stat(db.as_ref(), "dead_letters").await, 0);

    // ilert recovers: every message arrives and only then is the offset committed.
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        eventually(WAIT, || arrived(&stand_in).len() == 3
            && committed(&bootstrap, &group, &topic, 1)
                == end_offsets(&positions, 1))
        .await,
        "arrived {:?}, committed {:?}; log:\n{}",
        arrived(&stand_in),
        committed(&bootstrap, &group, &topic, 1),
        agent.log()
    );
    assert_eq!(
        queue_stat(db.as_ref(), "dead_letters").await,
        0,
        "retried, never dead-lettered"
    );
    agent.kill().await;
}

#[tokio::test]
async fn kafka_without_a_dlq_dead_letters_invalid_and_rejected_messages_in_sqlite_before_committing()
 {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-bad".to_string(), 400)]),
        ..Behaviour::default()
    });
    let (topic, group) = (unique("no-dlq-letters"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let rejected = event("il1api-bad", "b-0", 100);
    let records: Vec<Outgoing> = vec![
        (Some(0), "g".into(), event("il1api-good", "g", 0)),
        (Some(0), "b".into(), rejected.clone()),
        (Some(0), "g".into(), event("il1api-good", "g", 1)),
        (Some(0), "junk".into(), b"not json at all".to_vec()),
        (Some(0), "g".into(), event("il1api-good", "g", 2)),
    ];
    produce_all(&producer(&bootstrap), &topic, &records).await;
    let (_dir, db) = db_file();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-f", &db, "-e", &topic]);
    let agent = start_agent(&stand_in, &args);

    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [5]).await,
        "offsets not committed past the rejected messages; log:\n{}",
        agent.log()
    );
    // The commit came after the dead-letter writes: they are there at once.
    let (code, out) = queue_command(db.as_ref(), &["dead_letters", "--json"]).await;
    assert_eq!(code, Some(0));
    let letters: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "dead letters:\n{out}");
    for letter in &letters {
        assert_eq!(letter["source"], "kafka", "{letter}");
        assert_eq!(letter["topic"], topic.as_str(), "{letter}");
    }
    let permanent = letters.iter().find(|l| l["kind"] == "permanent").unwrap();
    assert!(
        permanent["reason"].as_str().unwrap().contains("400"),
        "{permanent}"
    );
    assert_eq!(
        permanent["payload"].as_str().unwrap().as_bytes(),
        rejected.as_slice()
    );
    assert_eq!(permanent["attempts"], 1, "a 400 is not retried");
    let invalid = letters.iter().find(|l| l["kind"] == "invalid").unwrap();
    assert!(
        invalid["reason"].as_str().unwrap().contains("JSON"),
        "{invalid}"
    );
    assert_eq!(invalid["payload"], "not json at all");
    assert_eq!(
        ids(&stand_in.events()),
        [0, 1, 2],
        "the valid ones, in order"
    );
    agent.kill().await;
}

#[tokio::test]
async fn kafka_without_a_dlq_keeps_the_offset_uncommitted_while_the_sqlite_file_cannot_be_written()
{
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-bad".to_string(), 400)]),
        ..Behaviour::default()
    });
    let (topic, group) = (unique("locked-file"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    let (_dir, db) = db_file();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-f", &db, "-e", &topic]);
    let agent = start_agent(&stand_in, &args);
    let first: Vec<Outgoing> = vec![(Some(0), "g".into(), event("il1api-good", "g", 0))];
    produce_all(&producer, &topic, &first).await;
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [1]).await,
        "{}",
        agent.log()
    );

    // Another process holds the file's write lock for 20 s (longer than the agent's 10 s
    // busy timeout): the dead-letter write of the rejected message fails and is retried.
    let mut locker = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(20)\n\
             c.execute('COMMIT')",
            &db,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(locker.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let second: Vec<Outgoing> = vec![
        (Some(0), "b".into(), event("il1api-bad", "b", 1)),
        (Some(0), "g".into(), event("il1api-good", "g", 2)),
    ];
    produce_all(&producer, &topic, &second).await;
    assert!(
        eventually(WAIT, || agent
            .full_log()
            .contains("dead-letter write failed"))
        .await,
        "the write did not fail; log:\n{}",
        agent.log()
    );
    assert!(
        arrived(&stand_in).contains(&2),
        "the next message was delivered"
    );
    assert_eq!(
        committed(&bootstrap, &group, &topic, 1),
        [1],
        "committed past a message whose dead letter is not written"
    );

    // The lock goes away: the letter is written, then the offsets are committed.
    locker.wait().await.unwrap();
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [3]).await,
        "{}",
        agent.log()
    );
    assert_eq!(queue_stat(db.as_ref(), "dead_letters").await, 1);
    agent.kill().await;
}

#[tokio::test]
async fn a_requeued_kafka_dead_letter_is_delivered_by_the_running_agent() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-fixed-later".to_string(), 404)]),
        ..Behaviour::default()
    });
    let (topic, group) = (unique("requeue"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let records: Vec<Outgoing> = vec![
        (Some(0), "a".into(), event("il1api-fixed-later", "a", 0)),
        (Some(0), "b".into(), event("il1api-good", "b", 1)),
    ];
    produce_all(&producer(&bootstrap), &topic, &records).await;
    let (_dir, db) = db_file();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-f", &db, "-e", &topic]);
    let agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [2]).await,
        "{}",
        agent.log()
    );
    assert_eq!(queue_stat(db.as_ref(), "dead_letters").await, 1);
    assert_eq!(ids(&stand_in.events()), [1]);

    // The integration key is fixed in ilert; the operator puts the letter back.
    stand_in.set_behaviour(Behaviour::default());
    let (code, out) = queue_command(db.as_ref(), &["requeue", "--all"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "requeued 1\n"));
    assert!(
        eventually(WAIT, || arrived(&stand_in).contains(&0)).await,
        "the requeued letter was not delivered; log:\n{}",
        agent.log()
    );
    assert!(
        wait_for_stat(db.as_ref(), "queued", |n| n == 0).await,
        "the row stays in the file"
    );
    assert_eq!(queue_stat(db.as_ref(), "dead_letters").await, 0);
    agent.kill().await;
}

#[tokio::test]
async fn a_hot_integration_key_on_kafka_does_not_hold_up_a_quiet_one() {
    const HOT: usize = 600;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("hot"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    // More distinct alert keys of the hot integration key than --kafka_max_in_flight (128),
    // far more than its budget of 50 a minute lets through; the quiet key's come last.
    let mut records: Vec<Outgoing> = (0..HOT)
        .map(|id| {
            let alert_key = format!("hot-{id}");
            (
                Some(0),
                alert_key.clone(),
                event("il1api-hot", &alert_key, id),
            )
        })
        .collect();
    records.extend((0..5).map(|i| {
        let alert_key = format!("quiet-{i}");
        (
            Some(0),
            alert_key.clone(),
            event("il1api-quiet", &alert_key, HOT + i),
        )
    }));
    produce_all(&producer(&bootstrap), &topic, &records).await;
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic]);
    let agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || !stand_in.events().is_empty()).await,
        "nothing delivered; log:\n{}",
        agent.log()
    );

    let quiet: HashSet<u64> = (HOT..HOT + 5).map(|id| id as u64).collect();
    assert!(
        eventually(Duration::from_secs(20), || arrived(&stand_in)
            .is_superset(&quiet))
        .await,
        "the quiet key waited behind the hot one: {} events arrived; log:\n{}",
        stand_in.events().len(),
        agent.log()
    );
    let hot_arrived = arrived(&stand_in).len() - quiet.len();
    assert!(
        hot_arrived < HOT,
        "the hot key had drained already ({hot_arrived}), the check proves nothing"
    );
    assert!(
        requests_for(&stand_in, "il1api-hot") <= 60,
        "the hot key went over its budget"
    );
    agent.kill().await;
}

#[tokio::test]
async fn an_aborted_shutdown_ends_within_the_shutdown_timeout_and_commits_nothing_undelivered() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("abort"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    let first: Vec<Outgoing> = vec![(Some(0), "a".into(), event("il1api-ok", "a", 0))];
    produce_all(&producer, &topic, &first).await;
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--shutdown_timeout", "3s"]);
    let mut agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [1]).await,
        "{}",
        agent.log()
    );

    // One integration key fails for good (503); a later message of another key is
    // delivered, but the commit point must stay at the stuck one.
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-stuck".to_string(), 503)]),
        ..Behaviour::default()
    });
    let second: Vec<Outgoing> = vec![
        (Some(0), "s".into(), event("il1api-stuck", "s", 1)),
        (Some(0), "b".into(), event("il1api-ok", "b", 2)),
    ];
    produce_all(&producer, &topic, &second).await;
    assert!(
        eventually(WAIT, || requests_for(&stand_in, "il1api-stuck") >= 2
            && arrived(&stand_in).contains(&2))
        .await,
        "{}",
        agent.log()
    );

    let signalled = Instant::now();
    agent.signal("TERM");
    let status = tokio::time::timeout(WAIT, agent.child.wait()).await;
    let took = signalled.elapsed();
    let log = agent.full_log();
    let status = status
        .unwrap_or_else(|_| panic!("still running a minute after SIGTERM; log:\n{log}"))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    // The documented bound: --shutdown_timeout, plus a little to commit and leave.
    assert!(
        took <= Duration::from_secs(3 + 3),
        "took {took:?} to stop; log:\n{log}"
    );
    // The stuck message was waiting for its next attempt: shutdown interrupted the wait
    // at once and left it uncommitted.
    assert!(log.contains("delivery interrupted by shutdown"), "{log}");
    println!("stopped {took:?} after SIGTERM with --shutdown_timeout 3s");
    assert_eq!(
        committed(&bootstrap, &group, &topic, 1),
        [1],
        "committed past the undelivered message; log:\n{log}"
    );
}

#[tokio::test]
async fn an_aborted_shutdown_with_a_request_on_the_wire_ends_within_the_shutdown_timeout() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    // An "ilert" that takes the connection and never answers: the request stays on the
    // wire, which is what --shutdown_timeout waits for.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let (topic, group) = (unique("abort-wire"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let records: Vec<Outgoing> = vec![(Some(0), "a".into(), event("il1api-ok", "a", 0))];
    produce_all(&producer(&bootstrap), &topic, &records).await;
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--shutdown_timeout",
        "3s",
        "--request_timeout",
        "60s",
    ]);
    let mut agent = Agent::start(
        &args,
        &[
            ("ILERT_API_URL", url.as_str()),
            ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
        ],
    );
    assert!(
        eventually(WAIT, || accepted.load(std::sync::atomic::Ordering::SeqCst)
            >= 1)
        .await,
        "{}",
        agent.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    agent.signal("TERM");
    let status = tokio::time::timeout(WAIT, agent.child.wait()).await;
    let took = signalled.elapsed();
    let log = agent.full_log();
    let status = status
        .unwrap_or_else(|_| panic!("still running a minute after SIGTERM; log:\n{log}"))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    // The documented bound: --shutdown_timeout, plus a little to commit and leave.
    assert!(
        took <= Duration::from_secs(3 + 3),
        "took {took:?} to stop; log:\n{log}"
    );
    assert!(log.contains("--shutdown_timeout passed"), "{log}");
    assert_ne!(
        committed(&bootstrap, &group, &topic, 1),
        [1],
        "the undelivered message was committed; log:\n{log}"
    );
}

#[tokio::test]
async fn a_tombstone_goes_to_the_dead_letter_topic_as_a_tombstone_with_its_key() {
    use rdkafka::producer::FutureRecord;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, dlq, group) = (unique("tombstones"), unique("dlq"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    let producer = producer(&bootstrap);
    // A record with a key and no value at all (compaction's delete marker).
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&topic).key("machine-7"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--kafka_dlq_topic", &dlq]);
    let agent = start_agent(&stand_in, &args);

    let records = common::read_topic(&bootstrap, &dlq, 1, WAIT);
    assert_eq!(records.len(), 1, "log:\n{}", agent.log());
    let letter = &records[0];
    assert!(
        letter.tombstone,
        "the value stays absent, not empty: {letter:?}"
    );
    assert_eq!(letter.key.as_deref(), Some(&b"machine-7"[..]));
    assert_eq!(letter.header("ilagent.reject.kind"), Some("invalid"));
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [1]).await,
        "committed once dead-lettered"
    );
    agent.kill().await;
}
