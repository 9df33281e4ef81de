//! Flags of `ilagent produce` and `ilagent replay`: the broker-facing tools beside the
//! daemon. They take the consumer's connection and security flags unchanged, so one set of
//! variables (`ILAGENT_KAFKA_BROKERS`, `ILAGENT_MQTT_HOST`, …) serves all three.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{KafkaConnectionArgs, MqttConnectionArgs, parse_duration, parse_header};

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ProduceArgs {
    /// The topic to publish to: a Kafka topic with --kafka_brokers, an MQTT topic with
    /// -m/--mqtt_host.
    #[arg(long)]
    pub topic: String,

    /// The message's key (Kafka; MQTT has none).
    #[arg(long)]
    pub key: Option<String>,

    /// The message's value: one message. Without it, messages come from standard input,
    /// as JSON lines `{"key": …, "value": …, "headers": {…}}` or as one document
    /// `{"messages": [{"key": …, "value": …}]}`.
    #[arg(long)]
    pub value: Option<String>,

    /// A header on every message, `name=value` (repeatable): a Kafka header, or an MQTT 5
    /// user property.
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Which broker to publish to when both --kafka_brokers and -m/--mqtt_host are set
    /// (say, by the daemon's environment variables).
    #[arg(long, value_enum)]
    pub to: Option<Broker>,

    /// How long to wait for the broker's acknowledgements; messages still unacknowledged
    /// then are reported as failed.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,

    #[command(flatten)]
    pub kafka: KafkaConnectionArgs,

    #[command(flatten)]
    pub mqtt: MqttConnectionArgs,

    /// MQTT client id [default: ilagent-produce-<process id>]. Not read from
    /// ILAGENT_MQTT_NAME: a producer with the daemon's id would take over its session.
    #[arg(short = 'n', long)]
    pub mqtt_name: Option<String>,

    /// QoS of the MQTT publishes: 0 (written, not acknowledged), 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub mqtt_qos: u8,

    /// Publish with MQTT's retain flag.
    #[arg(long)]
    pub mqtt_retain: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Broker {
    Kafka,
    Mqtt,
}

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ReplayArgs {
    /// The dead-letter topic to replay from (the daemon's --kafka_dlq_topic).
    #[arg(long, env = "ILAGENT_KAFKA_DLQ_TOPIC")]
    pub kafka_dlq_topic: Option<String>,

    /// The consumer group whose offsets on the dead-letter topic record what was replayed
    /// (or passed over). Not the daemon's group.
    #[arg(long, default_value = "ilagent-replay")]
    pub replay_group_id: String,

    /// Only dead letters whose reason contains this text (case-insensitive).
    #[arg(long)]
    pub reason: Option<String>,

    /// Only dead letters set aside at or after this time: RFC 3339
    /// (`2026-12-01T08:00:00Z`) or a time ago (`2h`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<std::time::SystemTime>,

    /// Only dead letters set aside before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<std::time::SystemTime>,

    /// List what would be replayed; publish and commit nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// How long to wait for the source topic's acknowledgements.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,

    #[command(flatten)]
    pub kafka: KafkaConnectionArgs,
}

/// `2026-12-01T08:00:00Z` (RFC 3339), or a duration ago: `90m`, `2h`, `1d`.
fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    let text = text.trim();
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    parse_duration(text)
        .ok()
        .and_then(|ago| std::time::SystemTime::now().checked_sub(ago))
        .ok_or_else(|| {
            format!(
                "`{text}` is not a time: write it like 2026-12-01T08:00:00Z, or a time ago like 2h"
            )
        })
}
