//! Delivery against the ilert stand-in over real HTTP: each outcome class, retries,
//! `Retry-After`, timeouts, dropped connections, `--max_retries`, rate limits and
//! escalation-policy updates.

use std::time::Duration;

use ilagent::action::{Action, Outcome, PolicyUpdate, RejectKind};
use ilagent::delivery::{Backoff, Budget, Budgets, Context, Deliverer, RetryPolicy};
use ilagent::ilert::{ClientSettings, Event, EventPath, EventType, IlertClient};
use ilagent::secret::Secret;
use ilert_standin::{Behaviour, Level, Policy, RateLimit, RequestKind, Scripted, StandIn, User};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        max_attempts: Some(100),
        ..RetryPolicy::default()
    }
}

fn unlimited() -> Budgets {
    let off = Budget {
        limit: 0,
        window: Duration::from_secs(60),
    };
    Budgets {
        integration: off,
        heartbeat: off,
        api: off,
    }
}

fn deliverer_with(
    stand_in: &StandIn,
    budgets: Budgets,
    policy: RetryPolicy,
    request_timeout: Duration,
) -> Deliverer {
    let url = reqwest::Url::parse(&stand_in.url()).unwrap();
    let client = IlertClient::new(&ClientSettings {
        api_url: url.clone(),
        beat_url: url,
        connect_timeout: Duration::from_secs(2),
        request_timeout,
    })
    .unwrap();
    Deliverer::new(
        client,
        budgets,
        policy,
        Some(Secret::new("Bearer il1api-user-key")),
    )
}

fn deliverer(stand_in: &StandIn) -> Deliverer {
    deliverer_with(stand_in, unlimited(), fast_policy(), Duration::from_secs(5))
}

fn alert(key: &str, alert_key: &str) -> Action {
    let mut event = Event::new(Secret::new(key), EventType::Alert);
    event.summary = Some(format!("summary for {alert_key}"));
    event.alert_key = Some(alert_key.to_string());
    Action::Event(Box::new(event))
}

async fn deliver(deliverer: &Deliverer, action: &Action) -> Outcome {
    let cancel = CancellationToken::new();
    let ctx = Context {
        location: &"test",
        deadline: None,
        cancel: &cancel,
        slots: None,
        stop_waiting: None,
        revoked: None,
        reserved: Default::default(),
    };
    deliverer.deliver(action, &ctx).await
}

#[tokio::test]
async fn an_accepted_event_is_delivered_in_one_attempt_with_the_agents_user_agent() {
    let stand_in = StandIn::start().await.unwrap();
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "disk")).await;

    assert!(
        matches!(
            outcome,
            Outcome::Delivered {
                status: 202,
                attempts: 1,
                correlation_id: Some(_)
            }
        ),
        "{outcome:?}"
    );
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/events");
    assert!(
        requests[0]
            .header("user-agent")
            .unwrap()
            .starts_with("ilagent/")
    );
    assert_eq!(stand_in.events()[0]["alertKey"], "disk");
}

#[tokio::test]
async fn events_go_to_the_per_key_path_of_their_source() {
    let stand_in = StandIn::start().await.unwrap();
    let kafka = deliverer(&stand_in).with_event_path(EventPath::PerKey(EventPath::KAFKA.into()));
    let outcome = deliver(&kafka, &alert("il1api-k", "x")).await;

    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    assert_eq!(stand_in.requests()[0].path, "/api/v1/events/kafka/il1api-k");
}

#[tokio::test]
async fn server_errors_are_retried_until_ilert_accepts() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([
        Scripted::Status(503),
        Scripted::Status(500),
        Scripted::Status(502),
    ]);
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "x")).await;

    assert!(
        matches!(outcome, Outcome::Delivered { attempts: 4, .. }),
        "{outcome:?}"
    );
    let statuses: Vec<u16> = stand_in.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 500, 502, 202]);
}

#[tokio::test]
async fn a_bad_request_is_rejected_at_once_with_ilerts_reason() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::Status(400)]);
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "x")).await;

    let Outcome::Rejected {
        kind,
        status,
        attempts,
        reason,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (kind, status, attempts),
        (RejectKind::Permanent, Some(400), 1)
    );
    assert!(reason.starts_with("400 Bad Request"), "{reason}");
    assert_eq!(
        stand_in.requests().len(),
        1,
        "a permanent failure is not retried"
    );
}

