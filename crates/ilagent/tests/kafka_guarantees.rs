//! The Kafka source's guarantees under failure, against a real Kafka-compatible broker
//! (tansu, or librdkafka's mock cluster for broker faults) and the ilert stand-in, with the
//! agent as a separate process: nothing committed past an undelivered message, no loss
//! across SIGKILL and rebalances, dead letters with their headers, a clean SIGTERM, a
//! broker that is down or refuses the credentials.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use common::{
    Agent, Outgoing, committed, create_topic, end_offsets, eventually, kafka_args, produce_all,
    produce_with_headers, producer, read_topic, unique,
};
use ilert_standin::{Behaviour, StandIn};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use testkit::Tansu;

const WAIT: Duration = Duration::from_secs(60);

/// A message for the dead-letter test: Kafka key, payload, headers, and for a message
/// that must be dead-lettered its reject kind and words of its reason.
type Sample = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, &'static str)>,
    Option<(&'static str, &'static str)>,
);

fn start_agent(stand_in: &StandIn, args: &[&str]) -> Agent {
    start_agent_with_env(stand_in, args, &[])
}

fn start_agent_with_env(stand_in: &StandIn, args: &[&str], extra: &[(&str, &str)]) -> Agent {
    let url = stand_in.url();
    let mut env = vec![
        ("ILERT_API_URL", url.as_str()),
        ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    Agent::start(args, &env)
}

/// An event whose `customDetails` say which message it is: a unique `id`, and its place
/// `seq` in the order of its alert key `key-{key}`.
fn numbered_event(integration_key: &str, key: usize, seq: usize, id: usize) -> Vec<u8> {
    json!({"integrationKey": integration_key, "eventType": "ALERT", "summary": format!("message {id}"),
           "alertKey": format!("key-{key}"), "customDetails": {"id": id, "key": key, "seq": seq}})
    .to_string()
    .into_bytes()
}

fn detail(event: &Value, field: &str) -> u64 {
    event["customDetails"][field].as_u64().unwrap()
}

/// The ids of the events that reached the stand-in, in arrival order.
fn arrived_ids(stand_in: &StandIn) -> Vec<u64> {
    stand_in.events().iter().map(|e| detail(e, "id")).collect()
}

fn unique_arrivals(stand_in: &StandIn) -> usize {
    arrived_ids(stand_in)
        .into_iter()
        .collect::<HashSet<_>>()
        .len()
}

/// Per alert key, the order in which its messages arrived for the first time must be the
/// order they were produced (duplicates after a crash may repeat earlier ones).
fn assert_first_arrivals_in_order(events: &[Value]) {
    let mut next: HashMap<u64, u64> = HashMap::new();
    for event in events {
        let (key, seq) = (detail(event, "key"), detail(event, "seq"));
        let expected = next.entry(key).or_insert(0);
        if seq == *expected {
            *expected += 1;
        } else {
            assert!(
                seq < *expected,
                "key-{key}: message {seq} arrived before message {expected}"
            );
        }
    }
}

/// `n` numbered events over `keys` alert keys; the Kafka key is the alert key, so each
/// key stays on one partition.
fn numbered_stream(integration_key: &str, n: usize, keys: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|id| {
            let (key, seq) = (id % keys, id / keys);
            (
                None,
                format!("key-{key}"),
                numbered_event(integration_key, key, seq, id),
            )
        })
        .collect()
}

