//! The MQTT source without the buffer, under load a broker cannot hold: acknowledgements
//! in the order the messages arrived (checked in the broker's own log), slow keys that
//! stall neither the other keys nor the broker (their messages spill to the SQLite file),
//! and spilled messages that are deleted once delivered and survive a SIGKILL.
//!
//! All with the agent's production rate limits (50 events per integration key a minute).

mod common;
mod mqtt_support;

use std::collections::HashSet;
use std::time::Duration;

use common::{eventually, unique};
use ilert_standin::{Behaviour, StandIn};
use mqtt_support::*;
use serde_json::Value;
use testkit::{Mosquitto, MosquittoConfig};

/// A broker with Mosquitto's stock limits stated (20 in flight, 1,000 queued per client)
/// and every packet in its log, so the acknowledgement order can be read from it.
fn stock_broker() -> Mosquitto {
    Mosquitto::start(MosquittoConfig {
        extra: "max_inflight_messages 20\nmax_queued_messages 1000\nlog_type all\n".into(),
        ..MosquittoConfig::default()
    })
    .unwrap()
}

/// Asserts the broker got one PUBACK per PUBLISH it sent the agent, in the same order.
fn assert_acked_in_receive_order(broker: &Mosquitto, client_id: &str) {
    let log = std::fs::read_to_string(broker.log_path()).unwrap();
    let (sent, acked) = broker_publishes_and_acks(&log, client_id);
    assert!(
        !sent.is_empty(),
        "no PUBLISH to {client_id} in the broker log"
    );
    assert_eq!(
        acked,
        sent,
        "PUBACKs not in the order of the PUBLISHes ({} sent, {} acked)",
        sent.len(),
        acked.len()
    );
}

fn distinct(events: &[Value]) -> HashSet<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| {
            Some((
                e["customDetails"]["key"].as_u64()?,
                e["customDetails"]["seq"].as_u64()?,
            ))
        })
        .collect()
}

async fn wait_for_distinct(stand_in: &StandIn, count: usize, within: Duration) -> bool {
    eventually(within, || distinct(&stand_in.events()).len() >= count).await
}

