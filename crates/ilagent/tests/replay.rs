//! `ilagent replay`: dead letters go back to their source topic once the cause is fixed,
//! each once, with the original key and value and a `retry-count`; the dead-letter topic is
//! committed behind them; a dry run and the filters touch nothing. Against tansu, the ilert
//! stand-in and the agent as a separate process, with the production rate limits.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{
    Agent, Outgoing, committed, create_topic, end_offsets, eventually, kafka_args, produce_all,
    producer, read_topic, run_ilagent_with_input, start_against, unique,
};
use ilert_standin::{Behaviour, StandIn};
use serde_json::{Value, json};
use testkit::Tansu;

const WAIT: Duration = Duration::from_secs(60);
// Twice this (the refused attempts, then the replayed ones) stays inside one integration
// key's rate-limit budget of 50 a minute.
const LETTERS: usize = 20;

fn event(integration_key: &str, id: usize) -> Vec<u8> {
    json!({"integrationKey": integration_key, "eventType": "ALERT",
           "summary": format!("message {id}"), "alertKey": format!("k-{}", id % 5),
           "customDetails": {"id": id}})
    .to_string()
    .into_bytes()
}

fn delivered_ids(stand_in: &StandIn) -> Vec<u64> {
    stand_in
        .events()
        .iter()
        .filter_map(|e| e["customDetails"]["id"].as_u64())
        .collect()
}

struct Setup {
    _tansu: Tansu,
    bootstrap: String,
    topic: String,
    dlq: String,
    stand_in: StandIn,
    agent: Agent,
}

/// An agent whose every event ilert refuses for good (the integration key is unknown):
/// all `LETTERS` end on the dead-letter topic.
async fn dead_lettered() -> Setup {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-not-yet".to_string(), 404)]),
        ..Behaviour::default()
    });
    let (topic, dlq, group) = (unique("alarms"), unique("dlq"), unique("group"));
    create_topic(&bootstrap, &topic, 2).await;
    create_topic(&bootstrap, &dlq, 2).await;
    let records: Vec<Outgoing> = (0..LETTERS)
        .map(|id| (None, format!("k-{}", id % 5), event("il1api-not-yet", id)))
        .collect();
    let positions = produce_all(&producer(&bootstrap), &topic, &records).await;
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--kafka_dlq_topic", &dlq]);
    let agent = start_against(&stand_in, &args, &[]);
    // Committed to the end: every dead letter is written (the offset follows the write).
    let ends = end_offsets(&positions, 2);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 2) == ends).await,
        "log:\n{}",
        agent.log()
    );
    let letters = read_topic(&bootstrap, &dlq, LETTERS + 1, Duration::from_secs(5));
    let ids: Vec<u64> = letters
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.payload).unwrap()["customDetails"]["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        letters.len(),
        LETTERS,
        "one dead letter each: {ids:?}; log:\n{}",
        agent.log()
    );
    Setup {
        _tansu: tansu,
        bootstrap,
        topic,
        dlq,
        stand_in,
        agent,
    }
}

