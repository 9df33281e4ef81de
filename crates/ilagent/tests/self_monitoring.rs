//! The agent watches itself by seed 004's thresholds and raises its own alerts in ilert:
//! one ALERT per breached condition, one RESOLVE once it has been clear for a while, and
//! nothing more while a figure hovers at the line. Against the ilert stand-in, the proxy,
//! tansu, and the agent as a separate process with the production rate limits.

mod common;
mod http_support;

use std::collections::HashMap;
use std::time::Duration;

use common::{Outgoing, create_topic, eventually, kafka_args, produce_all, producer, unique};
use http_support::{WAIT, client, post_event, start_proxy, url, wait_up};
use ilert_standin::{Behaviour, StandIn};
use serde_json::{Value, json};
use testkit::Tansu;

const AGENT: &str = "test-agent";

/// Self-monitoring that reacts within a test's patience: evaluated every 200 ms, cleared
/// after 2 s below the clear line.
const FAST: [&str; 8] = [
    "--self_alert_key",
    "il1api-self",
    "--agent_name",
    AGENT,
    "--self_check_interval",
    "200ms",
    "--self_clear_after",
    "2s",
];

/// The agent's own alerts the stand-in accepted for `condition`: their event types, from
/// the first ALERT on. (A fresh agent resolves each condition once it has been clear for
/// `--self_clear_after`, in case an earlier run left an alert open; a RESOLVE with no
/// open alert does nothing in ilert.)
fn self_alerts(stand_in: &StandIn, condition: &str) -> Vec<String> {
    let alert_key = format!("ilagent/{AGENT}/{condition}");
    stand_in
        .events()
        .iter()
        .filter(|e| e["alertKey"] == alert_key.as_str())
        .map(|e| e["eventType"].as_str().unwrap_or_default().to_string())
        .skip_while(|t| t != "ALERT")
        .collect()
}

fn first_alert(stand_in: &StandIn, condition: &str) -> Value {
    let alert_key = format!("ilagent/{AGENT}/{condition}");
    stand_in
        .events()
        .into_iter()
        .find(|e| e["alertKey"] == alert_key.as_str() && e["eventType"] == "ALERT")
        .unwrap_or(Value::Null)
}

/// Posts `good` events over many integration keys (each far inside its rate budget) and
/// `bad` ones with the key ilert refuses.
async fn post(port: u16, good: usize, bad: usize, from: usize) {
    let client = client();
    for i in from..from + good {
        let body = json!({"integrationKey": format!("il1api-good-{}", i % 25), "eventType": "ALERT",
                          "summary": format!("good {i}"), "alertKey": format!("g-{i}")});
        assert_eq!(post_event(&client, port, &body).await.0, 202);
    }
    for i in from..from + bad {
        let body = json!({"integrationKey": "il1api-bad", "eventType": "ALERT",
                          "summary": format!("bad {i}"), "alertKey": format!("b-{i}")});
        assert_eq!(post_event(&client, port, &body).await.0, 202);
    }
}

/// How many of the posted events the stand-in accepted (refused ones are not recorded).
fn good_delivered(stand_in: &StandIn) -> usize {
    stand_in
        .events()
        .iter()
        .filter(|e| {
            e["integrationKey"]
                .as_str()
                .is_some_and(|k| k.starts_with("il1api-good-"))
        })
        .count()
}

