//! The stand-in misbehaves on request (scripts, rate limits, key errors, error rate, latency)
//! and can be driven over its control endpoints from another process.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::{WAIT, alert, body_json, client, post_event};
use ilert_standin::{Behaviour, RateLimit, RecordedRequest, RequestKind, Scripted, StandIn};
use serde_json::json;

fn statuses(requests: &[RecordedRequest]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn scripted_429_carries_retry_after_seconds() {
    let standin = StandIn::start().await.unwrap();
    standin.script([Scripted::RetryAfterSeconds {
        status: 429,
        seconds: 7,
    }]);
    let client = client();
    let body = alert("k1", "a", "s");

    let limited = post_event(&client, &standin.url(), &body).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(body_json(limited).await["status"], 429);
    // The script is used up: the next request gets the standing behaviour.
    assert_eq!(
        post_event(&client, &standin.url(), &body).await.status(),
        202
    );
    assert_eq!(statuses(&standin.requests()), [429, 202]);
    assert_eq!(standin.events().len(), 1);
}

#[tokio::test]
async fn scripted_retry_after_date_is_http_date() {
    let standin = StandIn::start().await.unwrap();
    standin.script([Scripted::RetryAfterDate {
        status: 503,
        seconds_from_now: 30,
    }]);
    let response = post_event(&client(), &standin.url(), &alert("k1", "a", "s")).await;

    assert_eq!(response.status(), 503);
    let value = response.headers()["retry-after"].to_str().unwrap();
    let at = httpdate::parse_http_date(value).unwrap();
    let ahead = at.duration_since(SystemTime::now()).unwrap();
    assert!(
        (Duration::from_secs(25)..=Duration::from_secs(31)).contains(&ahead),
        "{value}"
    );
}

#[tokio::test]
async fn scripted_entries_apply_in_order_to_any_endpoint() {
    let standin = StandIn::start().await.unwrap();
    standin.script([
        Scripted::Status(500),
        Scripted::Status(200),
        Scripted::Delay { ms: 10 },
    ]);
    let client = client();
    let base = standin.url();
    let ping = client
        .head(format!("{base}/api/pings/hb"))
        .send()
        .await
        .unwrap();
    // A scripted 2xx counts as accepted even though this body would be invalid.
    let unchecked = json!({"integrationKey": "k", "eventType": "ALERT"});
    let forced = post_event(&client, &base, &unchecked).await;
    let delayed = post_event(&client, &base, &unchecked).await;
    assert_eq!(
        [ping.status(), forced.status(), delayed.status()].map(|s| s.as_u16()),
        [500, 200, 400]
    );
    assert!(forced.headers().contains_key("correlation-id"));
    assert_eq!(standin.events(), vec![unchecked]);
}

#[tokio::test]
async fn scripted_drop_closes_connection_without_response() {
    let standin = StandIn::start().await.unwrap();
    standin.script([Scripted::Drop]);
    let client = client();
    let body = alert("k1", "a", "s");

    let dropped = client
        .post(format!("{}/api/events", standin.url()))
        .json(&body)
        .send()
        .await;
    let error = dropped.expect_err("a dropped connection must not produce a response");
    assert!(!error.is_timeout(), "{error:?}");
    assert_eq!(
        post_event(&client, &standin.url(), &body).await.status(),
        202
    );

    let requests = standin.requests();
    assert_eq!(statuses(&requests), [0, 202]);
    assert_eq!(requests[0].json.as_ref(), Some(&body));
    assert_eq!(standin.events().len(), 1);
}

#[tokio::test]
async fn scripted_delay_provokes_client_timeout() {
    let standin = StandIn::start().await.unwrap();
    standin.script([Scripted::Delay { ms: 1_000 }]);
    let impatient = testkit::http_client()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let result = post_event_result(&impatient, &standin.url()).await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(
        post_event_result(&impatient, &standin.url())
            .await
            .unwrap()
            .status(),
        202
    );
}

async fn post_event_result(
    client: &reqwest::Client,
    base: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/api/events"))
        .json(&alert("k1", "a", "s"))
        .send()
        .await
}

#[tokio::test]
async fn rate_limit_answers_429_after_budget_per_key_and_other_keys_unaffected() {
    let behaviour = Behaviour {
        rate_limit: Some(RateLimit {
            per_key: 3,
            window_ms: 60_000,
        }),
        ..Behaviour::default()
    };
    let standin = StandIn::start_with("127.0.0.1:0".parse().unwrap(), behaviour)
        .await
        .unwrap();
    let client = client();
    let base = standin.url();
    for _ in 0..3 {
        assert_eq!(
            post_event(&client, &base, &alert("busy", "a", "s"))
                .await
                .status(),
            202
        );
    }
    let limited = post_event(&client, &base, &alert("busy", "a", "s")).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        post_event(&client, &base, &alert("quiet", "a", "s"))
            .await
            .status(),
        202
    );

    standin.clear();
    assert_eq!(
        post_event(&client, &base, &alert("busy", "a", "s"))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn rate_limit_window_reopens_after_it_ends() {
    let behaviour = Behaviour {
        rate_limit: Some(RateLimit {
            per_key: 1,
            window_ms: 300,
        }),
        ..Behaviour::default()
    };
    let standin = StandIn::start_with("127.0.0.1:0".parse().unwrap(), behaviour)
        .await
        .unwrap();
    let client = client();
    let ping = || client.get(format!("{}/api/pings/hb", standin.url())).send();
    assert_eq!(ping().await.unwrap().status(), 202);
    let limited = ping().await.unwrap();
    assert_eq!(
        (limited.status().as_u16(), &limited.headers()["retry-after"]),
        (429, &"1".parse().unwrap())
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(ping().await.unwrap().status(), 202);
}

#[tokio::test]
async fn key_status_answers_404_for_chosen_key() {
    let behaviour = Behaviour {
        key_status: HashMap::from([("gone".to_owned(), 404)]),
        ..Behaviour::default()
    };
    let standin = StandIn::start_with("127.0.0.1:0".parse().unwrap(), behaviour)
        .await
        .unwrap();
    let client = client();
    let gone = post_event(&client, &standin.url(), &alert("gone", "a", "s")).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(body_json(gone).await["status"], 404);
    assert_eq!(
        post_event(&client, &standin.url(), &alert("fine", "a", "s"))
            .await
            .status(),
        202
    );
    assert_eq!(standin.events().len(), 1);
}

#[tokio::test]
async fn full_error_rate_answers_503_and_latency_delays_answers() {
    let standin = StandIn::start().await.unwrap();
    let client = client();
    standin.set_behaviour(Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    });
    for _ in 0..5 {
        assert_eq!(
            post_event(&client, &standin.url(), &alert("k", "a", "s"))
                .await
                .status(),
            503
        );
    }
    standin.set_behaviour(Behaviour {
        latency_ms: 150,
        ..Behaviour::default()
    });
    let started = Instant::now();
    assert_eq!(
        post_event(&client, &standin.url(), &alert("k", "a", "s"))
            .await
            .status(),
        202
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn control_endpoints_set_behaviour_and_list_requests() {
    let standin = StandIn::start().await.unwrap();
    let client = client();
    let base = standin.url();
    let control = |path: &str| format!("{base}/__standin/{path}");

    let put = client
        .put(control("behaviour"))
        .json(&json!({"key_status": {"bad": 400}}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let script = client
        .post(control("script"))
        .json(&json!([{"Status": 503}]))
        .send()
        .await
        .unwrap();
    assert!(script.status().is_success());
    client
        .post(control("users"))
        .json(&json!({"id": 3, "email": "c@example.com"}))
        .send()
        .await
        .unwrap();
    let policy = json!({"id": 5, "routing_key": "r", "levels": [{"escalation_timeout": 10, "user_ids": [3]}]});
    client
        .post(control("policies"))
        .json(&policy)
        .send()
        .await
        .unwrap();

    let first = post_event(&client, &base, &alert("ok", "a", "s")).await;
    let bad = post_event(&client, &base, &alert("bad", "a", "s")).await;
    let ok = post_event(&client, &base, &alert("ok", "a", "s")).await;
    assert_eq!(
        [first.status(), bad.status(), ok.status()].map(|s| s.as_u16()),
        [503, 400, 202]
    );

    let listed: Vec<RecordedRequest> = client
        .get(control("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(statuses(&listed), [503, 400, 202]);
    assert!(listed.iter().all(|r| r.kind == RequestKind::Event));
    let events: Vec<serde_json::Value> = client
        .get(control("events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events, vec![alert("ok", "a", "s")]);
    let stored: serde_json::Value = client
        .get(control("policies/5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored, policy);
    assert_eq!(
        client
            .get(control("policies/6"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    client.delete(control("requests")).send().await.unwrap();
    assert!(standin.requests().is_empty());
}

#[tokio::test]
async fn wait_for_requests_returns_when_count_reached() {
    let standin = StandIn::start().await.unwrap();
    let base = standin.url();
    let sender = tokio::spawn(async move {
        let client = client();
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            post_event(&client, &base, &alert("k", &format!("a{i}"), "s")).await;
        }
    });
    let seen = standin.wait_for_requests(3, WAIT).await;
    assert_eq!(seen.len(), 3);
    sender.await.unwrap();

    // At the deadline it returns what it has instead of failing.
    let partial = standin
        .wait_for_requests(4, Duration::from_millis(100))
        .await;
    assert_eq!(partial.len(), 3);
    let alert_keys: Vec<_> = standin
        .events()
        .iter()
        .map(|e| e["alertKey"].clone())
        .collect();
    assert_eq!(alert_keys, [json!("a0"), json!("a1"), json!("a2")]);
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let standin = StandIn::start().await.unwrap();
    let addr = standin.addr();
    standin.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
