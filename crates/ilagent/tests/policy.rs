//! Escalation-policy sync end to end: update messages on a Kafka topic or an MQTT topic
//! (buffered and not) move users onto levels of policies seeded in the ilert stand-in.

mod common;
mod mqtt_support;

use std::time::Duration;

use common::{Agent, create_topic, eventually, kafka_args, produce, producer, unique};
use ilert_standin::{Behaviour, Level, Policy, RateLimit, RequestKind, StandIn, User};
use serde_json::{Value, json};
use testkit::Tansu;

const WAIT: Duration = Duration::from_secs(60);
const API_KEY: &str = "il1-user-api-key-0001";

/// Users alice (1), bob (2), carol (3); policy 10 "ops" + "-eu" with two levels.
async fn seeded_stand_in() -> StandIn {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        api_key: Some(API_KEY.into()),
        ..Behaviour::default()
    });
    for (id, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        stand_in.add_user(User {
            id,
            email: format!("{name}@example.com"),
        });
    }
    stand_in.add_policy(ops_eu());
    stand_in
}

fn ops_eu() -> Policy {
    Policy {
        id: 10,
        routing_key: "ops-eu".into(),
        levels: vec![
            Level {
                escalation_timeout: 15,
                user_ids: vec![1],
            },
            Level {
                escalation_timeout: 30,
                user_ids: vec![1],
            },
        ],
    }
}

fn update(team: &str, region: &str, email: &str, shift: Value) -> Vec<u8> {
    json!({"team": team, "region": region, "data": {"email": email, "shift": shift}})
        .to_string()
        .into_bytes()
}

/// The messages every source test sends, in order. With --shift_offset -1:
/// bob to level 0 (string shift), three that must be rejected, carol to level 1 (number).
fn scenario_messages() -> Vec<Vec<u8>> {
    vec![
        update("ops", "-eu", "bob@example.com", json!("1")),
        update("ops", "-eu", "nobody@example.com", json!(1)),
        update("ops", "-us", "bob@example.com", json!(1)),
        update("ops", "-eu", "bob@example.com", json!(7)),
        update("ops", "-eu", "carol@example.com", json!(2)),
    ]
}

fn policy_flags(topic: &str) -> Vec<String> {
    [
        "--policy_topic",
        topic,
        "--policy_routing_keys",
        "team,region",
        "--shift_offset",
        "-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn assert_scenario_applied(stand_in: &StandIn, agent: &Agent) {
    let expected = Policy {
        levels: vec![
            Level {
                escalation_timeout: 15,
                user_ids: vec![2],
            },
            Level {
                escalation_timeout: 30,
                user_ids: vec![3],
            },
        ],
        ..ops_eu()
    };
    let applied = eventually(WAIT, || stand_in.policy(10) == Some(expected.clone())).await;
    assert!(
        applied,
        "policy is {:?}; agent log:\n{}",
        stand_in.policy(10),
        agent.log()
    );
    for rejection in [
        "unknown user: no ilert user has the email `nobody@example.com`",
        "unknown policy: no escalation policy has the routing key `ops-us`",
        "unknown level: escalation policy 10 has 2 levels, level 6",
    ] {
        let logged = eventually(WAIT, || agent.full_log().contains(rejection)).await;
        assert!(logged, "`{rejection}` not logged:\n{}", agent.log());
    }
    let puts = stand_in
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::PolicyLevelUpdate)
        .count();
    assert_eq!(puts, 2, "only the two valid updates reach ilert");
}

fn env(stand_in: &StandIn) -> Vec<(&'static str, String)> {
    vec![
        ("ILERT_API_URL", stand_in.url()),
        // A leading `Bearer ` is tolerated.
        ("ILERT_API_KEY", format!("Bearer {API_KEY}")),
    ]
}

fn start(stand_in: &StandIn, args: &[String]) -> Agent {
    let env = env(stand_in);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args, &env)
}

