//! One benchmark result row, computed from what the stand-in received, and the table.
//!
//! Definitions (the same for every scenario):
//! - `messages`: distinct benchmark events the stand-in accepted (202); warm-up events and
//!   duplicates are not counted.
//! - `seconds`: from the arrival of the first accepted event to the answer of the last one
//!   (its arrival plus the latency the stand-in adds), so that a perfect agent delivering
//!   `n` events serially per key at 50 ms measures exactly `n / keys * 50 ms`.
//! - `p50`/`p99`: end-to-end latency of each event's first accepted arrival, from the send
//!   time in the payload (`customDetails.sentMs`, stamped when the bench handed the event
//!   to the broker or the proxy) to the stand-in's receipt; the stand-in's added latency is
//!   not included. In backlog scenarios this is mostly time spent waiting in the backlog.
//! - `order violations`: first arrivals whose per-key sequence number is lower than an
//!   earlier first arrival of the same key.
//! - `429s`: answers with status 429; `requests` counts every benchmark event request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ilert_standin::RecordedRequest;
use serde::Serialize;

use crate::event::bench_details;

#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub scenario: String,
    /// Why the scenario did not run (it then counts nothing as missing).
    pub skipped: Option<String>,
    /// Why the scenario failed to run to the end (the suite then fails).
    pub error: Option<String>,
    pub expected: usize,
    pub messages: usize,
    pub seconds: f64,
    pub messages_per_second: f64,
    /// `messages_per_second` divided by the `ceiling` row's (when the ceiling ran).
    pub ratio_to_ceiling: Option<f64>,
    pub p50_ms: u64,
    pub p99_ms: u64,
    /// Agent peak resident memory (VmHWM); none for the ceiling, which has no agent.
    pub peak_rss_mb: Option<f64>,
    /// Agent resident memory (VmRSS) once every event had arrived.
    pub rss_at_end_mb: Option<f64>,
    /// Agent resident memory when 100,000 events had arrived (backlog).
    pub rss_after_100k_mb: Option<f64>,
    /// Agent user + system CPU seconds over its whole run.
    pub cpu_seconds: Option<f64>,
    pub requests: usize,
    pub status_429: usize,
    pub duplicates: usize,
    pub missing: usize,
    pub order_violations: usize,
    /// The scenario's own theoretical limit in messages/s, where one applies (per-key
    /// order at the stand-in's latency, or the MQTT broker's in-flight window).
    pub bound_messages_per_second: Option<f64>,
    /// Latency the agent adds, per event: its arrival at the stand-in minus its arrival at
    /// a bare consumer reading the same topic (latency-steady).
    pub added_p50_ms: Option<i64>,
    pub added_p99_ms: Option<i64>,
    /// Requests being answered by the stand-in at once (arrived less than its added latency
    /// ago), on average over the arrivals and at most: the concurrency the sender reached.
    /// Only with added latency.
    pub avg_in_service: Option<f64>,
    pub max_in_service: Option<usize>,
    /// The shortest drain time the rate limit allows (kafka-ratelimited).
    pub theoretical_min_seconds: Option<f64>,
    /// The machine's 1-minute load average when the scenario started.
    pub load_average_1m: Option<f64>,
    pub notes: Vec<String>,
}

impl Row {
    pub fn skipped(scenario: &str, reason: String) -> Row {
        Row {
            scenario: scenario.to_string(),
            skipped: Some(reason),
            ..Row::default()
        }
    }

    pub fn failed(scenario: &str, error: String) -> Row {
        Row {
            scenario: scenario.to_string(),
            error: Some(error),
            ..Row::default()
        }
    }

    /// Whether the row has figures (it ran to the end).
    pub fn measured(&self) -> bool {
        self.skipped.is_none() && self.error.is_none()
    }

    /// 429s as a percentage of all benchmark event requests.
    pub fn status_429_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.status_429 as f64 * 100.0 / self.requests as f64
        }
    }
}

