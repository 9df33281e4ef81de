//! The stand-in answers the ilert endpoints the way ilert does and records what arrived.

mod common;

use common::{WAIT, alert, body_json, client, post_event};
use ilert_standin::{Level, Policy, RequestKind, StandIn, User};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn valid_alert_is_accepted_with_202_and_recorded() {
    let standin = StandIn::start().await.unwrap();
    let body = alert("il1api123", "disk-1", "Disk full");
    let response = post_event(&client(), &standin.url(), &body).await;

    assert_eq!(response.status(), 202);
    let correlation = response
        .headers()
        .get("correlation-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(correlation.len(), 36);
    let requests = standin.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.seq, r.method.as_str(), r.path.as_str()),
        (1, "POST", "/api/events")
    );
    assert_eq!(r.kind, RequestKind::Event);
    assert_eq!(r.status, 202);
    assert_eq!(r.key.as_deref(), Some("il1api123"));
    assert_eq!(r.json.as_ref(), Some(&body));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.received_at_ms > 1_600_000_000_000);
    assert_eq!(standin.events(), vec![body]);
}

#[tokio::test]
async fn alert_without_summary_is_rejected_with_400() {
    let standin = StandIn::start().await.unwrap();
    let body = json!({"integrationKey": "il1api123", "eventType": "ALERT"});
    let response = post_event(&client(), &standin.url(), &body).await;

    assert_eq!(response.status(), 400);
    let error = body_json(response).await;
    assert_eq!(error["status"], 400);
    assert_eq!(error["code"], "MISSING_SUMMARY");
    assert!(error["message"].as_str().unwrap().contains("summary"));
    assert_eq!(standin.requests()[0].status, 400);
    assert!(standin.events().is_empty());
}