#[tokio::test]
async fn an_mqtt_burst_from_four_publishers_at_a_stock_broker_is_delivered_in_order_per_key() {
    let broker = stock_broker();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 50,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let (topic, client_id) = (unique("burst"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db.path().join("q.db3"));
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // 100 alert keys, each on an integration key of its own, so that 20 events per key
    // stay inside ilert's 50 a minute; each publisher owns a quarter of the keys.
    //
    // Each publisher sends 500 a second, 2,000 a second in all: five times what the broker
    // window allows an agent that acknowledges only after delivery (20 / 50 ms = 400 a
    // second), which would overflow the 1,000 queued messages within a second. (Unpaced,
    // the four publishers hand the broker all 2,000 in well under 100 ms, and the broker
    // drops the excess before any subscriber can answer, even one that acknowledges on
    // the SQLite write: no agent can hold that.)
    const PUBLISHERS: usize = 4;
    const KEYS: usize = 100;
    const PER_KEY: usize = 20;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
            .flat_map(|seq| (p..KEYS).step_by(PUBLISHERS).map(move |key| (seq, key)))
            .map(|(seq, key)| {
                let integration_key = format!("il1api-burst-{key}");
                (topic.clone(), keyed_event(&integration_key, key, seq))
            })
            .collect();
        assert_eq!(messages.len(), 500);
        let port = broker.port();
        publishers.push(tokio::spawn(async move {
            publish_paced(port, &messages, Duration::from_millis(2)).await
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let complete = wait_for_distinct(&stand_in, KEYS * PER_KEY, WAIT).await;
    let events = stand_in.events();
    assert!(
        complete,
        "{} of {} events arrived; broker log tail:\n{}",
        distinct(&events).len(),
        KEYS * PER_KEY,
        tail(broker.log_path())
    );
    assert_all_in_order(&events, KEYS, PER_KEY, &agent.log());
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_acked_in_receive_order(&broker, &client_id);
}

#[tokio::test]
async fn a_failing_key_holds_back_neither_other_keys_nor_the_broker_and_acks_keep_receive_order() {
    let broker = stock_broker();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: [("il1api-slow".to_string(), 503)].into(),
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let (topic, client_id) = (unique("slow"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db.path().join("q.db3"));
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // The failing key's message first, then five times the broker's in-flight window.
    const KEYS: usize = 10;
    const PER_KEY: usize = 10;
    let mut messages = vec![(topic.clone(), keyed_event("il1api-slow", 999, 0))];
    messages.extend(
        (0..PER_KEY)
            .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
            // An integration key per alert key: 10 events each stay inside 50 a minute.
            .map(|(seq, key)| {
                let integration_key = format!("il1api-fast-{key}");
                (topic.clone(), keyed_event(&integration_key, key, seq))
            }),
    );
    publish(broker.port(), &messages).await;

    assert!(
        wait_for_distinct(&stand_in, KEYS * PER_KEY, WAIT).await,
        "the other keys waited for the failing one ({} arrived); agent log:\n{}\nbroker log:\n{}",
        distinct(&stand_in.events()).len(),
        agent.full_log(),
        tail(broker.log_path())
    );
    let events = stand_in.events();
    assert!(
        !distinct(&events).contains(&(999, 0)),
        "the failing key cannot have been delivered yet"
    );
    assert_all_in_order(&events, KEYS, PER_KEY, &agent.log());

    // ilert recovers: the waiting message is delivered too.
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_distinct(&stand_in, KEYS * PER_KEY + 1, WAIT).await,
        "{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_acked_in_receive_order(&broker, &client_id);
}

#[tokio::test]
async fn a_quiet_key_beside_a_hot_rate_limited_key_is_delivered_while_the_hot_one_drains() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let topic = unique("hot");
    let mut args = agent_args(broker.port(), &unique("agent"), &db.path().join("q.db3"));
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // 600 alert keys of one integration key (more than --mqtt_max_in_flight, 256): at 50
    // a minute that is twelve minutes of work. Then 5 events for another integration key.
    const HOT: usize = 600;
    let mut messages: Vec<(String, Vec<u8>)> = (0..HOT)
        .map(|key| (topic.clone(), keyed_event("il1api-hot", key, 0)))
        .collect();
    messages.extend((0..5).map(|seq| (topic.clone(), keyed_event("il1api-quiet", 10_000, seq))));
    publish(broker.port(), &messages).await;

    let quiet = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["integrationKey"] == "il1api-quiet")
            .count()
    };
    let arrived = eventually(Duration::from_secs(20), || quiet(&stand_in.events()) >= 5).await;
    let events = stand_in.events();
    assert!(
        arrived,
        "{} of 5 quiet events arrived; agent log:\n{}",
        quiet(&events),
        agent.log()
    );
    let hot = events.len() - quiet(&events);
    assert!(
        hot < HOT,
        "the hot key was not still draining ({hot} delivered)"
    );
    assert_all_in_order(
        &events
            .into_iter()
            .filter(|e| e["integrationKey"] == "il1api-quiet")
            .collect::<Vec<_>>()
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["customDetails"]["key"] = 0.into();
                e
            })
            .collect::<Vec<_>>(),
        1,
        5,
        "",
    );
    agent.kill().await;
}

#[tokio::test]
async fn a_spilled_message_is_deleted_from_the_file_once_its_live_delivery_succeeds() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let topic = unique("spilled");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;
    publish(
        broker.port(),
        &[(topic.clone(), keyed_event("il1api-spill", 1, 0))],
    )
    .await;

    // Unsettled for longer than --mqtt_spill_after (1 s): written to the file.
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == 1).await,
        "{}",
        agent.log()
    );
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_distinct(&stand_in, 1, WAIT).await,
        "{}",
        agent.log()
    );
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == 0).await,
        "the row stayed after the delivery"
    );
    // Delivered live only: the worker left the held row alone.
    assert_eq!(stand_in.events().len(), 1, "{}", agent.log());
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let (_, status) = queue_command(&db_file, &["status"]).await;
    assert_eq!(
        status,
        "queued 0\nretrying 0\ndead_letters 0\naccepted_ids 0\n"
    );
}

