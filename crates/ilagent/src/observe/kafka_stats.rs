//! librdkafka's statistics (`statistics.interval.ms`) as readiness and consumer lag.
//!
//! The statistics arrive through the consumer's poll loop, so they are also its pulse: the
//! Kafka component is registered as "stuck" when they stop (see [`super::health`]).
//! Parsed into the few fields needed, leniently, so that a librdkafka upgrade that adds or
//! changes other fields never blinds the agent.

use std::collections::{BTreeMap, HashMap};

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
    for (topic, details) in &statistics.topics {
        for partition in details.partitions.values() {
            if partition.partition >= 0 && partition.consumer_lag >= 0 {
                events::kafka_lag(topic, partition.partition, partition.consumer_lag);
                *by_topic.entry(topic.clone()).or_insert(0) += partition.consumer_lag;
            }
        }
    }
    super::figures::kafka_lag(by_topic);
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