#[tokio::test]
async fn nothing_is_committed_past_the_first_undelivered_message_while_ilert_fails() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("outage"), unique("group"));
    create_topic(&bootstrap, &topic, 2).await;
    let producer = producer(&bootstrap);
    // Events without customDetails carry their partition and offset there instead.
    let message = |partition: i32, integration_key: &str, alert_key: String| -> Outgoing {
        let payload = json!({"integrationKey": integration_key, "eventType": "ALERT",
                             "summary": "outage", "alertKey": alert_key});
        (Some(partition), alert_key, payload.to_string().into_bytes())
    };
    let delivered = || -> HashSet<(i64, i64)> {
        stand_in
            .events()
            .iter()
            .map(|e| {
                let d = &e["customDetails"];
                (
                    d["partition"].as_i64().unwrap(),
                    d["offset"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let mut positions = Vec::new();
    // The first undelivered offset of each partition, given what has arrived.
    let first_undelivered = |positions: &[(i32, i64)], delivered: &HashSet<(i64, i64)>| {
        (0..2)
            .map(|p| {
                positions
                    .iter()
                    .filter(|(q, o)| *q == p && !delivered.contains(&(i64::from(*q), *o)))
                    .map(|(_, o)| *o)
                    .min()
                    .unwrap_or_else(|| end_offsets(positions, 2)[p as usize])
            })
            .collect::<Vec<i64>>()
    };

    // Phase 1: everything flows and is committed.
    let first: Vec<Outgoing> = (0..10)
        .map(|i| message(i % 2, "il1api-ok", format!("ok-{}-{}", i % 2, i % 3)))
        .collect();
    positions.extend(produce_all(&producer, &topic, &first).await);
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--rate_limit_events",
        "0",
        "--max_retries",
        "0",
    ]);
    let agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || delivered().len() == 10
            && committed(&bootstrap, &group, &topic, 2)
                == end_offsets(&positions, 2))
        .await,
        "phase 1 not delivered and committed; agent log:\n{}",
        agent.log()
    );

    // Reads the committed offsets for a while and checks each reading against what had
    // arrived by then (read afterwards, so the check can only be generous).
    let watch = |positions: Vec<(i32, i64)>, phase: &'static str| {
        let (bootstrap, group, topic) = (&bootstrap, &group, &topic);
        let delivered = &delivered;
        async move {
            for _ in 0..12 {
                let offsets = committed(bootstrap, group, topic, 2);
                let limit = first_undelivered(&positions, &delivered());
                for p in 0..2 {
                    assert!(
                        offsets[p] <= limit[p],
                        "{phase}: partition {p} committed at {} past its first undelivered message {}",
                        offsets[p],
                        limit[p]
                    );
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };

    // Phase 2: ilert fails every request; new messages are retried, never committed.
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let second: Vec<Outgoing> = (0..20)
        .map(|i| {
            let p = i % 2;
            if (i / 2) % 3 == 1 {
                message(p, "il1api-stuck", format!("stuck-{p}"))
            } else {
                message(p, "il1api-ok", format!("ok-{p}-{}", i % 3))
            }
        })
        .collect();
    positions.extend(produce_all(&producer, &topic, &second).await);
    let failed = || {
        stand_in
            .requests()
            .iter()
            .filter(|r| r.status == 503)
            .count()
    };
    assert!(
        eventually(WAIT, || failed() >= 20).await,
        "the agent does not retry; log:\n{}",
        agent.log()
    );
    watch(positions.clone(), "all requests failing").await;
    assert_eq!(
        committed(&bootstrap, &group, &topic, 2),
        end_offsets(&positions[..10], 2),
        "nothing of phase 2 may be committed while ilert fails"
    );

    // Phase 3: only one integration key keeps failing; messages of other keys behind its
    // first message are delivered, but the commit point must wait for it.
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-stuck".to_string(), 503)]),
        ..Behaviour::default()
    });
    let ok_in_phase_2 = second
        .iter()
        .filter(|(_, k, _)| k.starts_with("ok"))
        .count();
    assert!(
        eventually(WAIT, || delivered().len() == 10 + ok_in_phase_2).await,
        "other keys stalled behind the failing one; log:\n{}",
        agent.log()
    );
    let stuck_offsets: Vec<(i32, i64)> = second
        .iter()
        .zip(&positions[10..])
        .filter(|((_, k, _), _)| k.starts_with("stuck"))
        .map(|(_, pos)| *pos)
        .collect();
    for p in 0..2 {
        let first_stuck = stuck_offsets
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .min()
            .unwrap();
        assert!(
            delivered()
                .iter()
                .any(|(q, o)| *q == i64::from(p) && *o > first_stuck),
            "partition {p}: nothing behind the stuck message was delivered, the check would be empty"
        );
    }
    watch(positions.clone(), "one key failing").await;

    // Phase 4: ilert recovers; everything arrives and the offsets reach the end.
    stand_in.set_behaviour(Behaviour::default());
    let all: HashSet<(i64, i64)> = positions.iter().map(|(p, o)| (i64::from(*p), *o)).collect();
    assert!(
        eventually(WAIT, || delivered() == all
            && committed(&bootstrap, &group, &topic, 2)
                == end_offsets(&positions, 2))
        .await,
        "after recovery: {} of {} delivered, committed {:?} (end {:?}); log:\n{}",
        delivered().len(),
        all.len(),
        committed(&bootstrap, &group, &topic, 2),
        end_offsets(&positions, 2),
        agent.log()
    );
    agent.kill().await;
}