#[tokio::test]
async fn kafka_policy_updates_move_users_onto_levels_and_reject_what_cannot_apply() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = seeded_stand_in().await;
    let (topic, group) = (unique("shifts"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    for message in scenario_messages() {
        produce(&producer, &topic, None, None, &message).await;
    }
    let mut args: Vec<String> = kafka_args(&bootstrap, &group)
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(policy_flags(&topic));
    let agent = start(&stand_in, &args);

    assert_scenario_applied(&stand_in, &agent).await;
    assert!(
        eventually(WAIT, || common::committed(&bootstrap, &group, &topic, 1)
            == [5])
        .await
    );
    agent.kill().await;
}

async fn mqtt_scenario(buffered: bool) {
    let stand_in = seeded_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("shifts");
    let mut args =
        mqtt_support::agent_args(1883, &unique("policy-agent"), &dir.path().join("q.db3"));
    args.extend(policy_flags(&topic));
    if buffered {
        args.push("--mqtt_buffer".into());
    }
    let agent = start(&stand_in, &args);
    mqtt_support::wait_subscribed(&agent).await;
    let messages: Vec<(String, Vec<u8>)> = scenario_messages()
        .into_iter()
        .map(|m| (topic.clone(), m))
        .collect();
    mqtt_support::publish(1883, &messages).await;

    assert_scenario_applied(&stand_in, &agent).await;
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn mqtt_policy_updates_apply_without_the_buffer() {
    mqtt_scenario(false).await;
}

#[tokio::test]
async fn mqtt_policy_updates_apply_with_the_buffer() {
    mqtt_scenario(true).await;
}

#[tokio::test]
async fn updates_wait_out_a_failing_api_and_apply_in_message_order() {
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = seeded_stand_in().await;
    stand_in.set_behaviour(Behaviour {
        api_key: Some(API_KEY.into()),
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let (topic, group) = (unique("shifts"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    // Level 0 changes hands three times; the last one must win.
    for email in [
        "bob@example.com",
        "carol@example.com",
        "alice@example.com",
        "bob@example.com",
    ] {
        produce(
            &producer,
            &topic,
            None,
            None,
            &update("ops", "-eu", email, json!(1)),
        )
        .await;
    }
    let mut args: Vec<String> = kafka_args(&bootstrap, &group)
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(policy_flags(&topic));
    let agent = start(&stand_in, &args);

    stand_in.wait_for_requests(5, WAIT).await;
    assert!(stand_in.requests().iter().all(|r| r.status == 503));
    assert_eq!(
        stand_in.policy(10),
        Some(ops_eu()),
        "nothing applied during the outage"
    );
    stand_in.set_behaviour(Behaviour {
        api_key: Some(API_KEY.into()),
        ..Behaviour::default()
    });

    let puts_in_order = eventually(WAIT, || {
        let applied: Vec<Value> = stand_in
            .requests()
            .iter()
            .filter(|r| r.kind == RequestKind::PolicyLevelUpdate && r.status == 200)
            .map(|r| {
                r.json
                    .as_ref()
                    .map(|j| j["users"][0]["id"].clone())
                    .unwrap_or_default()
            })
            .collect();
        applied == [json!(2), json!(3), json!(1), json!(2)]
    })
    .await;
    assert!(
        puts_in_order,
        "requests: {:?}\nlog:\n{}",
        stand_in
            .requests()
            .iter()
            .map(|r| (&r.path, r.status))
            .collect::<Vec<_>>(),
        agent.log()
    );
    assert_eq!(
        stand_in.policy(10).unwrap().levels[0],
        Level {
            escalation_timeout: 15,
            user_ids: vec![2]
        }
    );
    agent.kill().await;
}

#[tokio::test]
async fn two_hundred_updates_for_five_policies_stay_inside_the_api_key_budget() {
    // ilert allows 120 requests a minute per API key; scaled down here to 40 per 2 s,
    // enforced by the stand-in (it answers 429 beyond), and the agent told the same.
    let tansu = Tansu::start().unwrap();
    let bootstrap = tansu.bootstrap_servers();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        api_key: Some(API_KEY.into()),
        rate_limit: Some(RateLimit {
            per_key: 40,
            window_ms: 2000,
        }),
        ..Behaviour::default()
    });
    for id in 1..=4 {
        stand_in.add_user(User {
            id,
            email: format!("user{id}@example.com"),
        });
    }
    for p in 0..5 {
        stand_in.add_policy(Policy {
            id: 100 + p,
            routing_key: format!("team{p}-eu"),
            levels: vec![
                Level {
                    escalation_timeout: 10,
                    user_ids: vec![]
                };
                3
            ],
        });
    }
    let (topic, group) = (unique("shifts"), unique("group"));
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    for i in 0..200u64 {
        let message = update(
            &format!("team{}", i % 5),
            "-eu",
            &format!("user{}@example.com", 1 + i % 4),
            json!(1 + i % 3),
        );
        produce(&producer, &topic, None, None, &message).await;
    }
    let mut args: Vec<String> = kafka_args(&bootstrap, &group)
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(policy_flags(&topic));
    args.extend(
        ["--rate_limit_api", "40", "--rate_limit_window", "2s"]
            .iter()
            .map(|s| s.to_string()),
    );
    let agent = start(&stand_in, &args);

    let all_applied = eventually(Duration::from_secs(120), || {
        stand_in
            .requests()
            .iter()
            .filter(|r| r.kind == RequestKind::PolicyLevelUpdate && r.status == 200)
            .count()
            == 200
    })
    .await;
    assert!(all_applied, "log:\n{}", agent.log());
    let requests = stand_in.requests();
    assert_eq!(
        requests.iter().filter(|r| r.status == 429).count(),
        0,
        "the agent went over the API key's budget"
    );
    let lookups = requests
        .iter()
        .filter(|r| r.kind != RequestKind::PolicyLevelUpdate)
        .count();
    // Uncached, 200 updates would need 400 lookups. Cached, each of the 15 (policy, level)
    // keys that start in parallel may miss once for its user and its policy.
    assert!(
        lookups <= 2 * 15,
        "{lookups} lookups for 4 users and 5 policies: the cache is not used"
    );
    agent.kill().await;
}

#[tokio::test]
async fn policy_cache_ttl_0_looks_the_user_and_the_policy_up_for_every_update() {
    let stand_in = seeded_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("shifts");
    let mut args =
        mqtt_support::agent_args(1883, &unique("policy-agent"), &dir.path().join("q.db3"));
    args.extend(policy_flags(&topic));
    args.extend(["--policy_cache_ttl".to_string(), "0".to_string()]);
    let agent = start(&stand_in, &args);
    mqtt_support::wait_subscribed(&agent).await;
    for updates in 1..=3 {
        // Counted before the publish: a fast agent may have made all three requests by the
        // time the broker's acknowledgement arrives.
        let message = update("ops", "-eu", "bob@example.com", json!(1));
        mqtt_support::publish(1883, &[(topic.clone(), message)]).await;
        assert!(
            eventually(WAIT, || stand_in.requests().len() >= updates * 3).await,
            "update {updates}: the stand-in has {:?}\nlog:\n{}",
            stand_in
                .requests()
                .iter()
                .map(|r| (r.kind, r.status))
                .collect::<Vec<_>>(),
            agent.log()
        );
    }
    let count = |kind: RequestKind| {
        stand_in
            .requests()
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    };
    assert_eq!(count(RequestKind::UserSearch), 3, "no lookup reused");
    assert_eq!(count(RequestKind::PolicyResolve), 3);
    assert_eq!(count(RequestKind::PolicyLevelUpdate), 3);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