fn replay_args<'a>(setup: &'a Setup, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "replay",
        "--kafka_brokers",
        setup.bootstrap.as_str(),
        "--kafka_dlq_topic",
        setup.dlq.as_str(),
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_every_dead_letter_once_after_the_cause_is_fixed_and_commits_the_dlq() {
    let setup = dead_lettered().await;
    let before = setup.stand_in.events().len();
    assert_eq!(before, 0, "ilert accepted nothing yet");

    // The integration key now exists in ilert.
    setup.stand_in.set_behaviour(Behaviour::default());
    let (code, stdout, stderr) = run_ilagent_with_input(&replay_args(&setup, &[]), &[], "").await;

    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("replayed {LETTERS} dead letters")),
        "{stderr}"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), LETTERS);
    assert!(
        lines
            .iter()
            .all(|l| l["topicName"] == setup.topic.as_str() && l["retryCount"] == 1)
    );
    assert!(
        eventually(WAIT, || delivered_ids(&setup.stand_in).len() >= LETTERS).await,
        "delivered {:?}; log:\n{}",
        delivered_ids(&setup.stand_in),
        setup.agent.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = delivered_ids(&setup.stand_in);
    let unique_ids: HashSet<u64> = delivered.iter().copied().collect();
    assert_eq!(
        unique_ids.len(),
        LETTERS,
        "every dead letter arrives: {delivered:?}"
    );
    assert_eq!(delivered.len(), LETTERS, "and arrives once: {delivered:?}");

    // The source topic got the originals back, with a retry count and without ilagent's
    // dead-letter headers.
    let all = read_topic(&setup.bootstrap, &setup.topic, LETTERS * 2, WAIT);
    let replayed: Vec<_> = all
        .iter()
        .filter(|r| r.header("retry-count").is_some())
        .collect();
    assert_eq!(replayed.len(), LETTERS);
    for record in &replayed {
        assert_eq!(record.header("retry-count"), Some("1"));
        assert!(
            record
                .headers
                .iter()
                .all(
                    |(k, _)| (!k.starts_with("ilagent.") || k == "ilagent.replay.run")
                        && k != "error-message"
                        && k != "failed-at"
                )
        );
        assert!(record.header("ilagent.replay.run").is_some());
        let id = serde_json::from_slice::<Value>(&record.payload).unwrap()["customDetails"]["id"]
            .as_u64()
            .unwrap();
        assert_eq!(
            record.key.as_deref(),
            Some(format!("k-{}", id % 5).as_bytes())
        );
    }

    // The dead-letter topic is committed to its end: a second run replays nothing.
    let ends = committed(&setup.bootstrap, "ilagent-replay", &setup.dlq, 2);
    assert_eq!(ends.iter().sum::<i64>(), LETTERS as i64, "{ends:?}");
    let (code, stdout, stderr) = run_ilagent_with_input(&replay_args(&setup, &[]), &[], "").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.is_empty() && stderr.contains("replayed 0 dead letters"),
        "{stderr}"
    );
    setup.agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_filter_that_matches_nothing_replay_and_commit_nothing() {
    let setup = dead_lettered().await;

    let (code, stdout, stderr) =
        run_ilagent_with_input(&replay_args(&setup, &["--dry_run"]), &[], "").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), LETTERS, "{stderr}");
    assert!(
        stderr.contains(&format!("would replay {LETTERS}")),
        "{stderr}"
    );
    assert!(
        stdout.lines().all(|l| l.contains("404")),
        "each line shows its reason: {stdout}"
    );

    let (code, stdout, stderr) = run_ilagent_with_input(
        &replay_args(&setup, &["--dry_run", "--reason", "no such reason"]),
        &[],
        "",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{LETTERS} passed over by the filters")),
        "{stderr}"
    );

    let (code, stdout, _) = run_ilagent_with_input(
        &replay_args(&setup, &["--dry_run", "--since", "1h", "--reason", "404"]),
        &[],
        "",
    )
    .await;
    assert_eq!((code, stdout.lines().count()), (Some(0), LETTERS));
    let (_, stdout, _) = run_ilagent_with_input(
        &replay_args(&setup, &["--dry_run", "--until", "1h"]),
        &[],
        "",
    )
    .await;
    assert!(
        stdout.is_empty(),
        "nothing was set aside over an hour ago: {stdout}"
    );

    assert_eq!(
        committed(&setup.bootstrap, "ilagent-replay", &setup.dlq, 2),
        [-1001, -1001],
        "a dry run commits nothing"
    );
    assert_eq!(
        read_topic(
            &setup.bootstrap,
            &setup.topic,
            LETTERS + 1,
            Duration::from_secs(10)
        )
        .len(),
        LETTERS,
        "a dry run publishes nothing"
    );
    setup.agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_before_the_cause_is_fixed_ends_at_its_own_dead_letters_and_counts_the_retries() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, dlq, group) = (unique("broken"), unique("dlq"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    // Not JSON: invalid, set aside at once, every time. One with a header of its own, and
    // a tombstone.
    let producer = producer(&bootstrap);
    common::produce_with_headers(
        &producer,
        &topic,
        Some(0),
        Some("k1"),
        b"not json",
        &[("trace", "t-1")],
    )
    .await;
    producer
        .send(
            rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic)
                .key("k2")
                .partition(0),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--kafka_dlq_topic", &dlq]);
    let agent = start_against(&stand_in, &args, &[]);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [2]).await,
        "{}",
        agent.log()
    );
    let replay = [
        "replay",
        "--kafka_brokers",
        &bootstrap,
        "--kafka_dlq_topic",
        &dlq,
    ];

    // The cause is not fixed: the replayed messages come back to the dead-letter topic,
    // and the run still ends, at them.
    let (code, _, stderr) = run_ilagent_with_input(&replay, &[], "").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("replayed 2 dead letters"), "{stderr}");
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1) == [4]).await,
        "{}",
        agent.log()
    );
    let (code, stdout, stderr) = run_ilagent_with_input(&replay, &[], "").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("replayed 2 dead letters"), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l["retryCount"] == 2), "{stdout}");

    let all = read_topic(&bootstrap, &topic, 6, WAIT);
    let last_two: Vec<_> = all
        .iter()
        .filter(|r| r.header("retry-count") == Some("2"))
        .collect();
    assert_eq!(last_two.len(), 2, "{all:?}");
    let keyed = |k: &[u8]| {
        last_two
            .iter()
            .find(|r| r.key.as_deref() == Some(k))
            .unwrap()
    };
    assert_eq!(keyed(b"k1").payload, b"not json");
    assert_eq!(
        keyed(b"k1").header("trace"),
        Some("t-1"),
        "the message's own header is kept"
    );
    assert!(keyed(b"k2").tombstone, "a tombstone stays one");
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_a_dead_letter_topic_says_which_flag_is_missing() {
    let (code, _, stderr) =
        run_ilagent_with_input(&["replay", "--kafka_brokers", "127.0.0.1:9"], &[], "").await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--kafka_dlq_topic"), "{stderr}");
}