#[tokio::test]
async fn a_sigkill_mid_stream_loses_nothing_and_duplicates_stay_within_the_in_flight_window() {
    const MESSAGES: usize = 10_000;
    const KEYS: usize = 100;
    const MAX_IN_FLIGHT: usize = 256;
    const MAX_BUFFERED: usize = 256;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 10,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("crash"), unique("group"));
    create_topic(&bootstrap, &topic, 3).await;
    let producer = producer(&bootstrap);
    let positions = produce_all(
        &producer,
        &topic,
        &numbered_stream("il1api-crash", MESSAGES, KEYS),
    )
    .await;

    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let max_buffered = MAX_BUFFERED.to_string();
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--rate_limit_events",
        "0",
        "--kafka_max_in_flight",
        &max_in_flight,
        "--kafka_max_buffered",
        &max_buffered,
    ]);
    let first = start_agent(&stand_in, &args);
    let reached = eventually(WAIT, || stand_in.events().len() >= MESSAGES * 2 / 5).await;
    assert!(reached, "too slow to reach 40%; log:\n{}", first.log());
    first.kill().await;
    let at_kill = unique_arrivals(&stand_in);
    assert!(
        at_kill < MESSAGES,
        "the kill came after the end of the stream"
    );

    let second = start_agent(&stand_in, &args);
    let complete = eventually(WAIT, || unique_arrivals(&stand_in) == MESSAGES).await;
    assert!(
        complete,
        "{} of {MESSAGES} arrived after the restart; log:\n{}",
        unique_arrivals(&stand_in),
        second.log()
    );
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 3)
            == end_offsets(&positions, 3))
        .await,
        "committed {:?}, end {:?}",
        committed(&bootstrap, &group, &topic, 3),
        end_offsets(&positions, 3)
    );
    let events = stand_in.events();
    assert_first_arrivals_in_order(&events);
    // The bound: a crash repeats what the killed agent delivered but had not committed.
    // That is what settled since its last commit, which it makes each time the commit
    // points have moved over --kafka_max_in_flight messages (or every second), plus what
    // settled behind a still-unsettled message of its partition, which with this even
    // latency stays within the buffer (--kafka_max_buffered): 256 + 256 at most.
    let duplicates = events.len() - MESSAGES;
    assert!(
        duplicates <= MAX_IN_FLIGHT + MAX_BUFFERED,
        "{duplicates} duplicates after a SIGKILL at {at_kill} of {MESSAGES}; bound {}",
        MAX_IN_FLIGHT + MAX_BUFFERED
    );
    println!("SIGKILL at {at_kill} of {MESSAGES}: {duplicates} duplicates");
    second.kill().await;
}

