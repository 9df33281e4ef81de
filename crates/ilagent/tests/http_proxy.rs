//! The HTTP proxy (`-p`) against the ilert stand-in, with the agent as a process and its
//! SQLite file on disk: 202 only after the commit, per-key order under concurrency, no
//! loss across SIGKILL and an outage, dead letters, refusals, heartbeat forwarding.

mod common;
mod http_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use http_support::*;
use ilert_standin::{Behaviour, Scripted, StandIn};
use serde_json::json;
use testkit::free_port;

#[tokio::test]
async fn fifty_clients_post_ten_thousand_events_for_a_hundred_keys_and_each_arrives_once_in_order()
{
    const CLIENTS: usize = 50;
    const KEYS: usize = 100;
    const PER_KEY: usize = 100;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proxy.db3");
    let port = free_port();
    // ilert's per-key budget would stretch 10,000 events of one integration key over
    // hours; the stand-in does not limit, so neither does the agent here.
    let agent = start_proxy(&stand_in.url(), &db, port, &["--rate_limit_events", "0"]);
    wait_up(&agent, port).await;

    // Each client owns two keys and posts their events one after the other, so the order
    // of its 202s is the order of each key.
    let client = Arc::new(client());
    let mut posters = Vec::new();
    for c in 0..CLIENTS {
        let client = Arc::clone(&client);
        posters.push(tokio::spawn(async move {
            let keys = [c, c + CLIENTS];
            for seq in 0..PER_KEY {
                for key in keys {
                    let (status, body) = post_event(&client, port, &event(key, seq)).await;
                    assert_eq!(status, 202, "{body}");
                    assert!(body["id"].as_i64().is_some(), "{body}");
                }
            }
        }));
    }
    for poster in posters {
        poster.await.unwrap();
    }

    assert!(
        wait_for_events(&stand_in, KEYS * PER_KEY, Duration::from_secs(300)).await,
        "{} of {} events arrived; log:\n{}",
        stand_in.events().len(),
        KEYS * PER_KEY,
        agent.log()
    );
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);
    // Nothing more trickles in: each event arrived exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = stand_in.events();
    assert_eq!(events.len(), KEYS * PER_KEY);
    assert_each_once_in_order(&events, KEYS, PER_KEY, &agent.log());
    assert!(
        stand_in.requests().iter().all(|r| r.path == "/api/events"),
        "the proxy posts to ilert's generic events API"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn events_accepted_while_ilert_is_down_survive_a_sigkill_and_arrive_when_it_is_back() {
    const KEYS: usize = 3;
    const PER_KEY: usize = 10;
    // Nothing listens on ilert's port yet: every delivery fails to connect.
    let ilert_port = free_port();
    let ilert_url = format!("http://127.0.0.1:{ilert_port}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outage.db3");
    let port = free_port();
    let agent = start_proxy(&ilert_url, &db, port, &[]);
    wait_up(&agent, port).await;
    let client = client();
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            let (status, body) = post_event(&client, port, &event(key, seq)).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    // A 202 means on disk: the rows are there before the crash.
    assert_eq!(queue_stat(&db, "queued").await, (KEYS * PER_KEY) as u64);
    agent.kill().await;

    let agent = start_proxy(&ilert_url, &db, port, &[]);
    wait_up(&agent, port).await;
    let stand_in = StandIn::start_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, ilert_port)),
        Behaviour::default(),
    )
    .await
    .unwrap();
    assert!(
        wait_for_events(&stand_in, KEYS * PER_KEY, WAIT).await,
        "{} events arrived; log:\n{}",
        stand_in.events().len(),
        agent.log()
    );
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);
    assert_each_once_in_order(&stand_in.events(), KEYS, PER_KEY, &agent.log());
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn exhausted_and_rejected_events_become_dead_letters_and_requeued_ones_are_delivered() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        error_rate: 1.0,
        key_status: [("il1api-unknown".to_string(), 404)].into(),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dead.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &["--max_retries", "3"]);
    wait_up(&agent, port).await;
    let client = client();
    let (status, _) = post_event(&client, port, &event(1, 0)).await;
    assert_eq!(status, 202);
    assert!(
        wait_for_stat(&db, "dead_letters", |n| n == 1).await,
        "{}",
        agent.log()
    );
    assert_eq!(
        stand_in.requests().len(),
        3,
        "three attempts, then set aside"
    );
    let (_, letters) = queue_command(&db, &["dead_letters"]).await;
    assert!(letters.contains("exhausted"), "{letters}");
    assert!(letters.contains("http"), "{letters}");

    // ilert recovers; the operator requeues; the running daemon delivers it.
    stand_in.set_behaviour(Behaviour {
        key_status: [("il1api-unknown".to_string(), 404)].into(),
        ..Behaviour::default()
    });
    let (code, out) = queue_command(&db, &["requeue", "--all"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(wait_for_events(&stand_in, 1, WAIT).await, "{}", agent.log());
    assert_eq!(arrivals(&stand_in.events()), [("key-1".to_string(), 0)]);
    assert!(wait_for_stat(&db, "dead_letters", |n| n == 0).await);

    // A permanent answer (404: unknown key) is not retried: one attempt, one dead letter.
    stand_in.clear();
    let mut unknown = event(2, 0);
    unknown["integrationKey"] = json!("il1api-unknown");
    assert_eq!(post_event(&client, port, &unknown).await.0, 202);
    assert!(wait_for_stat(&db, "dead_letters", |n| n == 1).await);
    let (_, letters) = queue_command(&db, &["dead_letters"]).await;
    assert!(letters.contains("permanent"), "{letters}");
    assert_eq!(stand_in.requests().len(), 1);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn invalid_bodies_wrong_content_types_oversize_bodies_and_missing_tokens_are_refused_and_nothing_is_stored()
 {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refusals.db3");
    let port = free_port();
    // The token comes from the environment, as it should in production.
    let agent = common::Agent::start(
        &[
            "-f",
            &db.display().to_string(),
            "daemon",
            "-vv",
            "-p",
            &port.to_string(),
            "--http_bind",
            "127.0.0.1",
            "--http_max_body",
            "1KiB",
        ],
        &[
            ("ILERT_API_URL", stand_in.url().as_str()),
            ("ILAGENT_HTTP_TOKEN", "s3cret-token-for-tests"),
        ],
    );
    wait_up(&agent, port).await;
    let client = client();
    let events = url(port, "/api/events");
    let send = |body: String, content_type: &'static str, token: Option<&'static str>| {
        let mut request = client
            .post(&events)
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let token = Some("s3cret-token-for-tests");
    let valid = event(1, 0).to_string();
    let json = "application/json";

    let (status, body) = send(valid.clone(), json, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, _) = send(valid.clone(), json, Some("wrong")).await;
    assert_eq!(status, 401);
    let heartbeat = client
        .get(url(port, "/api/heartbeats/il1hbt-x"))
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), 401, "the token guards all of /api");

    let cases: [(&str, &str, u16, Option<&str>); 8] = [
        ("not json", json, 400, None),
        ("[1, 2]", json, 400, None),
        (
            r#"{"integrationKey": "il1api-x", "summary": "s"}"#,
            json,
            400,
            Some("eventType"),
        ),
        (
            // `field` names the field, not the value that was wrong.
            r#"{"integrationKey": "il1api-x", "eventType": "CLOSE", "summary": "s"}"#,
            json,
            400,
            Some("eventType"),
        ),
        (
            r#"{"integrationKey": "il1api-x", "eventType": "ALERT"}"#,
            json,
            400,
            Some("summary"),
        ),
        (
            r#"{"eventType": "ALERT", "summary": "s"}"#,
            json,
            400,
            Some("integrationKey"),
        ),
        (
            r#"{"integrationKey": "il1api-x", "eventType": "ALERT", "summary": "s", "severity": 9}"#,
            json,
            400,
            Some("severity"),
        ),
        (&valid, "text/plain", 415, None),
    ];
    for (body, content_type, expected, field) in cases {
        let (status, answer) = send(body.to_string(), content_type, token).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert_eq!(answer["status"], expected, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
    }
    let mut large = event(1, 0);
    large["details"] = json!("x".repeat(2048));
    let (status, answer) = send(large.to_string(), json, token).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );

    // Nothing was stored, nothing reached ilert; the probes need no token.
    assert_eq!(queue_stat(&db, "queued").await, 0);
    assert_eq!(queue_stat(&db, "dead_letters").await, 0);
    let health = client.get(url(port, "/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // The same event with the token goes through: the refusals above were not luck.
    let (status, answer) = send(valid, json, token).await;
    assert_eq!(status, 202, "{answer}");
    assert!(wait_for_events(&stand_in, 1, WAIT).await);
    assert_eq!(stand_in.events().len(), 1);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("s3cret-token-for-tests"),
        "the token leaked into the log"
    );
}

#[tokio::test]
async fn heartbeats_are_forwarded_at_once_with_ilerts_status_and_a_slow_one_holds_up_no_event() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        key_status: [("il1hbt-unknown".to_string(), 404)].into(),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("beats.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &[]);
    wait_up(&agent, port).await;
    let client = client();
    let beat = |method: reqwest::Method, key: &str| {
        client
            .request(method, url(port, &format!("/api/heartbeats/{key}")))
            .send()
    };
    for method in [
        reqwest::Method::GET,
        reqwest::Method::HEAD,
        reqwest::Method::POST,
    ] {
        let response = beat(method.clone(), "il1hbt-known").await.unwrap();
        assert_eq!(response.status(), 202, "{method}");
    }
    let response = beat(reqwest::Method::GET, "il1hbt-unknown").await.unwrap();
    assert_eq!(response.status(), 404, "ilert's status is passed on");
    let pings = stand_in.requests();
    assert_eq!(pings.len(), 4, "forwarded, not queued: {pings:?}");
    assert!(pings.iter().all(|r| r.path.starts_with("/api/heartbeats/")));
    assert_eq!(queue_stat(&db, "queued").await, 0);

    // ilert answers slowly: the ping waits, events beside it do not.
    stand_in.set_behaviour(Behaviour {
        latency_ms: 3_000,
        ..Behaviour::default()
    });
    let slow = tokio::spawn(beat(reqwest::Method::GET, "il1hbt-slow"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for seq in 0..5 {
        assert_eq!(post_event(&client, port, &event(7, seq)).await.0, 202);
    }
    assert!(
        !slow.is_finished(),
        "the events were answered while the ping still waited"
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 202);

    // Past the forwarding deadline (5 s) the client gets 504 instead of waiting on.
    stand_in.set_behaviour(Behaviour {
        latency_ms: 8_000,
        ..Behaviour::default()
    });
    let response = beat(reqwest::Method::GET, "il1hbt-slower").await.unwrap();
    assert_eq!(response.status(), 504);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_storm_on_one_integration_key_does_not_hold_up_another_at_ilerts_default_budget() {
    // 600 hosts of one alert source fire at once: far over its 50/min budget, and more
    // alert keys than the proxy delivers at once. A second alert source posts 5 events.
    const HOSTS: usize = 600;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("storm.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &[]);
    wait_up(&agent, port).await;
    let client = client();
    for host in 0..HOSTS {
        let body = json!({
            "integrationKey": "il1api-hot",
            "eventType": "ALERT",
            "summary": format!("host {host} is down"),
            "alertKey": format!("host-{host}"),
        });
        assert_eq!(post_event(&client, port, &body).await.0, 202);
    }
    for seq in 0..5 {
        let body = json!({
            "integrationKey": "il1api-quiet",
            "eventType": "ALERT",
            "summary": format!("quiet event {seq}"),
            "alertKey": "db",
            "customDetails": { "seq": seq },
        });
        assert_eq!(post_event(&client, port, &body).await.0, 202);
    }

    let quiet = |stand_in: &StandIn| {
        stand_in
            .events()
            .iter()
            .filter(|e| e["integrationKey"] == "il1api-quiet")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(30), || quiet(&stand_in) == 5).await,
        "{} of the quiet key's 5 events arrived while the hot key waits for its budget; log:\n{}",
        quiet(&stand_in),
        agent.log()
    );
    let hot = stand_in
        .requests()
        .iter()
        .filter(|r| r.key.as_deref() == Some("il1api-hot"))
        .count();
    assert!(
        hot <= 50,
        "the hot key stays inside its budget: {hot} requests"
    );
    assert!(
        stand_in.requests().iter().all(|r| r.status != 429),
        "no request was answered 429"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_queued_event_is_retried_when_ilerts_retry_after_says_not_at_the_429_floor() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::RetryAfterSeconds {
        status: 429,
        seconds: 3,
    }]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("retry-after.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &[]);
    wait_up(&agent, port).await;
    assert_eq!(post_event(&client(), port, &event(1, 0)).await.0, 202);

    assert!(
        wait_for_events(&stand_in, 1, WAIT).await,
        "log:\n{}",
        agent.log()
    );
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 2, "one 429, then the delivery");
    assert_eq!((requests[0].status, requests[1].status), (429, 202));
    let waited = requests[1].received_at_ms - requests[0].received_at_ms;
    // ilert asked for 3 s: not sooner, and not the 10 s floor used when it says nothing.
    assert!(
        (2_900..9_000).contains(&waited),
        "retried after {waited} ms; log:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn sigterm_stops_waiting_at_once_and_leaves_what_waited_for_its_budget_queued() {
    // 80 alert keys of one alert source: ilert's budget takes 50 now, 30 wait a minute.
    const EVENTS: usize = 80;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stop.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &[]);
    wait_up(&agent, port).await;
    let client = client();
    for host in 0..EVENTS {
        let body = json!({
            "integrationKey": "il1api-budget",
            "eventType": "ALERT",
            "summary": format!("host {host} is down"),
            "alertKey": format!("host-{host}"),
        });
        assert_eq!(post_event(&client, port, &body).await.0, 202);
    }
    assert!(
        wait_for_events(&stand_in, 50, WAIT).await,
        "log:\n{}",
        agent.log()
    );

    // The default --shutdown_timeout is 30 s; nothing is on the wire, so the agent need
    // not wait for it.
    let stopping = tokio::time::Instant::now();
    let (code, log) = agent.stop().await;
    let took = stopping.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(15),
        "stopped after {took:?}; log:\n{log}"
    );
    assert_eq!(stand_in.events().len(), 50);
    assert_eq!(
        queue_stat(&db, "queued").await,
        30,
        "what waited for the budget stays queued for the next start"
    );
}

/// The agent's connections to ilert at `addr`, counted from the kernel's table (the
/// stand-in's own ends have its port as their local one, so only the client ends match).
fn established_connections_to(addr: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{:04X}", addr.port());
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test]
async fn after_a_burst_of_fifty_parallel_deliveries_at_most_sixteen_connections_to_ilert_stay_open()
{
    let stand_in = StandIn::start().await.unwrap();
    // Slow answers make the deliveries overlap, each on a connection of its own; fifty
    // events are what ilert's default budget lets one integration key send at once.
    stand_in.set_behaviour(Behaviour {
        latency_ms: 1_000,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proxy.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &[]);
    wait_up(&agent, port).await;

    let client = client();
    for key in 0..50 {
        assert_eq!(post_event(&client, port, &event(key, 0)).await.0, 202);
    }
    let mut most_at_once = 0;
    let all_arrived = eventually(Duration::from_secs(30), || {
        most_at_once = most_at_once.max(established_connections_to(stand_in.addr()));
        stand_in.events().len() == 50
    })
    .await;
    assert!(all_arrived, "{} of 50 arrived", stand_in.events().len());
    assert!(
        most_at_once > 16,
        "the burst used {most_at_once} connections at most: it does not test the cap"
    );

    // Once the answers are in, the connections beyond the idle cap are closed.
    let settled = eventually(Duration::from_secs(5), || {
        established_connections_to(stand_in.addr()) <= 16
    })
    .await;
    assert!(
        settled,
        "{} connections to ilert stay open after the burst (at most 16 are kept idle)",
        established_connections_to(stand_in.addr())
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