async fn status(port: u16, condition: &str) -> Value {
    let body: Value = client()
        .get(url(port, "/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == condition).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_share_above_1_percent_raises_one_alert_that_hovering_keeps_and_clearing_resolves()
 {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: HashMap::from([("il1api-bad".to_string(), 400)]),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let agent = start_proxy(&stand_in.url(), &dir.path().join("q.db3"), port, &FAST);
    wait_up(&agent, port).await;

    // 2 of 100 rejected: 2%.
    post(port, 98, 2, 0).await;
    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "error_rate") == ["ALERT"]).await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "error_rate"),
        agent.log()
    );
    let alert = first_alert(&stand_in, "error_rate");
    assert_eq!(alert["integrationKey"], "il1api-self");
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains("rejected share") && s.contains("above 1%")),
        "{alert}"
    );
    assert_eq!(alert["customDetails"]["condition"], "error_rate");
    assert_eq!(status(port, "error_rate").await["state"], "breached");
    let page = client()
        .get(url(port, "/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("il1api-self"),
        "the alert key is a secret: {page}"
    );
    let samples = http_support::scrape(port).await;
    let breached = |condition| {
        http_support::value(
            &samples,
            "ilagent_self_condition_breached",
            &[("condition", condition)],
        )
    };
    assert_eq!(
        (breached("error_rate"), breached("p99_delivery")),
        (1.0, 0.0)
    );

    // 2 of 210: 0.95%, under the line but above the clear line (0.9%): stays open.
    post(port, 110, 0, 1000).await;
    assert!(eventually(WAIT, || good_delivered(&stand_in) == 208).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        self_alerts(&stand_in, "error_rate"),
        ["ALERT"],
        "no flapping"
    );
    // 3 of 290: 1.03%, above again: still the one alert.
    post(port, 79, 1, 2000).await;
    assert!(eventually(WAIT, || good_delivered(&stand_in) == 287).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(self_alerts(&stand_in, "error_rate"), ["ALERT"]);

    // 3 of 350: 0.86%, below the clear line for 2 s: resolved.
    post(port, 60, 0, 3000).await;
    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "error_rate")
            == ["ALERT", "RESOLVE"])
        .await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "error_rate"),
        agent.log()
    );
    assert_eq!(status(port, "error_rate").await["state"], "clear");
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_ilert_raises_the_p99_delivery_alert_and_a_fast_one_resolves_it() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: 1_200,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let mut args = FAST.to_vec();
    args.extend(["--self_max_p99_delivery", "1s", "--self_window", "3s"]);
    let agent = start_proxy(&stand_in.url(), &dir.path().join("q.db3"), port, &args);
    wait_up(&agent, port).await;

    post(port, 5, 0, 0).await;
    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "p99_delivery") == ["ALERT"]).await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "p99_delivery"),
        agent.log()
    );
    let alert = first_alert(&stand_in, "p99_delivery");
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains("p99 delivery time")),
        "{alert}"
    );

    // ilert is fast again; the slow deliveries leave the 3-second window.
    stand_in.set_behaviour(Behaviour::default());
    for round in 0..20 {
        post(port, 5, 0, 100 * (round + 1)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if self_alerts(&stand_in, "p99_delivery").len() == 2 {
            break;
        }
    }
    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "p99_delivery")
            == ["ALERT", "RESOLVE"])
        .await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "p99_delivery"),
        agent.log()
    );
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_above_the_threshold_raises_an_alert_resolved_once_the_backlog_is_delivered() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    // ilert is down for the source's key (not for the agent's own alerts).
    stand_in.set_behaviour(Behaviour {
        key_status: (0..10)
            .map(|k| (format!("il1api-backlog-{k}"), 503))
            .collect(),
        ..Behaviour::default()
    });
    let (topic, group) = (unique("lagging"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let mut args = kafka_args(&bootstrap, &group);
    args.extend(["-e", &topic, "--self_max_consumer_lag", "100"]);
    args.extend(FAST);
    let agent = common::start_against(&stand_in, &args, &[]);
    // A group that has committed nothing has no lag yet (librdkafka reports it unknown):
    // one message is delivered and committed first.
    let first = json!({"integrationKey": "il1api-ok", "eventType": "ALERT", "summary": "first"});
    let first: Vec<Outgoing> = vec![(Some(0), "k".into(), first.to_string().into_bytes())];
    produce_all(&producer(&bootstrap), &topic, &first).await;
    assert!(
        eventually(WAIT, || common::committed(&bootstrap, &group, &topic, 1)
            == [1])
        .await,
        "{}",
        agent.log()
    );
    let records: Vec<Outgoing> = (0..150)
        .map(|i| {
            // Ten integration keys, so that the drain is not held by one key's rate budget.
            let body = json!({"integrationKey": format!("il1api-backlog-{}", i % 10),
                              "eventType": "ALERT", "summary": format!("backlog {i}"),
                              "alertKey": format!("key-{}", i % 10)});
            (
                Some(0),
                format!("key-{}", i % 10),
                body.to_string().into_bytes(),
            )
        })
        .collect();
    produce_all(&producer(&bootstrap), &topic, &records).await;

    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "consumer_lag") == ["ALERT"]).await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "consumer_lag"),
        agent.log()
    );
    let alert = first_alert(&stand_in, "consumer_lag");
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&topic) && s.contains("above 100")),
        "{alert}"
    );

    // ilert is back: the backlog drains, the lag falls to 0.
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        eventually(Duration::from_secs(120), || self_alerts(
            &stand_in,
            "consumer_lag"
        ) == ["ALERT", "RESOLVE"])
        .await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "consumer_lag"),
        agent.log()
    );
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_rebalances_in_the_window_than_allowed_raise_an_alert_resolved_once_they_stop() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    let (topic, group) = (unique("moving"), unique("group"));
    create_topic(&bootstrap, &topic, 2).await;
    let mut args = kafka_args(&bootstrap, &group);
    // The hour shortened to 15 s, so that the clearing can be seen.
    args.extend([
        "-e",
        &topic,
        "--self_max_rebalances_per_hour",
        "1",
        "--self_rebalance_window",
        "15s",
    ]);
    args.extend(FAST);
    let first = common::start_against(&stand_in, &args, &[]);
    assert!(eventually(WAIT, || first.log().contains("partitions assigned")).await);
    assert!(
        self_alerts(&stand_in, "rebalances").is_empty(),
        "one assignment is allowed"
    );
    // A condition clear since the start is resolved once, for an alert an earlier run may
    // have left open.
    let resolved_at_start = |stand_in: &StandIn| {
        stand_in.events().iter().any(|e| {
            e["alertKey"] == format!("ilagent/{AGENT}/error_rate").as_str()
                && e["eventType"] == "RESOLVE"
        })
    };
    assert!(eventually(WAIT, || resolved_at_start(&stand_in)).await);

    // A second member joins: the first is assigned again.
    let mut second_args = args.clone();
    let name = "--agent_name";
    if let Some(at) = second_args.iter().position(|a| *a == name) {
        second_args[at + 1] = "second-agent";
    }
    let second = common::start_against(&stand_in, &second_args, &[]);
    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "rebalances") == ["ALERT"]).await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "rebalances"),
        first.log()
    );
    let alert = first_alert(&stand_in, "rebalances");
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains("rebalances in the last hour"))
    );
    // The group settles: no more rebalances; once they are out of the window and the
    // condition has been clear for 2 s, it is resolved.
    assert!(
        eventually(WAIT, || self_alerts(&stand_in, "rebalances")
            == ["ALERT", "RESOLVE"])
        .await,
        "{:?}; log:\n{}",
        self_alerts(&stand_in, "rebalances"),
        first.log()
    );
    second.kill().await;
    first.kill().await;
}