#[tokio::test]
async fn a_rejected_key_goes_to_the_dead_letter_topic_with_headers_while_other_keys_flow() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-bad".to_string(), 400)]),
        ..Behaviour::default()
    });
    let (topic, dlq, group) = (unique("events"), unique("dlq"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    let producer = producer(&bootstrap);
    let good = |seq: usize| numbered_event("il1api-good", 0, seq, seq);
    let bad = |seq: usize| numbered_event("il1api-bad", 1, seq, 100 + seq);
    let wrong_type = br#"{"integrationKey": "il1api-good", "eventType": 5, "alertKey": "key-0"}"#;
    // Offsets 0.., and for the rejected ones (reject kind, words of the reason).
    let messages: Vec<Sample> = vec![
        ("key-0", good(0), vec![], None),
        ("key-1", bad(0), vec![], Some(("permanent", "400"))),
        ("key-0", good(1), vec![], None),
        (
            "junk-1",
            b"not json at all".to_vec(),
            vec![],
            Some(("invalid", "not valid JSON")),
        ),
        (
            "key-1",
            bad(1),
            vec![("trace-id", "t-42"), ("origin", "plant-7")],
            Some(("permanent", "400")),
        ),
        ("key-0", good(2), vec![], None),
        (
            "junk-2",
            wrong_type.to_vec(),
            vec![],
            Some(("invalid", "eventType")),
        ),
        (
            "junk-3",
            vec![0xff, 0xfe, 0x00, 0x80],
            vec![],
            Some(("invalid", "not UTF-8")),
        ),
        ("key-0", good(3), vec![], None),
        ("key-1", bad(2), vec![], Some(("permanent", "400"))),
        ("key-0", good(4), vec![], None),
    ];
    for (key, payload, headers, _) in &messages {
        produce_with_headers(&producer, &topic, Some(0), Some(key), payload, headers).await;
    }
    let started = SystemTime::now();

    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--kafka_dlq_topic",
        &dlq,
        "--rate_limit_events",
        "0",
    ]);
    let agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1)
            == [messages.len() as i64])
        .await,
        "offsets not committed to the end; log:\n{}",
        agent.log()
    );

    let good_seqs: Vec<u64> = stand_in.events().iter().map(|e| detail(e, "seq")).collect();
    assert_eq!(good_seqs, [0, 1, 2, 3, 4], "good key's events, in order");
    let bad_requests = stand_in
        .requests()
        .iter()
        .filter(|r| r.key.as_deref() == Some("il1api-bad"))
        .count();
    assert_eq!(bad_requests, 3, "a 400 is not retried");

    // Exactly the rejected messages: ask for one more than expected.
    let expected: Vec<(i64, (&str, &str))> = messages
        .iter()
        .enumerate()
        .filter_map(|(offset, (_, _, _, rejected))| rejected.map(|r| (offset as i64, r)))
        .collect();
    let mut records = read_topic(
        &bootstrap,
        &dlq,
        expected.len() + 1,
        Duration::from_secs(10),
    );
    assert_eq!(records.len(), expected.len(), "dead letters: {records:#?}");
    let offset_of = |r: &common::Record| -> i64 {
        r.header("ilagent.source.offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(-1)
    };
    records.sort_by_key(offset_of);
    for (record, (offset, (kind, reason_says))) in records.iter().zip(&expected) {
        let (key, payload, headers, _) = &messages[*offset as usize];
        let context = format!("dead letter of offset {offset}: {record:#?}");
        assert_eq!(offset_of(record), *offset, "{context}");
        assert_eq!(record.key.as_deref(), Some(key.as_bytes()), "{context}");
        assert_eq!(&record.payload, payload, "{context}");
        let header = |name: &str| record.header(name).unwrap_or_default();
        assert_eq!(header("ilagent.source.topic"), topic, "{context}");
        assert_eq!(header("ilagent.source.partition"), "0", "{context}");
        assert_eq!(header("ilagent.reject.kind"), *kind, "{context}");
        assert!(header("ilagent.reason").contains(reason_says), "{context}");
        // A 400 is tried once; an invalid payload never reaches ilert.
        let attempts = if *kind == "permanent" { "1" } else { "0" };
        assert_eq!(header("ilagent.attempts"), attempts, "{context}");
        // The consumer-patterns note's names carry the same.
        assert_eq!(
            header("error-message"),
            header("ilagent.reason"),
            "{context}"
        );
        assert_eq!(
            header("failed-at"),
            header("ilagent.failed.at"),
            "{context}"
        );
        let failed_at = header("ilagent.failed.at");
        let failed_at = humantime::parse_rfc3339(failed_at)
            .unwrap_or_else(|e| panic!("failed.at `{failed_at}` is not RFC 3339: {e}"));
        assert!(
            failed_at >= started - Duration::from_secs(1)
                && failed_at <= SystemTime::now() + Duration::from_secs(1),
            "{context}"
        );
        for (name, value) in headers {
            assert_eq!(header(name), *value, "original header kept; {context}");
        }
    }
    agent.kill().await;
}

