//! Rebalances with a full window against tansu: commits never move backwards, and
//! nothing read before a revoke is handed over for delivery after it (assignment
//! generations in the ledgers), with agents as separate processes.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    Agent, Outgoing, committed, create_topic, end_offsets, eventually, kafka_args, produce_all,
    producer, unique,
};
use ilert_standin::{Behaviour, StandIn};
use serde_json::json;
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

/// The ids of the events that reached `stand_in`.
fn arrived(stand_in: &StandIn) -> HashSet<u64> {
    stand_in
        .events()
        .iter()
        .filter_map(|e| e["customDetails"]["id"].as_u64())
        .collect()
}

#[tokio::test]
async fn a_rebalance_while_the_window_is_full_never_moves_a_commit_backwards() {
    const PARTITIONS: i32 = 4;
    const MESSAGES: usize = 4_000;
    const KEYS: usize = 200;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 200,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("rebalance"), unique("group"));
    create_topic(&bootstrap, &topic, PARTITIONS).await;
    // 20 messages per integration key: within its budget of 50 a minute, so ilert's
    // latency and the window, not the rate limit, decide the pace.
    let records: Vec<Outgoing> = (0..MESSAGES)
        .map(|id| {
            let key = id % KEYS;
            let alert_key = format!("key-{key}");
            let payload = event(&format!("il1api-rebalance-{key}"), &alert_key, id);
            (None, alert_key, payload)
        })
        .collect();
    let positions = produce_all(&producer(&bootstrap), &topic, &records).await;
    let mut args = kafka_args(&bootstrap, &group);
    // A small window that a slow ilert keeps full, so messages wait in it at each revoke.
    args.extend([
        "-v",
        "-e",
        &topic,
        "--kafka_max_in_flight",
        "20",
        "--kafka_max_buffered",
        "40",
    ]);

    // Committed offsets, sampled until the end of the test.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (bootstrap, group, topic, done) = (
            bootstrap.clone(),
            group.clone(),
            topic.clone(),
            Arc::clone(&done),
        );
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                samples.push(committed(&bootstrap, &group, &topic, PARTITIONS));
                std::thread::sleep(Duration::from_millis(200));
            }
            samples
        })
    };

    let first = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || arrived(&stand_in).len() >= 200).await,
        "{}",
        first.log()
    );
    // A second agent joins: partitions move while both windows are full ...
    let second = start_agent(&stand_in, &args);
    assert!(
        eventually(WAIT, || second.full_log().contains("delivered")).await,
        "the second agent got no partitions; log:\n{}",
        second.log()
    );
    assert!(
        arrived(&stand_in).len() < MESSAGES,
        "the stream ended before the rebalance"
    );
    // ... and leaves: they move back to the first, which may still hold messages it read
    // from them before the first revoke.
    let (code, log) = second.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        arrived(&stand_in).len() < MESSAGES,
        "the stream ended before the second rebalance"
    );

    assert!(
        eventually(Duration::from_secs(120), || arrived(&stand_in).len()
            == MESSAGES
            && committed(&bootstrap, &group, &topic, PARTITIONS)
                == end_offsets(&positions, PARTITIONS))
        .await,
        "{} of {MESSAGES} arrived, committed {:?} (end {:?}); log:\n{}",
        arrived(&stand_in).len(),
        committed(&bootstrap, &group, &topic, PARTITIONS),
        end_offsets(&positions, PARTITIONS),
        first.log()
    );
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(samples.len() > 10, "too few samples: {samples:?}");
    for pair in samples.windows(2) {
        for (p, (before, after)) in pair[0].iter().zip(&pair[1]).enumerate() {
            assert!(
                after >= before,
                "partition {p}: the commit moved back from {before} to {after}"
            );
        }
    }
    first.kill().await;
}

/// The defect this guards against: a message read before a revoke, still waiting for room
/// in a full window, was handed over once the partition came back (a duplicate of what the
/// other agent had delivered meanwhile), and its old offset was stored into the new
/// assignment.
#[tokio::test]
async fn a_message_read_before_a_revoke_is_not_delivered_after_the_partition_comes_back() {
    const MESSAGES: usize = 30;
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    // The first agent's ilert fails everything, so its window stays full; the second
    // agent's ilert works.
    let failing = StandIn::start().await.unwrap();
    failing.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let working = StandIn::start().await.unwrap();
    let (topic, group) = (unique("comes-back"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let records: Vec<Outgoing> = (0..MESSAGES)
        .map(|id| {
            let key = format!("k-{id}");
            (
                Some(0),
                key.clone(),
                event(&format!("il1api-back-{id}"), &key, id),
            )
        })
        .collect();
    produce_all(&producer(&bootstrap), &topic, &records).await;
    let assigned = |agent: &Agent| {
        agent
            .full_log()
            .lines()
            .filter(|l| l.contains("partitions assigned") && l.contains(&format!("{topic}[0]")))
            .count()
    };
    // The group's range assignment gives the only partition to the member whose id sorts
    // first; member ids start with the client id.
    let mut first_args = kafka_args(&bootstrap, &group);
    first_args.extend([
        "-e",
        &topic,
        "--kafka_client_id",
        "z-first",
        "--kafka_max_in_flight",
        "4",
        "--kafka_max_buffered",
        "4",
    ]);
    let first = start_agent(&failing, &first_args);
    // Full for longer than 5 s: it pauses and polls with a message waiting for room.
    assert!(
        eventually(WAIT, || failing.requests().len() >= 8).await,
        "{}",
        first.log()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;

    let mut second_args = kafka_args(&bootstrap, &group);
    second_args.extend(["-e", &topic, "--kafka_client_id", "a-second"]);
    let second = start_agent(&working, &second_args);
    assert!(
        eventually(WAIT, || committed(&bootstrap, &group, &topic, 1)
            == [MESSAGES as i64])
        .await,
        "the second agent did not take over the partition and finish it;\nfirst:\n{}\nsecond:\n{}",
        first.log(),
        second.log()
    );
    assert_eq!(arrived(&working).len(), MESSAGES);
    let (code, log) = second.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        eventually(WAIT, || assigned(&first) >= 2).await,
        "the partition did not come back to the first agent; log:\n{}",
        first.log()
    );

    // The first agent's ilert recovers. Nothing it read before the revoke is delivered
    // after it: the four messages it had handed over stopped retrying when their partition
    // was revoked (the second agent delivered them), and the one that was waiting for room
    // was dropped; the commit stays where the second agent left it.
    failing.set_behaviour(Behaviour::default());
    let handed_over: HashSet<u64> = HashSet::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..15 {
        assert_eq!(
            committed(&bootstrap, &group, &topic, 1),
            [MESSAGES as i64],
            "the commit moved backwards; log:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        arrived(&failing),
        handed_over,
        "a message read before the revoke was delivered after it; log:\n{}",
        first.log()
    );
    first.kill().await;
}
