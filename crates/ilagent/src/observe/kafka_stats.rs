//! librdkafka's statistics (`statistics.interval.ms`) as readiness and consumer lag.
//!
//! The statistics arrive through the consumer's poll loop, so they are also its pulse: the
//! Kafka component is registered as "stuck" when they stop (see [`super::health`]).
//! Parsed into the few fields needed, leniently, so that a librdkafka upgrade that adds or
//! changes other fields never blinds the agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;

use super::events;
use super::health::{KAFKA, registry};

/// How often librdkafka reports; set on the consumer.
pub const INTERVAL_MS: u32 = 2_000;

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: HashMap<String, Broker>,
    #[serde(default)]
    topics: HashMap<String, Topic>,
    cgrp: Option<Group>,
}

#[derive(Deserialize)]
struct Broker {
    #[serde(default)]
    state: String,
    #[serde(default)]
    nodeid: i32,
}

#[derive(Deserialize)]
struct Topic {
    #[serde(default)]
    partitions: HashMap<String, Partition>,
}

#[derive(Deserialize)]
struct Partition {
    #[serde(default = "minus_one")]
    partition: i32,
    #[serde(default = "minus_one_i64")]
    consumer_lag: i64,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    state: String,
    #[serde(default)]
    join_state: String,
    #[serde(default)]
    assignment_size: i32,
}

fn minus_one() -> i32 {
    -1
}

fn minus_one_i64() -> i64 {
    -1
}

/// Called with each statistics document (on the poll thread).
pub fn report(json: &[u8]) {
    let statistics: Statistics = match serde_json::from_slice(json) {
        Ok(statistics) => statistics,
        Err(error) => {
            tracing::debug!(%error, "unreadable librdkafka statistics");
            return;
        }
    };
    let (ready, state) = readiness(&statistics);
    registry().set(KAFKA, ready, state);
    let mut by_topic = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for (topic, details) in &statistics.topics {
        for partition in details.partitions.values() {
            if partition.partition >= 0 && partition.consumer_lag >= 0 {
                events::kafka_lag(topic, partition.partition, partition.consumer_lag);
                *by_topic.entry(topic.clone()).or_insert(0) += partition.consumer_lag;
                reported.insert((topic.clone(), partition.partition));
            }
        }
    }
    // A partition this agent no longer consumes (revoked, or its lag unknown) would
    // otherwise keep its last lag on the gauge for good, and hold a lag alert open.
    let mut last = last_reported().lock().unwrap_or_else(|e| e.into_inner());
    for (topic, partition) in no_longer_reported(&last, &reported) {
        events::kafka_lag(topic, *partition, 0);
    }
    *last = reported;
    super::figures::kafka_lag(by_topic);
}

/// The partitions whose lag gauge must go to 0: reported last time, not now.
fn no_longer_reported<'a>(
    last: &'a BTreeSet<(String, i32)>,
    now: &'a BTreeSet<(String, i32)>,
) -> impl Iterator<Item = &'a (String, i32)> {
    last.difference(now)
}

/// The partitions the last report gave a lag for.
fn last_reported() -> &'static Mutex<BTreeSet<(String, i32)>> {
    static LAST: OnceLock<Mutex<BTreeSet<(String, i32)>>> = OnceLock::new();
    LAST.get_or_init(|| Mutex::new(BTreeSet::new()))
}

/// Ready: a broker is up, the group coordinator is known and the member holds its
/// assignment (not between a revoke and an assign).
fn readiness(statistics: &Statistics) -> (bool, String) {
    // Bootstrap entries (node id -1) stand for addresses, not brokers of the cluster.
    let broker_up = statistics
        .brokers
        .values()
        .any(|b| b.state == "UP" && b.nodeid >= 0);
    if !broker_up {
        return (false, "connecting to the brokers".into());
    }
    match &statistics.cgrp {
        None => (false, "starting the consumer group".into()),
        Some(group) if group.state != "up" => (
            false,
            format!("joining the group (coordinator: {})", group.state),
        ),
        Some(group) if group.join_state != "steady" => {
            (false, format!("rebalancing ({})", group.join_state))
        }
        Some(group) => (
            true,
            format!("consuming ({} partitions assigned)", group.assignment_size),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Statistics {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_partition_that_stops_reporting_a_lag_has_its_gauge_zeroed() {
        let last: BTreeSet<(String, i32)> = [("t".to_string(), 0), ("t".to_string(), 1)].into();
        let now: BTreeSet<(String, i32)> = [("t".to_string(), 1)].into();
        assert_eq!(
            no_longer_reported(&last, &now).collect::<Vec<_>>(),
            [&("t".to_string(), 0)]
        );
    }

    #[test]
    fn ready_needs_a_broker_the_coordinator_and_a_steady_assignment() {
        let down = parse(r#"{"brokers": {"b/bootstrap": {"state": "UP", "nodeid": -1}}}"#);
        assert!(!readiness(&down).0);
        let joining = parse(
            r#"{"brokers": {"b:9092/1": {"state": "UP", "nodeid": 1}},
                "cgrp": {"state": "wait-coord", "join_state": "init"}}"#,
        );
        assert_eq!(
            readiness(&joining),
            (false, "joining the group (coordinator: wait-coord)".into())
        );
        let steady = parse(
            r#"{"brokers": {"b:9092/1": {"state": "UP", "nodeid": 1}},
                "cgrp": {"state": "up", "join_state": "steady", "assignment_size": 3},
                "topics": {"t": {"partitions": {"0": {"partition": 0, "consumer_lag": 5},
                                                "-1": {"partition": -1, "consumer_lag": -1}}}},
                "unknown_field": [1, 2]}"#,
        );
        assert_eq!(
            readiness(&steady),
            (true, "consuming (3 partitions assigned)".into())
        );
    }
}