#[tokio::test]
async fn a_sigkill_while_messages_are_spilled_loses_nothing() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let (topic, client_id) = (unique("killed"), unique("agent"));
    let mut args = agent_args(broker.port(), &client_id, &db_file);
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    const KEYS: usize = 5;
    const PER_KEY: usize = 10;
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| {
            (
                topic.clone(),
                keyed_event(&format!("il1api-killed-{key}"), key, seq),
            )
        })
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == (KEYS * PER_KEY) as u64).await,
        "{}",
        agent.log()
    );
    agent.kill().await;
    assert!(stand_in.events().is_empty());

    // Restarted while ilert still fails: the rows from before come first, and new messages
    // of the same keys are queued behind them instead of overtaking them live.
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;
    let later: Vec<(String, Vec<u8>)> = (PER_KEY..2 * PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| {
            (
                topic.clone(),
                keyed_event(&format!("il1api-killed-{key}"), key, seq),
            )
        })
        .collect();
    publish(broker.port(), &later).await;
    let all_queued = wait_for_stat(&db_file, "queued", |n| n == (2 * KEYS * PER_KEY) as u64).await;
    assert!(
        all_queued,
        "{} rows queued, {:?} delivered; {}",
        queue_stat(&db_file, "queued").await,
        distinct(&stand_in.events()),
        agent.log()
    );
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_distinct(&stand_in, 2 * KEYS * PER_KEY, WAIT).await,
        "{}",
        agent.log()
    );
    assert_all_in_order(&stand_in.events(), KEYS, 2 * PER_KEY, &agent.log());
    assert!(wait_for_stat(&db_file, "queued", |n| n == 0).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_spilled_message_that_ilert_rejects_moves_to_the_dead_letters() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    // Slower than --mqtt_spill_after, so the message is spilled before the 404 comes.
    stand_in.set_behaviour(Behaviour {
        latency_ms: 2_000,
        key_status: [("il1api-gone".to_string(), 404)].into(),
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let topic = unique("rejected");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;
    publish(
        broker.port(),
        &[(topic.clone(), keyed_event("il1api-gone", 1, 0))],
    )
    .await;
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == 1).await,
        "{}",
        agent.log()
    );
    assert!(
        wait_for_stat(&db_file, "dead_letters", |n| n == 1).await,
        "{}",
        agent.log()
    );
    assert_eq!(queue_stat(&db_file, "queued").await, 0);
    let (_, letters) = queue_command(&db_file, &["dead_letters"]).await;
    let fields: Vec<&str> = letters.trim_end().split('\t').collect();
    assert_eq!(
        (fields[3], fields[4]),
        (topic.as_str(), "permanent"),
        "{letters}"
    );
    assert_eq!(stand_in.requests().len(), 1, "a rejection is not retried");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn messages_that_find_the_window_full_go_to_the_queue_and_keep_their_order() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let topic = unique("full");
    let mut args = agent_args(broker.port(), &unique("agent"), &db_file);
    // A window of 16 messages (16 x --mqtt_max_in_flight 1).
    args.extend(["-e", &topic, "--mqtt_max_in_flight", "1"].map(str::to_string));
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    const KEYS: usize = 4;
    const PER_KEY: usize = 10;
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| {
            (
                topic.clone(),
                keyed_event(&format!("il1api-full-{key}"), key, seq),
            )
        })
        .collect();
    publish(broker.port(), &messages).await;
    // All 40 in the file: 16 spilled from the window, the rest queued for the worker.
    assert!(
        wait_for_stat(&db_file, "queued", |n| n == (KEYS * PER_KEY) as u64).await,
        "{}",
        agent.log()
    );
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_distinct(&stand_in, KEYS * PER_KEY, WAIT).await,
        "{}",
        agent.log()
    );
    assert_all_in_order(&stand_in.events(), KEYS, PER_KEY, &agent.log());
    assert!(wait_for_stat(&db_file, "queued", |n| n == 0).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

/// The queue worker leaves out a key whose oldest row is held by a live delivery. When
/// that delivery succeeds and the row is deleted, the worker must look at the key again at
/// once; it used to wait for its idle poll (10 s), which halved the `mqtt-qos1-50ms`
/// benchmark once a flood used up the waits for a full window.
#[tokio::test]
async fn a_queued_message_follows_its_keys_held_message_as_soon_as_that_is_delivered() {
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 400,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let topic = unique("held");
    let mut args = agent_args(broker.port(), &unique("agent"), &db.path().join("q.db3"));
    // A window of 16 messages (16 x --mqtt_max_in_flight 1), and waits for room in it
    // shorter than one delivery: the 17th message of the key goes to the queue behind the
    // 16 live ones, which are spilled (held) meanwhile.
    args.extend(
        [
            "-e",
            &topic,
            "--mqtt_max_in_flight",
            "1",
            "--mqtt_spill_after",
            "200ms",
            "-v",
        ]
        .map(str::to_string),
    );
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    const MESSAGES: usize = 17;
    let messages: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|seq| (topic.clone(), keyed_event("il1api-held", 0, seq)))
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        wait_for_distinct(&stand_in, MESSAGES, WAIT).await,
        "{}",
        agent.log()
    );
    assert_all_in_order(&stand_in.events(), 1, MESSAGES, &agent.log());
    let arrivals: Vec<u64> = stand_in
        .requests()
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.received_at_ms)
        .collect();
    let (last_live, queued) = (arrivals[MESSAGES - 2], arrivals[MESSAGES - 1]);
    assert!(
        queued - last_live < 2_000,
        "the queued message came {} ms after the one before it (one delivery takes 400 ms)\n{}",
        queued - last_live,
        agent.log()
    );
    assert!(
        agent.log().contains("queued=1"),
        "the 17th message did not go to the queue:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

/// The chaos suite's loss (ilert down for a minute, a stream of many alert keys): once the
/// window was full of deliveries that cannot finish, every message of a new key waited
/// `--mqtt_spill_after` for a slot, the intake took one message a second, and the broker
/// dropped what overflowed its 1,000 queued messages.
#[tokio::test]
async fn an_ilert_outage_with_a_full_window_sends_new_keys_to_the_queue_at_the_stream_s_pace() {
    let broker = stock_broker();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let db = tempfile::tempdir().unwrap();
    let db_file = db.path().join("q.db3");
    let (topic, client_id) = (unique("outage"), unique("agent"));
    // Production defaults: a window of 4,096 messages (16 x --mqtt_max_in_flight 256).
    let mut args = agent_args(broker.port(), &client_id, &db_file);
    args.extend(["-e".to_string(), topic.clone()]);
    let agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // One message per alert key and integration key, 500 a second: the window fills after
    // about 8 s, and the last 2,000 find it full.
    const KEYS: usize = 6_000;
    let messages: Vec<(String, Vec<u8>)> = (0..KEYS)
        .map(|key| {
            let integration_key = format!("il1api-outage-{key}");
            (topic.clone(), keyed_event(&integration_key, key, 0))
        })
        .collect();
    publish_paced(broker.port(), &messages, Duration::from_millis(2)).await;

    assert!(
        wait_for_stat(&db_file, "queued", |n| n == KEYS as u64).await,
        "{} of {KEYS} messages in the file; broker log tail:\n{}\nagent log:\n{}",
        queue_stat(&db_file, "queued").await,
        tail(broker.log_path()),
        agent.log()
    );
    let broker_log = std::fs::read_to_string(broker.log_path()).unwrap();
    assert!(
        !broker_log.contains("dropped"),
        "the broker dropped messages:\n{}",
        tail(broker.log_path())
    );

    stand_in.set_behaviour(Behaviour::default());
    assert!(
        eventually(2 * WAIT, || distinct(&stand_in.events()).len() >= KEYS).await,
        "{} of {KEYS} delivered after ilert came back",
        distinct(&stand_in.events()).len()
    );
    assert!(wait_for_stat(&db_file, "queued", |n| n == 0).await);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_acked_in_receive_order(&broker, &client_id);
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
