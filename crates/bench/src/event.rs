//! The events every scenario sends, and how to read them back at the stand-in.
//!
//! Message `id` belongs to alert key `id % keys` and is that key's `id / keys`-th event, so
//! producing ids in ascending order produces every key's events in order. The payload
//! carries the key, the per-key sequence number (for the order check) and the send time
//! (`customDetails.sentMs`, for end-to-end latency). Warm-up events, sent only to find out
//! that the agent is ready, are marked `customDetails.warmup` and left out of every count.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The integration key of every scenario that is not about per-integration-key limits.
pub const INTEGRATION_KEY: &str = "il1api-bench";

/// Unix epoch milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Alert key `key` belongs to integration key number `key % integration_keys`; with one
/// integration key that is [`INTEGRATION_KEY`].
pub fn integration_key(key: usize, integration_keys: usize) -> String {
    if integration_keys <= 1 {
        INTEGRATION_KEY.to_string()
    } else {
        format!("{INTEGRATION_KEY}-{}", key % integration_keys)
    }
}

/// The shape of a scenario's stream: how many alert keys, over how many integration keys.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub keys: usize,
    pub integration_keys: usize,
}

impl Stream {
    /// 100 alert keys on one integration key: the shape of every throughput scenario.
    pub const fn keys(keys: usize) -> Self {
        Stream {
            keys,
            integration_keys: 1,
        }
    }

    /// Record key (Kafka partitioning; keeps one alert key on one partition) and payload of
    /// message `id`, stamped with the current time.
    pub fn event(&self, id: usize) -> (String, Vec<u8>) {
        let keys = self.keys.max(1);
        let (key, seq) = (id % keys, id / keys);
        let payload = json!({
            "integrationKey": integration_key(key, self.integration_keys),
            "eventType": "ALERT",
            "summary": format!("bench event {id}"),
            "alertKey": format!("key-{key}"),
            "customDetails": {"id": id, "key": key, "seq": seq, "sentMs": now_ms()}
        });
        (format!("key-{key}"), payload.to_string().into_bytes())
    }
}

/// A warm-up event (number `n`): delivered like any other, counted nowhere.
pub fn warmup_event(n: usize) -> Vec<u8> {
    json!({
        "integrationKey": INTEGRATION_KEY,
        "eventType": "ALERT",
        "summary": format!("bench warm-up {n}"),
        "alertKey": "warmup",
        "customDetails": {"warmup": true, "n": n}
    })
    .to_string()
    .into_bytes()
}

/// The `customDetails` of a benchmark event (not a warm-up one) in a request body.
pub fn bench_details(json: Option<&Value>) -> Option<&Value> {
    let details = json?.get("customDetails")?;
    let warmup = details.get("warmup").and_then(Value::as_bool) == Some(true);
    (!warmup && details.get("id").is_some()).then_some(details)
}

/// Whether a request body is a warm-up event.
pub fn is_warmup(json: Option<&Value>) -> bool {
    json.and_then(|j| j.get("customDetails"))
        .and_then(|d| d.get("warmup"))
        .and_then(Value::as_bool)
        == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_keys_and_per_key_sequences() {
        let stream = Stream {
            keys: 100,
            integration_keys: 25,
        };
        let (record_key, payload) = stream.event(1234);
        let json: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(record_key, "key-34");
        assert_eq!(json["alertKey"], "key-34");
        assert_eq!(json["integrationKey"], "il1api-bench-9");
        let details = bench_details(Some(&json)).unwrap();
        assert_eq!(details["seq"], 12);
        assert_eq!(details["id"], 1234);
    }

    #[test]
    fn warm_up_events_are_not_bench_events() {
        let json: Value = serde_json::from_slice(&warmup_event(3)).unwrap();
        assert!(is_warmup(Some(&json)));
        assert!(bench_details(Some(&json)).is_none());
        let (_, payload) = Stream::keys(100).event(0);
        let json: Value = serde_json::from_slice(&payload).unwrap();
        assert!(!is_warmup(Some(&json)));
        assert_eq!(json["integrationKey"], INTEGRATION_KEY);
    }
}