#[tokio::test]
async fn two_agents_share_the_partitions_and_the_survivor_takes_over_after_a_kill() {
    const KEYS: usize = 40;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 100,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("shared"), unique("group"));
    create_topic(&bootstrap, &topic, 4).await;
    let producer = producer(&bootstrap);
    let stream = numbered_stream("il1api-shared", 3_000, KEYS);
    let mut args = kafka_args(&bootstrap, &group);
    // -vvv: debug lines name each delivered message, so each agent's share shows.
    args.extend(["-v", "-e", &topic, "--rate_limit_events", "0"]);
    let survivor = start_agent(&stand_in, &args);
    let victim = start_agent(&stand_in, &args);
    let mut positions = Vec::new();

    // Both take part: keep producing until each has delivered something.
    let delivered_some = |agent: &Agent| agent.full_log().contains("delivered");
    // Group joins take a session timeout or so; produce a little at a time meanwhile.
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(delivered_some(&survivor) && delivered_some(&victim)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agents did not share the partitions;\nsurvivor:\n{}\nvictim:\n{}",
            survivor.log(),
            victim.log()
        );
        if sent < 1_000 {
            positions.extend(produce_all(&producer, &topic, &stream[sent..sent + 100]).await);
            sent += 100;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Mid-stream: a backlog is in flight when the victim dies.
    positions.extend(produce_all(&producer, &topic, &stream[sent..sent + 1_000]).await);
    sent += 1_000;
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill().await;
    assert!(
        unique_arrivals(&stand_in) < sent,
        "the kill came after everything was delivered"
    );
    // Keep producing after the kill.
    positions.extend(produce_all(&producer, &topic, &stream[sent..]).await);

    let all = stream.len();
    assert!(
        eventually(WAIT, || unique_arrivals(&stand_in) == all).await,
        "{} of {all} arrived; survivor log:\n{}",
        unique_arrivals(&stand_in),
        survivor.log()
    );
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 4)
            == end_offsets(&positions, 4))
        .await,
        "committed {:?}, end {:?}",
        committed(&bootstrap, &group, &topic, 4),
        end_offsets(&positions, 4)
    );
    assert_first_arrivals_in_order(&stand_in.events());
    survivor.kill().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_commits_and_exits_0() {
    const MESSAGES: usize = 300;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 300,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("term"), unique("group"));
    create_topic(&bootstrap, &topic, 2).await;
    let producer = producer(&bootstrap);
    let stream = numbered_stream("il1api-term", MESSAGES, 20);
    let positions = produce_all(&producer, &topic, &stream).await;
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--rate_limit_events",
        "0",
        "--kafka_max_in_flight",
        "20",
        "--kafka_max_buffered",
        "20",
    ]);
    let agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || stand_in.requests().len() >= 30).await,
        "{}",
        agent.log()
    );

    // Requests are in flight (300 ms each) when the signal arrives.
    let at_signal = stand_in.events().len();
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "exit status; log:\n{log}");
    // The messages taken and unsettled at the signal, as the agent reports them, are all
    // delivered before it exits, none cut off.
    let in_flight: usize = log
        .lines()
        .find(|l| l.contains("finishing in-flight messages"))
        .and_then(|l| l.split("in_flight=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no in-flight count in the log:\n{log}"));
    assert!(in_flight > 0, "nothing was in flight at the signal:\n{log}");
    assert!(
        stand_in.events().len() >= at_signal + in_flight,
        "{in_flight} in flight at the signal, {} delivered after it; log:\n{log}",
        stand_in.events().len() - at_signal
    );
    assert!(!log.contains("interrupted"), "{log}");
    let before: HashSet<u64> = arrived_ids(&stand_in).into_iter().collect();
    assert!(
        before.len() < MESSAGES,
        "stopped after the end of the stream"
    );
    // Everything that arrived is committed, and nothing beyond it.
    let offsets = committed(&bootstrap, &group, &topic, 2);
    let committed_ids: HashSet<u64> = positions
        .iter()
        .enumerate()
        .filter(|(_, (p, o))| *o < offsets[*p as usize])
        .map(|(id, _)| id as u64)
        .collect();
    assert_eq!(
        before, committed_ids,
        "arrived vs committed (offsets {offsets:?}); log:\n{log}"
    );

    let restarted = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || unique_arrivals(&stand_in) == MESSAGES).await,
        "{} of {MESSAGES} after the restart; log:\n{}",
        unique_arrivals(&stand_in),
        restarted.log()
    );
    assert_eq!(
        stand_in.events().len(),
        MESSAGES,
        "a graceful stop repeats nothing"
    );
    assert_first_arrivals_in_order(&stand_in.events());
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 2)
            == end_offsets(&positions, 2))
        .await
    );
    restarted.kill().await;
}