/// Computes a row from the stand-in's request log; `added_latency_ms` is the stand-in's.
pub fn analyse(
    scenario: &str,
    expected: usize,
    requests: &[RecordedRequest],
    added_latency_ms: u64,
) -> Row {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    let mut order_violations = 0;
    let mut latencies = Vec::new();
    let (mut total, mut status_429, mut accepted) = (0, 0, 0);
    let (mut first, mut last) = (u64::MAX, 0);
    for r in requests {
        let Some(details) = bench_details(r.json.as_ref()) else {
            continue;
        };
        total += 1;
        if r.status == 429 {
            status_429 += 1;
        }
        if !(200..300).contains(&r.status) {
            continue;
        }
        let Some(id) = details["id"].as_u64().filter(|id| *id < expected as u64) else {
            continue;
        };
        accepted += 1;
        first = first.min(r.received_at_ms);
        last = last.max(r.received_at_ms);
        let count = seen.entry(id).or_default();
        *count += 1;
        if *count > 1 {
            continue;
        }
        let key = details["key"].as_u64().unwrap_or(u64::MAX);
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
    latencies.sort_unstable();
    let (avg_in_service, max_in_service) = in_service(requests, added_latency_ms).unzip();
    let unique = seen.len();
    let seconds = if unique == 0 {
        0.0
    } else {
        (last.saturating_sub(first) + added_latency_ms) as f64 / 1000.0
    };
    Row {
        scenario: scenario.to_string(),
        expected,
        messages: unique,
        seconds,
        messages_per_second: if seconds > 0.0 {
            unique as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        requests: total,
        status_429,
        duplicates: accepted - unique,
        missing: expected.saturating_sub(unique),
        order_violations,
        avg_in_service,
        max_in_service,
        ..Row::default()
    }
}

/// Average and maximum number of benchmark requests the stand-in was answering at once
/// (each takes `latency_ms` from its arrival), sampled at every arrival; `None` without
/// added latency.
fn in_service(requests: &[RecordedRequest], latency_ms: u64) -> Option<(f64, usize)> {
    if latency_ms == 0 {
        return None;
    }
    let mut arrivals: Vec<u64> = requests
        .iter()
        .filter(|r| bench_details(r.json.as_ref()).is_some())
        .map(|r| r.received_at_ms)
        .collect();
    arrivals.sort_unstable();
    if arrivals.is_empty() {
        return None;
    }
    let (mut start, mut total, mut max) = (0, 0usize, 0usize);
    for (i, at) in arrivals.iter().enumerate() {
        while arrivals[start] + latency_ms <= *at {
            start += 1;
        }
        let busy = i + 1 - start;
        total += busy;
        max = max.max(busy);
    }
    Some((total as f64 / arrivals.len() as f64, max))
}

/// Where [`dump`] writes the arrival logs (`--dump-dir`); unset: nowhere.
static DUMP_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes [`dump`] write each scenario's arrival log into `dir`.
pub fn set_dump_dir(dir: PathBuf) {
    let _ = DUMP_DIR.set(dir);
}

/// Writes `<dump dir>/<scenario>.csv`: one line per benchmark event request as the
/// stand-in recorded it (arrival ms, status, id, key, seq, sent ms), for looking into a
/// figure afterwards. Does nothing without a dump dir; a failure is reported, not fatal.
pub fn dump(scenario: &str, requests: &[RecordedRequest]) {
    let Some(dir) = DUMP_DIR.get() else {
        return;
    };
    let mut text = String::from("received_ms,status,id,key,seq,sent_ms\n");
    for r in requests {
        if let Some(d) = bench_details(r.json.as_ref()) {
            let field = |name: &str| d[name].as_u64().map_or(String::new(), |v| v.to_string());
            text.push_str(&format!(
                "{},{},{},{},{},{}\n",
                r.received_at_ms,
                r.status,
                field("id"),
                field("key"),
                field("seq"),
                field("sentMs")
            ));
        }
    }
    write_dump(dir, &format!("{scenario}.csv"), &text);
}

/// Writes `<dump dir>/<file>` with `text`, if there is a dump dir.
pub fn dump_text(file: &str, text: &str) {
    if let Some(dir) = DUMP_DIR.get() {
        write_dump(dir, file, text);
    }
}

fn write_dump(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text));
    if let Err(error) = written {
        eprintln!("cannot write {}: {error}", path.display());
    }
}

