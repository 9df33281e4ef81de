//! The soak's steady traffic: one paced sender per source (Kafka, MQTT direct, MQTT
//! buffered, the HTTP proxy), each sending message `n` at `n / rate` seconds until told to
//! stop, and counting what it sent.
//!
//! Message `n` of a source is for alert key `n % keys`, on integration key
//! `alert key % integration_keys` of that source (so no two sources share a rate-limit
//! budget), and alternates ALERT and RESOLVE per alert key. Every 500th message is
//! malformed (not JSON for the brokers, an ALERT without a summary for the proxy, which
//! answers 400) and every 1500th is for [`REFUSED_KEY`], which the stand-in answers with
//! 400: both must end as dead letters, the valid ones at the stand-in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// The integration key the stand-in refuses (400): a permanent error, so a dead letter.
pub const REFUSED_KEY: &str = "il1api-soak-refused";

/// Where a message goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Source {
    Kafka,
    MqttDirect,
    MqttBuffered,
    Proxy,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Kafka,
        Source::MqttDirect,
        Source::MqttBuffered,
        Source::Proxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Kafka => "kafka",
            Source::MqttDirect => "mqtt-direct",
            Source::MqttBuffered => "mqtt-buffered",
            Source::Proxy => "proxy",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What message `n` of a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Valid,
    Malformed,
    Refused,
}

pub fn kind(n: u64) -> Kind {
    if n % 500 == 499 {
        Kind::Malformed
    } else if n % 1500 == 749 {
        Kind::Refused
    } else {
        Kind::Valid
    }
}

/// The shape of every source's stream.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Shape {
    /// Messages per second per source.
    pub rate: f64,
    /// Alert keys per source.
    pub keys: u64,
    /// Integration keys per source.
    pub integration_keys: u64,
}

impl Shape {
    /// Record key (the alert key) and payload of message `n` of `source`.
    pub fn message(&self, source: Source, n: u64) -> (String, Vec<u8>) {
        let src = source.name();
        let key = n % self.keys.max(1);
        let alert_key = format!("{src}-{key}");
        let integration_key = match kind(n) {
            Kind::Refused => REFUSED_KEY.to_string(),
            _ => format!("il1api-soak-{src}-{}", key % self.integration_keys.max(1)),
        };
        let event_type = if (n / self.keys.max(1)).is_multiple_of(2) {
            "ALERT"
        } else {
            "RESOLVE"
        };
        let mut body = json!({
            "integrationKey": integration_key,
            "eventType": event_type,
            "summary": format!("soak {src} {n}"),
            "alertKey": alert_key,
            "customDetails": {"soak": src, "id": n}
        });
        if kind(n) == Kind::Malformed {
            if source != Source::Proxy {
                return (alert_key, format!("soak: not json {n}").into_bytes());
            }
            body["eventType"] = json!("ALERT");
            body.as_object_mut().map(|o| o.remove("summary"));
        }
        (alert_key, body.to_string().into_bytes())
    }
}

/// What one source's sender did.
#[derive(Default)]
pub struct Counters {
    /// Messages sent (or, for the proxy, answered 202 or 400), of every kind.
    pub sent: AtomicU64,
    /// The highest message number tried, plus one.
    pub next: AtomicU64,
    /// Valid proxy events given up after every attempt was refused (none expected).
    pub given_up: AtomicU64,
    /// Non-202 answers and send errors that were retried.
    pub retried: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Valid messages among the first `next` (what must arrive at the stand-in).
pub fn valid_below(next: u64) -> impl Iterator<Item = u64> {
    (0..next).filter(|n| kind(*n) == Kind::Valid)
}

/// Dead letters expected among the first `next` messages of `source`.
pub fn dead_letters_below(source: Source, next: u64) -> u64 {
    (0..next)
        .filter(|n| match kind(*n) {
            Kind::Valid => false,
            Kind::Refused => true,
            Kind::Malformed => source != Source::Proxy,
        })
        .count() as u64
}

/// Calls `send(n)` for n = 0, 1, ... at `rate` per second until `stop` turns true.
pub async fn paced<F, Fut>(
    rate: f64,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    mut send: F,
) -> Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut ticks = tokio::time::interval_at(Instant::now(), period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for n in 0.. {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        counters.next.store(n + 1, Ordering::Relaxed);
        send(n).await?;
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Posts `body` to the proxy until it answers 202 (or 400 for a malformed one); `Ok(false)`
/// when every attempt was refused otherwise.
pub async fn post_event(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    malformed: bool,
    counters: &Counters,
) -> Result<bool> {
    for _ in 0..50 {
        let answer = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match answer.map(|r| r.status().as_u16()) {
            Ok(202) if !malformed => return Ok(true),
            Ok(400) if malformed => return Ok(true),
            Ok(status) if malformed && status == 202 => {
                return Err(anyhow!("the proxy accepted a malformed event"));
            }
            _ => {
                counters.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_spread_and_do_not_overlap() {
        let kinds: Vec<Kind> = (0..3000).map(kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Malformed).count(), 6);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Refused).count(), 2);
        assert_eq!(dead_letters_below(Source::Kafka, 3000), 8);
        assert_eq!(dead_letters_below(Source::Proxy, 3000), 2);
        assert_eq!(valid_below(3000).count(), 2992);
    }

    #[test]
    fn messages_carry_source_and_number() {
        let shape = Shape {
            rate: 50.0,
            keys: 300,
            integration_keys: 100,
        };
        let (key, payload) = shape.message(Source::MqttDirect, 601);
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(key, "mqtt-direct-1");
        assert_eq!(json["integrationKey"], "il1api-soak-mqtt-direct-1");
        assert_eq!(json["eventType"], "ALERT");
        assert_eq!(json["customDetails"]["id"], 601);
        let (_, resolve) = shape.message(Source::Kafka, 301);
        assert!(String::from_utf8(resolve).unwrap().contains("RESOLVE"));
        let (_, broken) = shape.message(Source::Kafka, 499);
        assert!(serde_json::from_slice::<serde_json::Value>(&broken).is_err());
        let (_, no_summary) = shape.message(Source::Proxy, 499);
        let json: serde_json::Value = serde_json::from_slice(&no_summary).unwrap();
        assert!(json.get("summary").is_none());
        let (_, refused) = shape.message(Source::Proxy, 749);
        assert!(String::from_utf8(refused).unwrap().contains(REFUSED_KEY));
    }
}