#[tokio::test]
async fn invalid_event_fields_are_rejected_with_400_and_code() {
    let standin = StandIn::start().await.unwrap();
    let client = client();
    let cases = [
        (
            json!({"eventType": "ALERT", "summary": "s"}),
            "MISSING_INTEGRATION_KEY",
        ),
        (
            json!({"integrationKey": "k", "eventType": "alert", "summary": "s"}),
            "INVALID_EVENT_TYPE",
        ),
        (
            json!({"integrationKey": "k", "eventType": "RESOLVE", "priority": "URGENT"}),
            "INVALID_PRIORITY",
        ),
        (
            json!({"integrationKey": "k", "eventType": "RESOLVE", "severity": 0}),
            "INVALID_SEVERITY",
        ),
        (json!(["not", "an", "object"]), "INVALID_JSON"),
    ];
    for (body, code) in &cases {
        let response = post_event(&client, &standin.url(), body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(body_json(response).await["code"], *code, "{body}");
    }
    let response = client
        .post(format!("{}/api/events", standin.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(standin.events().is_empty());
}

#[tokio::test]
async fn source_paths_accept_the_key_from_the_path_and_apikey_alias() {
    let standin = StandIn::start().await.unwrap();
    let client = client();
    for path in [
        "/api/v1/events/kafka/kk1",
        "/api/v1/events/mqtt/kk1",
        "/api/v1/kafka/kk1",
        "/api/v1/mqtt/kk1",
    ] {
        let response = client
            .post(format!("{}{path}", standin.url()))
            .json(&json!({"eventType": "RESOLVE", "alertKey": "a"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{path}");
    }
    let aliased = json!({"apiKey": "old1", "eventType": "ACCEPT", "alertKey": "a"});
    assert_eq!(
        post_event(&client, &standin.url(), &aliased).await.status(),
        202
    );

    let keys: Vec<_> = standin
        .requests()
        .into_iter()
        .map(|r| r.key.unwrap())
        .collect();
    assert_eq!(keys, ["kk1", "kk1", "kk1", "kk1", "old1"]);
    assert_eq!(standin.events().len(), 5);
}

#[tokio::test]
async fn heartbeat_ping_head_and_legacy_get_answer_202() {
    let standin = StandIn::start().await.unwrap();
    let client = client();
    let base = standin.url();
    assert_eq!(
        client
            .head(format!("{base}/api/pings/hb1"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        client
            .get(format!("{base}/api/pings/hb1"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        client
            .get(format!("{base}/api/heartbeats/il1hbt1"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        client
            .get(format!("{base}/api/v1/heartbeats/il1hbt1"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );

    let seen: Vec<_> = standin
        .requests()
        .into_iter()
        .map(|r| (r.method, r.kind, r.key.unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "HEAD".to_owned(),
                RequestKind::HeartbeatPing,
                "hb1".to_owned()
            ),
            (
                "GET".to_owned(),
                RequestKind::HeartbeatPing,
                "hb1".to_owned()
            ),
            (
                "GET".to_owned(),
                RequestKind::HeartbeatLegacy,
                "il1hbt1".to_owned()
            ),
            (
                "GET".to_owned(),
                RequestKind::HeartbeatLegacy,
                "il1hbt1".to_owned()
            ),
        ]
    );
    assert!(standin.events().is_empty());
}

#[tokio::test]
async fn unknown_api_path_is_404_and_recorded_as_unknown() {
    let standin = StandIn::start().await.unwrap();
    let response = client()
        .get(format!("{}/api/alerts?x=1", standin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let r = &standin.requests()[0];
    assert_eq!(
        (r.kind, r.status, r.query.as_deref()),
        (RequestKind::Unknown, 404, Some("x=1"))
    );
}

fn seed_policy(standin: &StandIn) {
    standin.add_user(User {
        id: 7,
        email: "ada@example.com".into(),
    });
    standin.add_user(User {
        id: 8,
        email: "bob@example.com".into(),
    });
    standin.add_policy(Policy {
        id: 42,
        routing_key: "team-a".into(),
        levels: vec![
            Level {
                escalation_timeout: 0,
                user_ids: vec![1],
            },
            Level {
                escalation_timeout: 15,
                user_ids: vec![7],
            },
        ],
    });
}

#[tokio::test]
async fn policy_level_update_replaces_user_and_keeps_timeout() {
    let standin = StandIn::start().await.unwrap();
    seed_policy(&standin);
    let client = client();
    let base = standin.url();

    let user = client
        .post(format!("{base}/api/users/search-email"))
        .bearer_auth("user-api-key")
        .json(&json!({"email": "bob@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    assert_eq!(body_json(user).await["id"], 8);

    let policy = client
        .get(format!(
            "{base}/api/escalation-policies/resolve?routing-key=team-a"
        ))
        .bearer_auth("user-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(policy.status(), 200);
    let policy = body_json(policy).await;
    assert_eq!(policy["id"], 42);
    assert_eq!(policy["routingKey"], "team-a");
    assert_eq!(policy["escalationRules"][1]["escalationTimeout"], 15);
    assert_eq!(policy["escalationRules"][1]["users"][0]["id"], 7);

    let updated = client
        .put(format!("{base}/api/escalation-policies/42/levels/1"))
        .bearer_auth("user-api-key")
        .json(&json!({"escalationTimeout": 15, "users": [{"id": 8}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    assert_eq!(body_json(updated).await["users"][0]["id"], 8);

    let now = standin.policy(42).unwrap();
    assert_eq!(
        now.levels[1],
        Level {
            escalation_timeout: 15,
            user_ids: vec![8]
        }
    );
    assert_eq!(
        now.levels[0],
        Level {
            escalation_timeout: 0,
            user_ids: vec![1]
        }
    );
    let kinds: Vec<_> = standin.requests().iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::UserSearch,
            RequestKind::PolicyResolve,
            RequestKind::PolicyLevelUpdate
        ]
    );
    assert_eq!(standin.requests()[2].key.as_deref(), Some("user-api-key"));
}

#[tokio::test]
async fn policy_lookups_answer_404_and_missing_levels_400() {
    let standin = StandIn::start().await.unwrap();
    seed_policy(&standin);
    let client = client();
    let base = standin.url();
    let level = json!({"escalationTimeout": 5, "users": [{"id": 7}]});
    let status = |r: reqwest::Response| r.status().as_u16();

    let unknown_user = client
        .post(format!("{base}/api/users/search-email"))
        .bearer_auth("k")
        .json(&json!({"email": "nobody@example.com"}))
        .send()
        .await
        .unwrap();
    let unknown_route = client
        .get(format!(
            "{base}/api/escalation-policies/resolve?routing-key=nope"
        ))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    let unknown_policy = client
        .put(format!("{base}/api/escalation-policies/99/levels/0"))
        .bearer_auth("k")
        .json(&level)
        .send()
        .await
        .unwrap();
    let missing_level = client
        .put(format!("{base}/api/escalation-policies/42/levels/2"))
        .bearer_auth("k")
        .json(&level)
        .send()
        .await
        .unwrap();
    assert_eq!(
        [
            status(unknown_user),
            status(unknown_route),
            status(unknown_policy),
            status(missing_level)
        ],
        [404, 404, 404, 400]
    );
    assert_eq!(standin.policy(42).unwrap().levels.len(), 2);
}

#[tokio::test]
async fn policy_endpoints_require_a_single_bearer_api_key() {
    let behaviour = ilert_standin::Behaviour {
        api_key: Some("secret".into()),
        ..Default::default()
    };
    let standin = StandIn::start_with("127.0.0.1:0".parse().unwrap(), behaviour)
        .await
        .unwrap();
    seed_policy(&standin);
    let client = client();
    let url = format!(
        "{}/api/escalation-policies/resolve?routing-key=team-a",
        standin.url()
    );

    let none = client.get(&url).send().await.unwrap();
    let doubled = client
        .get(&url)
        .header("Authorization", "Bearer Bearer secret")
        .send()
        .await
        .unwrap();
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    let right = client.get(&url).bearer_auth("secret").send().await.unwrap();
    assert_eq!(
        [
            none.status(),
            doubled.status(),
            wrong.status(),
            right.status()
        ]
        .map(|s| s.as_u16()),
        [401, 401, 401, 200]
    );
}

#[tokio::test]
async fn keep_alive_connection_serves_consecutive_requests() {
    let standin = StandIn::start().await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(standin.addr())
        .await
        .unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET /api/pings/hb1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(
                stream.read(&mut byte).await.unwrap(),
                1,
                "connection closed early"
            );
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 202"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    assert_eq!(standin.wait_for_requests(3, WAIT).await.len(), 3);
}
