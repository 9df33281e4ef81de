//! librdkafka settings for the consumer and the producers (dead letters, `produce`,
//! `replay`).
//!
//! Precedence, as documented: the flags, then the agent's defaults, then every
//! `--kafka_property` (already checked not to switch off the delivery guarantee).

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::cli::OffsetReset;
use crate::config::{KafkaConfig, KafkaConnection};

/// Pass-through properties that also concern the dead-letter producer (connection and
/// security); consumer-only properties would only make librdkafka warn there.
const SHARED_PREFIXES: &[&str] = &[
    "security.",
    "sasl.",
    "ssl.",
    "socket.",
    "broker.",
    "client.dns",
    "debug",
    "reconnect.",
    // Brokers without idempotent producers (or without the IDEMPOTENT_WRITE permission)
    // need it off.
    "enable.idempotence",
];

/// The largest fetch response the consumer asks for. librdkafka wants `fetch.max.bytes` at
/// least `message.max.bytes`, so both are set to it; for a consumer `message.max.bytes`
/// bounds nothing else that matters (requests are not checked against it, and a compressed
/// batch may decompress to up to `receive.message.max.bytes`). A larger message or batch
/// still arrives: the broker returns the first batch of a fetch whatever its size (KIP-74).
/// See [`consumer_config`].
const FETCH_MAX_BYTES: &str = "65536";

pub fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = connection(&config.connection, &config.connection.client_id);
    client
        .set("group.id", &config.group_id)
        // At least once: the agent stores an offset only once it and everything before it
        // are settled, and commits what is stored itself (see poll.rs), often enough that a
        // crash repeats about one in-flight window of messages, not seconds of traffic.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match config.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        )
        .set("enable.partition.eof", "false")
        // Bounded memory. librdkafka's own prefetch queue is otherwise 64 MB, and a single
        // fetch response up to 50 MB (tansu, the test broker, fills a response up to the
        // request's total limit, whatever the per-partition one says). The agent's window
        // is the buffer that matters; librdkafka's only has to cover one fetch round trip,
        // and a short backoff (default 1 s) refetches as soon as the queue has drained
        // below the limit instead of letting it run dry. A queued message keeps its whole
        // fetch response alive, so the response size counts as much as the queue's.
        // Measured in `scripts/bench` (3 runs each): 1 MiB queue and 1 MB responses were
        // 7 MB less peak RSS in `kafka-0ms` than librdkafka's defaults at the same rate;
        // 512 KiB and 256 KB responses another 2.4 to 3 MB less in the Kafka scenarios,
        // also at the same rate; 128 KiB and 64 KB responses another 1.2 to 1.5 MB. The
        // response size has to shrink with the queue: a long run of one partition fills
        // the agent's window with a third of the keys (512 KiB with 1 MB responses cost
        // `kafka-50ms` a fifth of its rate, 128 KiB with 256 KB responses 4%). Even small,
        // this prefetch outruns ilert: 64 KB per round trip to a broker 20 ms away are
        // thousands of messages a second, ilert takes 700 requests a minute per client IP.
        .set("queued.max.messages.kbytes", "128")
        .set("fetch.queue.backoff.ms", "10")
        .set("message.max.bytes", FETCH_MAX_BYTES)
        .set("fetch.max.bytes", FETCH_MAX_BYTES)
        // Shorter runs per partition in each fetch, so the agent's buffer holds messages of
        // every partition (and so of more alert keys) instead of a long run of one.
        .set("max.partition.fetch.bytes", "32768")
        // Readiness and consumer lag (observe::kafka_stats); also the poll loop's pulse.
        .set(
            "statistics.interval.ms",
            crate::observe::kafka_stats::INTERVAL_MS.to_string(),
        );
    for (key, value) in &config.connection.properties {
        client.set(key, value);
    }
    keep_fetch_limits_consistent(&mut client);
    client
}

/// librdkafka refuses a `fetch.max.bytes` below `message.max.bytes`, so the two move
/// together unless both are set: whoever raises `message.max.bytes` gets responses that
/// fit it, whoever lowers `fetch.max.bytes` gets a consumer that starts.
fn keep_fetch_limits_consistent(client: &mut ClientConfig) {
    let limit = |key: &str| client.get(key).and_then(|v| v.parse::<u64>().ok());
    let (Some(fetch_max), Some(message_max)) =
        (limit("fetch.max.bytes"), limit("message.max.bytes"))
    else {
        return;
    };
    if fetch_max >= message_max {
        return;
    }
    let ours = FETCH_MAX_BYTES.parse::<u64>().ok();
    if Some(fetch_max) == ours {
        client.set("fetch.max.bytes", message_max.to_string());
    } else if Some(message_max) == ours {
        client.set("message.max.bytes", fetch_max.to_string());
    }
}

/// The consumer of `ilagent replay` on the dead-letter topic: its own group, offsets
/// committed by hand after the source topic acknowledged, and an end-of-partition event so
/// that it knows when it is done.
pub fn replay_consumer_config(connection: &KafkaConnection, group_id: &str) -> ClientConfig {
    let client_id = format!("{}-replay", connection.client_id);
    let mut client = self::connection(connection, &client_id);
    client
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    for (key, value) in &connection.properties {
        if SHARED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            client.set(key, value);
        }
    }
    client
}

/// The dead-letter producer of the consumer.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let client_id = format!("{}-dead-letter", config.connection.client_id);
    acknowledged_producer(&config.connection, &client_id, Duration::from_secs(30))
}

