//! Helpers shared by the stand-in's integration tests: an HTTP client that ignores proxy
//! settings from the environment, and event bodies.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(5);

pub fn client() -> reqwest::Client {
    testkit::http_client()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub fn alert(key: &str, alert_key: &str, summary: &str) -> Value {
    json!({
        "integrationKey": key,
        "eventType": "ALERT",
        "alertKey": alert_key,
        "summary": summary,
        "priority": "HIGH",
        "severity": 2,
    })
}

pub async fn post_event(client: &reqwest::Client, base: &str, body: &Value) -> reqwest::Response {
    client
        .post(format!("{base}/api/events"))
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn body_json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}
