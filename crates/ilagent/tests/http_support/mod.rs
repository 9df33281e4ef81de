//! Test equipment for the HTTP proxy and the operations endpoints: an agent with `-p` or
//! `--metrics_port` on a port of its own, an HTTP client, the `ilagent queue` command, and
//! a reader for Prometheus text.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Agent, eventually};
#[allow(unused_imports)] // each test binary uses some of them
pub use crate::common::{queue_command, queue_stat, wait_for_stat};

/// Generous: CI machines are slow; tests wait for conditions, never for time.
pub const WAIT: Duration = Duration::from_secs(60);

/// An agent whose ilert is `ilert_url`, with the SQLite file `db`, serving on `port`;
/// `args` follow `daemon`.
pub fn start_agent(ilert_url: &str, db: &Path, args: &[&str]) -> Agent {
    let db = db.display().to_string();
    let mut all = vec!["-f", db.as_str(), "daemon", "-vv"];
    all.extend_from_slice(args);
    Agent::start(
        &all,
        &[
            ("ILERT_API_URL", ilert_url),
            ("ILAGENT_ILERT_BEAT_URL", ilert_url),
        ],
    )
}

/// An agent running the proxy on `port` (loopback only).
pub fn start_proxy(ilert_url: &str, db: &Path, port: u16, extra: &[&str]) -> Agent {
    let port = port.to_string();
    let mut args = vec!["-p", port.as_str(), "--http_bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    start_agent(ilert_url, db, &args)
}

pub fn client() -> reqwest::Client {
    testkit::http_client()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Waits until the agent answers `/health` with 200.
pub async fn wait_up(agent: &Agent, port: u16) {
    let client = client();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(response) = client.get(url(port, "/health")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the agent did not come up on {port}; log:\n{}", agent.log());
}

/// `{"integrationKey": "il1api-proxy", "eventType": "ALERT", "summary": "…", "alertKey": "key-K",
/// "customDetails": {"seq": S}}`.
pub fn event(key: usize, seq: usize) -> Value {
    json!({
        "integrationKey": "il1api-proxy",
        "eventType": "ALERT",
        "summary": format!("event {seq} of key {key}"),
        "alertKey": format!("key-{key}"),
        "customDetails": { "seq": seq },
    })
}

/// Posts `body` as JSON to `/api/events`: the status, the `Retry-After` header and the
/// JSON answer.
pub async fn post_with_retry_after(
    client: &reqwest::Client,
    port: u16,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let response = client
        .post(url(port, "/api/events"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Posts `body` as JSON to `/api/events`; returns the status and the JSON answer.
pub async fn post_event(client: &reqwest::Client, port: u16, body: &Value) -> (u16, Value) {
    let response = client
        .post(url(port, "/api/events"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The events the stand-in accepted, as (alertKey, seq).
pub fn arrivals(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["alertKey"].as_str().unwrap_or_default().to_string(),
                e["customDetails"]["seq"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Every key got exactly `0..per_key`, in that order.
pub fn assert_each_once_in_order(events: &[Value], keys: usize, per_key: usize, log: &str) {
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, seq) in arrivals(events) {
        by_key.entry(key).or_default().push(seq);
    }
    assert_eq!(by_key.len(), keys, "keys that arrived; log:\n{log}");
    let expected: Vec<u64> = (0..per_key as u64).collect();
    for (key, seqs) in &by_key {
        assert_eq!(seqs, &expected, "arrivals of {key}; log:\n{log}");
    }
}

/// Waits until the stand-in accepted at least `n` events.
pub async fn wait_for_events(
    stand_in: &ilert_standin::StandIn,
    n: usize,
    timeout: Duration,
) -> bool {
    eventually(timeout, || stand_in.events().len() >= n).await
}

/// `GET /ready`: the status and the JSON report.
pub async fn ready(port: u16) -> (u16, Value) {
    match client().get(url(port, "/ready")).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// The component named `name` in a `/ready` report.
pub fn component<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Waits until `/ready` answers `status`; returns the last report.
pub async fn wait_ready_status(port: u16, status: u16) -> (bool, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (now, report) = ready(port).await;
        if now == status || tokio::time::Instant::now() >= deadline {
            return (now == status, report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the text exposition format strictly enough that a malformed page fails: every
/// line is blank, a `# HELP`/`# TYPE` comment, or `name{label="value",…} number`; every
/// sample belongs to a family announced by `# TYPE`.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut families: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next()) {
                (Some("TYPE"), Some(name)) => {
                    let kind = parts.next().unwrap_or_default();
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(format!("unknown type in `{line}`"));
                    }
                    families.push(name.to_string());
                }
                (Some("HELP"), Some(_)) => {}
                _ => return Err(format!("bad comment `{line}`")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value in `{line}`"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .map_err(|_| format!("bad value in `{line}`"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels in `{line}`"))?;
                (
                    name,
                    parse_labels(body).ok_or_else(|| format!("bad labels in `{line}`"))?,
                )
            }
            None => (series, Vec::new()),
        };
        let valid_name = name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if name.is_empty() || !valid_name {
            return Err(format!("bad metric name in `{line}`"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| families.iter().any(|f| f == base))
            .unwrap_or(name);
        if !families.iter().any(|f| f == family) {
            return Err(format!("`{name}` has no # TYPE line"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_labels(body: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Some(labels)
}

/// The value of the sample `name` whose labels include all of `labels` (0 when absent).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Scrapes and parses `/metrics`.
pub async fn scrape(port: u16) -> Vec<Sample> {
    let text = client()
        .get(url(port, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