#[tokio::test]
async fn an_unknown_key_is_rejected_at_once() {
    let stand_in = StandIn::start().await.unwrap();
    let mut behaviour = Behaviour::default();
    behaviour.key_status.insert("il1api-unknown".into(), 404);
    stand_in.set_behaviour(behaviour);
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-unknown", "x")).await;

    assert!(
        matches!(
            outcome,
            Outcome::Rejected {
                kind: RejectKind::Permanent,
                status: Some(404),
                attempts: 1,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn every_other_client_error_is_permanent() {
    let stand_in = StandIn::start().await.unwrap();
    for status in [401, 403, 413, 422] {
        stand_in.clear();
        stand_in.script([Scripted::Status(status)]);
        let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "x")).await;
        assert!(
            matches!(
                outcome,
                Outcome::Rejected {
                    kind: RejectKind::Permanent,
                    attempts: 1,
                    ..
                }
            ),
            "{status}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn retry_after_in_seconds_is_waited_out() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::RetryAfterSeconds {
        status: 429,
        seconds: 2,
    }]);
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "x")).await;

    assert!(
        matches!(outcome, Outcome::Delivered { attempts: 2, .. }),
        "{outcome:?}"
    );
    let requests = stand_in.requests();
    let gap = requests[1].received_at_ms - requests[0].received_at_ms;
    assert!(
        gap >= 1900,
        "the retry came {gap} ms after a Retry-After of 2 s"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_out() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::RetryAfterDate {
        status: 503,
        seconds_from_now: 3,
    }]);
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "x")).await;

    assert!(
        matches!(outcome, Outcome::Delivered { attempts: 2, .. }),
        "{outcome:?}"
    );
    let requests = stand_in.requests();
    let gap = requests[1].received_at_ms - requests[0].received_at_ms;
    // An HTTP date has whole-second resolution: 3 s from now is at least 2 s away.
    assert!(
        gap >= 1900,
        "the retry came {gap} ms after a Retry-After date 3 s ahead"
    );
}

#[tokio::test]
async fn a_request_that_times_out_is_retried() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::Delay { ms: 3000 }]);
    let deliverer = deliverer_with(
        &stand_in,
        unlimited(),
        fast_policy(),
        Duration::from_millis(300),
    );
    let outcome = deliver(&deliverer, &alert("il1api-a", "x")).await;

    assert!(
        matches!(outcome, Outcome::Delivered { attempts: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(stand_in.wait_for_requests(2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::Drop, Scripted::Drop]);
    let outcome = deliver(&deliverer(&stand_in), &alert("il1api-a", "x")).await;

    assert!(
        matches!(outcome, Outcome::Delivered { attempts: 3, .. }),
        "{outcome:?}"
    );
    let statuses: Vec<u16> = stand_in.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 0, 202]);
}