/// Nearest-rank percentile of sorted values (default, i.e. 0, when empty).
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Fills in every row's ratio to the ceiling row's messages/s.
pub fn set_ratios(rows: &mut [Row]) {
    let ceiling = rows
        .iter()
        .find(|r| r.scenario == "ceiling" && r.measured())
        .map(|r| r.messages_per_second)
        .filter(|v| *v > 0.0);
    for row in rows.iter_mut().filter(|r| r.measured()) {
        row.ratio_to_ceiling = ceiling.map(|c| row.messages_per_second / c);
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<20} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "scenario",
        "messages",
        "seconds",
        "msg/s",
        "ratio",
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
        if let Some(reason) = &r.skipped {
            println!("{:<20} skipped: {reason}", r.scenario);
            continue;
        }
        if let Some(error) = &r.error {
            let first = error.lines().next().unwrap_or("");
            println!("{:<20} FAILED: {first}", r.scenario);
            continue;
        }
        println!(
            "{:<20} {:>8} {:>8.2} {:>8.0} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6}",
            r.scenario,
            r.messages,
            r.seconds,
            r.messages_per_second,
            opt(r.ratio_to_ceiling, 2),
            r.p50_ms,
            r.p99_ms,
            opt(r.peak_rss_mb, 1),
            opt(r.cpu_seconds, 2),
            r.status_429,
            r.duplicates,
            r.missing,
            r.order_violations
        );
    }
    for r in rows {
        for note in &r.notes {
            println!("  {}: {note}", r.scenario);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Stream;
    use ilert_standin::RequestKind;

    fn request(id: usize, status: u16, at: u64) -> RecordedRequest {
        let (_, body) = Stream::keys(2).event(id);
        let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["customDetails"]["sentMs"] = serde_json::json!(at - 5);
        RecordedRequest {
            seq: 0,
            received_at_ms: at,
            method: "POST".into(),
            path: "/api/events".into(),
            query: None,
            headers: vec![],
            body: String::new(),
            json: Some(json),
            key: None,
            kind: RequestKind::Event,
            status,
        }
    }

    #[test]
    fn requests_in_service_overlap_for_the_added_latency() {
        // Arrivals at 0, 10, 20, 100 with 50 ms each: 1, 2, 3, then 1 in service.
        let log: Vec<_> = [0, 10, 20, 100]
            .iter()
            .enumerate()
            .map(|(id, at)| request(id, 202, 1000 + at))
            .collect();
        let (avg, max) = in_service(&log, 50).unwrap();
        assert_eq!(max, 3);
        assert!((avg - 7.0 / 4.0).abs() < 1e-9, "{avg}");
        assert!(in_service(&log, 0).is_none());
    }

    #[test]
    fn ratios_are_to_the_ceiling_row() {
        let mut rows = vec![
            Row {
                scenario: "ceiling".into(),
                messages_per_second: 20_000.0,
                ..Row::default()
            },
            Row {
                scenario: "kafka-0ms".into(),
                messages_per_second: 15_000.0,
                ..Row::default()
            },
            Row::skipped("proxy-50clients", "not here".into()),
        ];
        set_ratios(&mut rows);
        assert_eq!(rows[1].ratio_to_ceiling, Some(0.75));
        assert_eq!(rows[2].ratio_to_ceiling, None);
    }

    #[test]
    fn counts_duplicates_missing_429s_and_order() {
        // Key 0 gets ids 0, 2, 4 (seq 0, 1, 2); seq 2 arrives before seq 1.
        let log = vec![
            request(0, 202, 1000),
            request(4, 202, 1010),
            request(2, 429, 1020),
            request(2, 202, 1030),
            request(0, 202, 1040),
            request(1, 202, 2000),
        ];
        let row = analyse("t", 7, &log, 50);
        assert_eq!(row.messages, 4);
        assert_eq!(row.duplicates, 1);
        assert_eq!(row.missing, 3);
        assert_eq!(row.status_429, 1);
        assert_eq!(row.requests, 6);
        assert_eq!(row.order_violations, 1);
        assert_eq!(row.p50_ms, 5);
        assert!((row.seconds - 1.05).abs() < 1e-9, "{}", row.seconds);
    }
}