/// A producer whose every message is acknowledged by all in-sync replicas, written once
/// (librdkafka's idempotent producer: a retry after a lost acknowledgement is not a second
/// copy, and order per partition holds; `--kafka_property enable.idempotence=false` for
/// brokers that lack it), and given up after `timeout`.
pub fn acknowledged_producer(
    connection: &KafkaConnection,
    client_id: &str,
    timeout: Duration,
) -> ClientConfig {
    let timeout_ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut client = self::connection(connection, client_id);
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", timeout_ms.to_string());
    for (key, value) in &connection.properties {
        if SHARED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            client.set(key, value);
        }
    }
    client
}

fn connection(config: &KafkaConnection, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", config.brokers.join(","))
        .set("client.id", client_id)
        .set("log.connection.close", "false")
        // No client telemetry pushed to the brokers (KIP-714): the agent has its own
        // metrics, and librdkafka keeps eight histograms per broker connection for it
        // (0.3 to 0.4 MB less peak RSS in the Kafka scenarios). A pass-through
        // `enable.metrics.push=true` turns it back on.
        .set("enable.metrics.push", "false");
    let security = &config.security;
    if let Some(protocol) = security.protocol {
        client.set("security.protocol", protocol.as_librdkafka());
    }
    if let Some(mechanism) = security.mechanism {
        client.set("sasl.mechanism", mechanism.as_librdkafka());
    }
    if let Some(username) = &security.username {
        client.set("sasl.username", username);
    }
    if let Some(password) = &security.password {
        client.set("sasl.password", password.expose());
    }
    if let Some(ca) = &security.ssl_ca {
        client.set("ssl.ca.location", ca.to_string_lossy());
    }
    if let Some(cert) = &security.ssl_cert {
        client.set("ssl.certificate.location", cert.to_string_lossy());
    }
    if let Some(key) = &security.ssl_key {
        client.set("ssl.key.location", key.to_string_lossy());
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{SaslMechanism, SecurityProtocol};
    use crate::config::KafkaSecurity;

    fn config() -> KafkaConfig {
        KafkaConfig {
            connection: KafkaConnection {
                brokers: vec!["a:9092".into(), "b:9092".into()],
                client_id: "ilagent".into(),
                security: KafkaSecurity::default(),
                properties: vec![],
            },
            group_id: "g".into(),
            auto_offset_reset: OffsetReset::Latest,
            start_offsets: vec![],
            dlq_topic: None,
            max_in_flight: 256,
            max_buffered: 4096,
            drain_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn consumer_stores_and_commits_offsets_only_by_hand() {
        let c = consumer_config(&config());
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
    }

    #[test]
    fn a_larger_message_max_bytes_raises_the_fetch_limit_with_it_unless_both_are_set() {
        let mut cfg = config();
        assert_eq!(consumer_config(&cfg).get("fetch.max.bytes"), Some("65536"));
        cfg.connection.properties = vec![("message.max.bytes".into(), "5000000".into())];
        assert_eq!(
            consumer_config(&cfg).get("fetch.max.bytes"),
            Some("5000000")
        );
        cfg.connection.properties = vec![
            ("message.max.bytes".into(), "5000000".into()),
            ("fetch.max.bytes".into(), "8000000".into()),
        ];
        assert_eq!(
            consumer_config(&cfg).get("fetch.max.bytes"),
            Some("8000000")
        );
    }

    #[test]
    fn a_smaller_fetch_max_bytes_lowers_message_max_bytes_with_it() {
        let mut cfg = config();
        cfg.connection.properties = vec![("fetch.max.bytes".into(), "32768".into())];
        let c = consumer_config(&cfg);
        assert_eq!(c.get("fetch.max.bytes"), Some("32768"));
        assert_eq!(c.get("message.max.bytes"), Some("32768"));
        assert!(c.create::<rdkafka::consumer::BaseConsumer>().is_ok());
    }

    #[test]
    fn no_client_telemetry_is_pushed_to_the_brokers_unless_asked() {
        let mut cfg = config();
        assert_eq!(
            consumer_config(&cfg).get("enable.metrics.push"),
            Some("false")
        );
        assert_eq!(
            producer_config(&cfg).get("enable.metrics.push"),
            Some("false")
        );
        cfg.connection.properties = vec![("enable.metrics.push".into(), "true".into())];
        assert_eq!(
            consumer_config(&cfg).get("enable.metrics.push"),
            Some("true")
        );
    }

    #[test]
    fn the_default_consumer_settings_are_accepted_by_librdkafka() {
        let c = consumer_config(&config());
        assert!(c.create::<rdkafka::consumer::BaseConsumer>().is_ok());
    }

    #[test]
    fn pass_through_properties_come_last_and_win() {
        let mut cfg = config();
        cfg.connection.properties = vec![
            ("fetch.wait.max.ms".into(), "1000".into()),
            ("group.instance.id".into(), "a-1".into()),
        ];
        let c = consumer_config(&cfg);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("1000"));
        assert_eq!(c.get("group.instance.id"), Some("a-1"));
        assert_eq!(producer_config(&cfg).get("group.instance.id"), None);
    }

    #[test]
    fn credentials_reach_librdkafka_for_consumer_and_producer() {
        let mut cfg = config();
        cfg.connection.security = KafkaSecurity {
            protocol: Some(SecurityProtocol::SaslSsl),
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("agent".into()),
            password: Some("s3cret".into()),
            ..KafkaSecurity::default()
        };
        for c in [consumer_config(&cfg), producer_config(&cfg)] {
            assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!(c.get("sasl.username"), Some("agent"));
            assert_eq!(c.get("sasl.password"), Some("s3cret"));
        }
    }
}