#[tokio::test]
async fn max_retries_turns_repeated_transient_failures_into_a_rejection() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let policy = RetryPolicy {
        max_attempts: Some(3),
        ..fast_policy()
    };
    let deliverer = deliverer_with(&stand_in, unlimited(), policy, Duration::from_secs(5));
    let outcome = deliver(&deliverer, &alert("il1api-a", "x")).await;

    let Outcome::Rejected {
        kind,
        attempts,
        reason,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((kind, attempts), (RejectKind::Exhausted, 3));
    assert!(
        reason.contains("gave up after 3 attempts") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(stand_in.requests().len(), 3);
}

#[tokio::test]
async fn a_deadline_turns_repeated_transient_failures_into_a_rejection() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let deliverer = deliverer(&stand_in);
    let cancel = CancellationToken::new();
    let ctx = Context {
        location: &"test",
        deadline: Some(Instant::now() + Duration::from_millis(500)),
        cancel: &cancel,
        slots: None,
        stop_waiting: None,
        revoked: None,
        reserved: Default::default(),
    };
    let outcome = deliverer.deliver(&alert("il1api-a", "x"), &ctx).await;

    assert!(
        matches!(
            outcome,
            Outcome::Rejected {
                kind: RejectKind::Exhausted,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn shutdown_interrupts_a_message_waiting_to_be_retried() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::RetryAfterSeconds {
        status: 503,
        seconds: 600,
    }]);
    let deliverer = deliverer(&stand_in);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let ctx = Context {
        location: &"test",
        deadline: None,
        cancel: &cancel,
        slots: None,
        stop_waiting: None,
        revoked: None,
        reserved: Default::default(),
    };
    let outcome = deliverer.deliver(&alert("il1api-a", "x"), &ctx).await;

    assert_eq!(outcome, Outcome::Interrupted { attempts: 1 });
    assert!(!outcome.is_settled());
}

#[tokio::test]
async fn invalid_and_skipped_actions_never_reach_ilert() {
    let stand_in = StandIn::start().await.unwrap();
    let deliverer = deliverer(&stand_in);
    let invalid = deliver(
        &deliverer,
        &Action::Invalid("payload is not valid JSON".into()),
    )
    .await;
    let skipped = deliver(&deliverer, &Action::Skip("filter".into())).await;

    assert!(matches!(
        invalid,
        Outcome::Rejected {
            kind: RejectKind::Invalid,
            attempts: 0,
            ..
        }
    ));
    assert!(matches!(skipped, Outcome::Skipped { .. }));
    assert!(stand_in.requests().is_empty());
}

#[tokio::test]
async fn the_rate_limiter_keeps_a_busy_key_in_budget_without_delaying_another_key() {
    // ilert's 50 per minute, scaled down to 3 per 2 s for test speed; the stand-in
    // enforces the same budget and would answer 429 to any excess.
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        rate_limit: Some(RateLimit {
            per_key: 3,
            window_ms: 2000,
        }),
        ..Behaviour::default()
    });
    let budget = Budget {
        limit: 3,
        window: Duration::from_secs(2),
    };
    let deliverer = deliverer_with(
        &stand_in,
        Budgets {
            integration: budget,
            heartbeat: budget,
            api: budget,
        },
        fast_policy(),
        Duration::from_secs(5),
    );

    let mut busy = Vec::new();
    for i in 0..7 {
        let d = deliverer.clone();
        busy.push(tokio::spawn(async move {
            deliver(&d, &alert("il1api-busy", &format!("b{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = deliver(&deliverer, &alert("il1api-quiet", "q")).await;
    assert!(
        matches!(quiet, Outcome::Delivered { attempts: 1, .. }),
        "{quiet:?}"
    );
    let busy_sent_before_quiet = stand_in
        .requests()
        .iter()
        .filter(|r| r.key.as_deref() == Some("il1api-busy"))
        .count();
    // The busy key sends its budget (3) at once and then waits for its window; the quiet
    // key went out meanwhile. (Fewer than 3 only means the machine was slow to send them.)
    assert!(
        busy_sent_before_quiet <= 3,
        "{busy_sent_before_quiet} busy requests went out before the quiet one: it waited behind the busy key's window"
    );

    for task in busy {
        let outcome = task.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Delivered { attempts: 1, .. }),
            "{outcome:?}"
        );
    }
    let requests = stand_in.requests();
    assert!(
        requests.iter().all(|r| r.status != 429),
        "the limiter provoked a 429"
    );
    let busy_times: Vec<u64> = requests
        .iter()
        .filter(|r| r.key.as_deref() == Some("il1api-busy"))
        .map(|r| r.received_at_ms)
        .collect();
    assert_eq!(busy_times.len(), 7);
    for (i, start) in busy_times.iter().enumerate() {
        let in_window = busy_times[i..]
            .iter()
            .filter(|t| **t < start + 2000)
            .count();
        assert!(in_window <= 3, "{in_window} requests of one key within 2 s");
    }
}

#[tokio::test]
async fn heartbeats_use_the_legacy_endpoint_for_il1hbt_keys_and_pings_otherwise() {
    let stand_in = StandIn::start().await.unwrap();
    let deliverer = deliverer(&stand_in);
    let legacy = deliver(&deliverer, &Action::Heartbeat(Secret::new("il1hbt-legacy"))).await;
    let ping = deliver(
        &deliverer,
        &Action::Heartbeat(Secret::new("hb-new-monitor")),
    )
    .await;

    assert!(
        matches!(legacy, Outcome::Delivered { .. }) && matches!(ping, Outcome::Delivered { .. })
    );
    let requests = stand_in.requests();
    assert_eq!(
        (requests[0].kind, requests[0].path.as_str()),
        (
            RequestKind::HeartbeatLegacy,
            "/api/heartbeats/il1hbt-legacy"
        )
    );
    assert_eq!(
        (requests[1].kind, requests[1].path.as_str()),
        (RequestKind::HeartbeatPing, "/api/pings/hb-new-monitor")
    );
}

fn seeded_stand_in_policy() -> Policy {
    Policy {
        id: 77,
        routing_key: "ops-eu".into(),
        levels: vec![
            Level {
                escalation_timeout: 15,
                user_ids: vec![1],
            },
            Level {
                escalation_timeout: 30,
                user_ids: vec![2],
            },
        ],
    }
}

#[tokio::test]
async fn a_policy_update_puts_the_user_on_the_level_and_keeps_its_timeout() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.add_user(User {
        id: 42,
        email: "oncall@example.com".into(),
    });
    stand_in.add_policy(seeded_stand_in_policy());
    let update = Action::PolicyUpdate(PolicyUpdate {
        email: "oncall@example.com".into(),
        routing_key: "ops-eu".into(),
        level: 1,
    });
    let outcome = deliver(&deliverer(&stand_in), &update).await;

    assert!(
        matches!(outcome, Outcome::Delivered { status: 200, .. }),
        "{outcome:?}"
    );
    let policy = stand_in.policy(77).unwrap();
    assert_eq!(
        policy.levels[1],
        Level {
            escalation_timeout: 30,
            user_ids: vec![42]
        }
    );
    assert_eq!(policy.levels[0], seeded_stand_in_policy().levels[0]);
    let auth = stand_in.requests()[0]
        .header("authorization")
        .unwrap()
        .to_string();
    assert_eq!(
        auth, "Bearer il1api-user-key",
        "a leading `Bearer ` in the key is not doubled"
    );
}

#[tokio::test]
async fn a_policy_update_names_which_lookup_failed() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.add_user(User {
        id: 42,
        email: "oncall@example.com".into(),
    });
    stand_in.add_policy(seeded_stand_in_policy());
    let deliverer = deliverer(&stand_in);
    let cases = [
        ("nobody@example.com", "ops-eu", 0, "unknown user"),
        ("oncall@example.com", "no-such-key", 0, "unknown policy"),
        ("oncall@example.com", "ops-eu", 5, "unknown level"),
    ];
    for (email, routing_key, level, expected) in cases {
        let update = Action::PolicyUpdate(PolicyUpdate {
            email: email.into(),
            routing_key: routing_key.into(),
            level,
        });
        let outcome = deliver(&deliverer, &update).await;
        let Outcome::Rejected {
            kind,
            reason,
            attempts,
            ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!((kind, attempts), (RejectKind::Permanent, 1));
        assert!(reason.starts_with(expected), "{reason}");
    }
    assert_eq!(
        stand_in.policy(77).unwrap(),
        seeded_stand_in_policy(),
        "nothing was changed"
    );
}

#[tokio::test]
async fn a_policy_update_is_retried_through_server_errors_and_applied_once_ilert_recovers() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.add_user(User {
        id: 42,
        email: "oncall@example.com".into(),
    });
    stand_in.add_policy(seeded_stand_in_policy());
    // user lookup ok, policy lookup fails, then the whole update runs again
    stand_in.script([Scripted::Delay { ms: 0 }, Scripted::Status(503)]);
    let update = Action::PolicyUpdate(PolicyUpdate {
        email: "oncall@example.com".into(),
        routing_key: "ops-eu".into(),
        level: 0,
    });
    let outcome = deliver(&deliverer(&stand_in), &update).await;

    assert!(
        matches!(outcome, Outcome::Delivered { attempts: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(stand_in.policy(77).unwrap().levels[0].user_ids, vec![42]);
}
