//! Flags of the Kafka source: connection, security, offsets, dead letters and the
//! librdkafka pass-through.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse_duration;

/// Where the brokers are and how to log in: shared by the consumer (`daemon`) and by
/// `produce` and `replay`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct KafkaConnectionArgs {
    /// Kafka bootstrap brokers, comma- or space-separated (starts the Kafka source).
    #[arg(long, env = "ILAGENT_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Client id the brokers see in their logs and quotas.
    #[arg(long, env = "ILAGENT_KAFKA_CLIENT_ID", default_value = "ilagent")]
    pub kafka_client_id: String,

    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, env = "ILAGENT_KAFKA_SECURITY_PROTOCOL", value_enum)]
    pub kafka_security_protocol: Option<SecurityProtocol>,

    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "ILAGENT_KAFKA_SASL_MECHANISM", value_enum)]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,

    /// SASL user name (with a password and no mechanism: SASL_SSL with PLAIN).
    #[arg(long, env = "ILAGENT_KAFKA_USERNAME")]
    pub kafka_username: Option<String>,

    /// SASL password; prefer the environment variable.
    #[arg(long, env = "ILAGENT_KAFKA_PASSWORD", hide_env_values = true)]
    pub kafka_password: Option<String>,

    /// CA certificate (PEM) to verify the brokers.
    #[arg(long, env = "ILAGENT_KAFKA_SSL_CA")]
    pub kafka_ssl_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "ILAGENT_KAFKA_SSL_CERT")]
    pub kafka_ssl_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "ILAGENT_KAFKA_SSL_KEY")]
    pub kafka_ssl_key: Option<PathBuf>,

    /// Any librdkafka property as key=value (repeatable), applied last (to the producer
    /// only those of the connection: security., sasl., ssl., socket., broker., …).
    #[arg(long, env = "ILAGENT_KAFKA_PROPERTY", value_delimiter = ';')]
    pub kafka_property: Vec<String>,
}

/// Requests to ilert under way at once from the Kafka source, by default. ilert takes 700
/// requests a minute from one client IP (11.7 a second), so 128 in parallel use that whole
/// budget even when every answer takes the full `--request_timeout` (10 s); more cannot get
/// more accepted. Each costs about 40 KB while it runs (an HTTP/1.1 connection: hyper's read
/// and write buffers and its request channel), so 256 cost 5 MB more for nothing.
pub(crate) const DEFAULT_KAFKA_MAX_IN_FLIGHT: usize = 128;

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct KafkaArgs {
    #[command(flatten)]
    pub connection: KafkaConnectionArgs,

    /// Kafka consumer group id.
    #[arg(long, env = "ILAGENT_KAFKA_GROUP_ID", default_value = "ilagent")]
    pub kafka_group_id: String,

    /// Where a group with no committed offset starts: `latest` skips the backlog,
    /// `earliest` delivers everything still in the topic.
    #[arg(long, env = "ILAGENT_KAFKA_AUTO_OFFSET_RESET", value_enum, default_value_t = OffsetReset::Latest)]
    pub kafka_auto_offset_reset: OffsetReset,

    /// Start offsets for a first start or a replay: `topic:partition:offset,...`
    /// (offset is a number, `earliest` or `latest`). Applied once per process start.
    #[arg(long, env = "ILAGENT_KAFKA_OFFSETS", value_delimiter = ',')]
    pub kafka_offsets: Vec<String>,

    /// Topic that receives messages which can never be delivered, with headers saying why.
    /// Without it they go to the dead letters of the SQLite file (-f), and transient
    /// failures are retried without limit instead of after --max_retries.
    #[arg(long, env = "ILAGENT_KAFKA_DLQ_TOPIC")]
    pub kafka_dlq_topic: Option<String>,

    /// Deliveries to ilert running in parallel (across alert keys) at most.
    #[arg(long, env = "ILAGENT_KAFKA_MAX_IN_FLIGHT", default_value_t = DEFAULT_KAFKA_MAX_IN_FLIGHT)]
    pub kafka_max_in_flight: usize,

    /// Messages read and not yet settled (delivering or queued behind their alert key) at
    /// most; reading stops when it is full. Also capped at 16 MiB of payload. Large enough
    /// that a long run of one partition's messages does not leave other keys idle.
    #[arg(long, env = "ILAGENT_KAFKA_MAX_BUFFERED", default_value_t = 10000)]
    pub kafka_max_buffered: usize,

    /// How long a rebalance waits for in-flight messages of revoked partitions
    /// [default: 10s, or half the session timeout if that is shorter].
    #[arg(long, env = "ILAGENT_KAFKA_DRAIN_TIMEOUT", value_parser = parse_duration)]
    pub kafka_drain_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN", alias = "plain")]
    Plain,
    #[value(name = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}
