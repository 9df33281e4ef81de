//! One benchmark result row, computed from what the stand-in received.

use std::collections::HashMap;

use ilert_standin::RecordedRequest;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub messages: usize,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub peak_rss_mb: f64,
    pub cpu_seconds: f64,
    pub status_429: usize,
    pub duplicates: usize,
    pub missing: usize,
    pub order_violations: usize,
}

/// Payload fields the benchmark events carry: `customDetails.id`, `.key`, `.seq`, `.sentMs`.
pub fn analyse(scenario: &str, expected: usize, requests: &[RecordedRequest]) -> Row {
    let accepted: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| r.status == 202 && r.json.is_some())
        .collect();
    let status_429 = requests.iter().filter(|r| r.status == 429).count();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    let mut order_violations = 0;
    let mut latencies = Vec::new();
    for r in &accepted {
        let Some(details) = r.json.as_ref().and_then(|j| j.get("customDetails")) else {
            continue;
        };
        let id = details["id"].as_u64().unwrap_or(u64::MAX);
        let first = {
            let count = seen.entry(id).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            let key = details["key"].as_u64().unwrap_or(0);
            let seq = details["seq"].as_u64().unwrap_or(0);
            if let Some(previous) = last_seq.insert(key, seq)
                && previous > seq
            {
                order_violations += 1;
            }
            if let Some(sent) = details["sentMs"].as_u64() {
                latencies.push(r.received_at_ms.saturating_sub(sent));
            }
        }
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index.min(latencies.len() - 1)]
    };
    let first = accepted.iter().map(|r| r.received_at_ms).min().unwrap_or(0);
    let last = accepted.iter().map(|r| r.received_at_ms).max().unwrap_or(0);
    let seconds = (last.saturating_sub(first)) as f64 / 1000.0;
    let unique = seen.len();
    Row {
        scenario: scenario.to_string(),
        messages: unique,
        seconds,
        messages_per_second: if seconds > 0.0 {
            unique as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        peak_rss_mb: 0.0,
        cpu_seconds: 0.0,
        status_429,
        duplicates: accepted.len() - unique,
        missing: expected.saturating_sub(unique),
        order_violations,
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:>8} {:>8} {:>10} {:>7} {:>7} {:>8} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "scenario",
        "messages",
        "seconds",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "RSS MB",
        "CPU s",
        "429s",
        "dups",
        "missing",
        "order"
    );
    for r in rows {
        println!(
            "{:<22} {:>8} {:>8.2} {:>10.0} {:>7} {:>7} {:>8.1} {:>7.2} {:>6} {:>6} {:>7} {:>6}",
            r.scenario,
            r.messages,
            r.seconds,
            r.messages_per_second,
            r.p50_ms,
            r.p99_ms,
            r.peak_rss_mb,
            r.cpu_seconds,
            r.status_429,
            r.duplicates,
            r.missing,
            r.order_violations
        );
    }
}