#[tokio::test]
async fn a_broker_that_is_down_at_start_is_waited_for() {
    let port = testkit::free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("late"), unique("group"));
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--rate_limit_events",
        "0",
        // The topic is created only once the broker is up; look for it every second
        // instead of every five minutes.
        "--kafka_property",
        "topic.metadata.refresh.interval.ms=1000",
    ]);
    let mut agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || agent.full_log().contains("source error; retrying")).await,
        "no warning about the missing broker; log:\n{}",
        agent.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent gave up; log:\n{}",
        agent.log()
    );
    let warning = agent
        .full_log()
        .lines()
        .find(|l| l.contains("source error; retrying"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(warning.contains("WARN"), "{warning}");

    let tansu = Tansu::start_on(port).unwrap();
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    let positions = produce_all(&producer, &topic, &numbered_stream("il1api-late", 5, 5)).await;
    assert!(
        eventually(WAIT, || unique_arrivals(&stand_in) == 5).await,
        "nothing delivered after the broker came up; log:\n{}",
        agent.log()
    );
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1)
            == end_offsets(&positions, 1))
        .await
    );
    agent.kill().await;
    drop(tansu);
}

/// tansu 0.6.0 with `--authentication` speaks SCRAM-SHA-256/512 but keeps its users in
/// storage that a test cannot fill (see `Tansu::start_with_auth`), so every login is
/// refused with `unknown-user`. That still shows the agent's mechanism, user name and the
/// password from `ILAGENT_KAFKA_PASSWORD` reaching a real SCRAM exchange, and how a
/// refused login is reported: clearly, then retried, without a crash.
#[tokio::test]
async fn refused_scram_sha_512_credentials_are_reported_and_retried_without_a_crash() {
    let tansu = Tansu::start_with_auth().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("secured"), unique("group"));
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--kafka_security_protocol",
        "sasl_plaintext",
        "--kafka_sasl_mechanism",
        "SCRAM-SHA-512",
        "--kafka_username",
        "u",
    ]);
    let mut agent = start_agent_with_env(
        &stand_in,
        &args,
        &[("ILAGENT_KAFKA_PASSWORD", "not-the-password")],
    );
    let refusals = |agent: &Agent| {
        agent
            .full_log()
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("SASL SCRAM authentication failed"))
            .count()
    };
    assert!(
        eventually(WAIT, || refusals(&agent) >= 2).await,
        "no repeated, clear authentication error; log:\n{}",
        agent.log()
    );
    assert!(
        agent.full_log().contains("Authentication failure"),
        "{}",
        agent.log()
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited; log:\n{}",
        agent.log()
    );
    assert!(
        !agent.full_log().contains("not-the-password"),
        "the password must not be logged"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

/// tansu 0.6.0 does not offer PLAIN; the handshake failure proves the mechanism reached
/// the broker, and the agent reports it and keeps retrying.
#[tokio::test]
async fn a_plain_login_the_broker_does_not_offer_is_reported_and_retried_without_a_crash() {
    let tansu = Tansu::start_with_auth().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("secured"), unique("group"));
    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--kafka_security_protocol",
        "sasl_plaintext",
        "--kafka_sasl_mechanism",
        "PLAIN",
        "--kafka_username",
        "u",
    ]);
    let mut agent = start_agent_with_env(&stand_in, &args, &[("ILAGENT_KAFKA_PASSWORD", "secret")]);
    let failures = |agent: &Agent| {
        agent
            .full_log()
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("SASL PLAIN mechanism handshake failed"))
            .count()
    };
    assert!(
        eventually(WAIT, || failures(&agent) >= 2).await,
        "no repeated, clear handshake error; log:\n{}",
        agent.log()
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited; log:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_broker_outage_during_consumption_is_survived_without_loss() {
    const MESSAGES: usize = 300;
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 200,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("faulty"), unique("group"));
    cluster.create_topic(&topic, 2, 1).unwrap();
    let producer = producer(&bootstrap);
    let stream = numbered_stream("il1api-faulty", MESSAGES, 10);
    let positions = produce_all(&producer, &topic, &stream).await;

    let mut args = kafka_args(&bootstrap, &group);
    args.extend([
        "-e",
        &topic,
        "--rate_limit_events",
        "0",
        // With 200 ms per request and ten at a time the stream takes about six seconds:
        // it is still running when the broker goes down, and after it comes back.
        "--kafka_max_in_flight",
        "10",
        "--kafka_max_buffered",
        "10",
    ]);
    let mut agent = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || unique_arrivals(&stand_in) >= 30).await,
        "{}",
        agent.log()
    );

    // The only broker goes away mid-stream: connections cut, new ones refused.
    cluster.broker_down(1).unwrap();
    let log_before = agent.full_log().len();
    assert!(
        eventually(WAIT, || agent.full_log()[log_before..]
            .contains("source error; retrying"))
        .await,
        "the outage was not noticed; log:\n{}",
        agent.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited during the outage; log:\n{}",
        agent.log()
    );
    let during = unique_arrivals(&stand_in);
    assert!(during < MESSAGES, "the stream ended before the outage");

    cluster.broker_up(1).unwrap();
    assert!(
        eventually(WAIT, || unique_arrivals(&stand_in) == MESSAGES).await,
        "{} of {MESSAGES} after the broker came back; log:\n{}",
        unique_arrivals(&stand_in),
        agent.log()
    );
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 2)
            == end_offsets(&positions, 2))
        .await,
        "committed {:?}, end {:?}; log:\n{}",
        committed(&bootstrap, &group, &topic, 2),
        end_offsets(&positions, 2),
        agent.log()
    );
    assert_first_arrivals_in_order(&stand_in.events());
    println!(
        "outage at {during} of {MESSAGES}; {} delivered in all",
        stand_in.events().len()
    );
    agent.kill().await;
}
