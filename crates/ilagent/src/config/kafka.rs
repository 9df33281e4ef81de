//! Validation of the Kafka source's flags: brokers, security, start offsets and the
//! librdkafka pass-through, which may not switch off the delivery guarantee.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::UsageError;
use crate::cli::{
    DEFAULT_KAFKA_MAX_IN_FLIGHT, KafkaArgs, KafkaConnectionArgs, OffsetReset, SaslMechanism,
    SecurityProtocol,
};
use crate::secret::Secret;

/// Properties the agent relies on for at-least-once delivery, with the only value it
/// accepts from `--kafka_property`.
const GUARDED_PROPERTIES: &[(&str, &str, &str)] = &[
    (
        "enable.auto.offset.store",
        "false",
        "the agent stores an offset only after its message and all earlier ones are settled",
    ),
    (
        "enable.auto.commit",
        "false",
        "the agent commits the stored offsets itself, right behind delivery",
    ),
];

/// How long a rebalance waits for in-flight messages, unless the session is shorter.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to start one partition on the first assignment after the agent starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: StartPosition,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    Earliest,
    Latest,
    At(i64),
}

/// How to authenticate and encrypt, after the defaults are applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub protocol: Option<SecurityProtocol>,
    pub mechanism: Option<SaslMechanism>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ssl_ca: Option<PathBuf>,
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
}

/// Where the brokers are and how to reach them: the consumer's, and that of `produce` and
/// `replay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConnection {
    pub brokers: Vec<String>,
    pub client_id: String,
    pub security: KafkaSecurity,
    /// `--kafka_property` pairs, in order; applied after everything else.
    pub properties: Vec<(String, String)>,
}

impl KafkaConnection {
    /// `None` when `--kafka_brokers` is not given.
    pub fn from_args(args: &KafkaConnectionArgs) -> Result<Option<KafkaConnection>, UsageError> {
        let Some(brokers) = args.kafka_brokers.as_deref() else {
            return Ok(None);
        };
        non_empty("--kafka_client_id", &args.kafka_client_id)?;
        Ok(Some(KafkaConnection {
            brokers: brokers_list(brokers)?,
            client_id: args.kafka_client_id.trim().to_string(),
            security: security(args)?,
            properties: properties(&args.kafka_property)?,
        }))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    pub connection: KafkaConnection,
    pub group_id: String,
    pub auto_offset_reset: OffsetReset,
    pub start_offsets: Vec<StartOffset>,
    pub dlq_topic: Option<String>,
    pub max_in_flight: usize,
    pub max_buffered: usize,
    pub drain_timeout: Duration,
}

impl KafkaConfig {
    /// `None` when `--kafka_brokers` is not given.
    pub fn from_args(args: &KafkaArgs) -> Result<Option<KafkaConfig>, UsageError> {
        let Some(connection) = KafkaConnection::from_args(&args.connection)? else {
            return Ok(None);
        };
        let session_timeout = connection
            .properties
            .iter()
            .rev()
            .find(|(k, _)| k == "session.timeout.ms")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(45), Duration::from_millis);
        let drain_timeout = args
            .kafka_drain_timeout
            .unwrap_or_else(|| DEFAULT_DRAIN_TIMEOUT.min(session_timeout / 2));
        if drain_timeout.is_zero() || drain_timeout >= session_timeout {
            return Err(UsageError(format!(
                "--kafka_drain_timeout ({drain_timeout:?}) must be above 0 and below the session timeout ({session_timeout:?}): lower it, or raise session.timeout.ms with --kafka_property"
            )));
        }
        if args.kafka_max_buffered < args.kafka_max_in_flight {
            return Err(UsageError(format!(
                "--kafka_max_buffered ({}) must be at least --kafka_max_in_flight ({}): the buffer holds the messages being delivered",
                args.kafka_max_buffered, args.kafka_max_in_flight
            )));
        }
        if args.kafka_max_in_flight == 0 {
            return Err(UsageError(format!(
                "--kafka_max_in_flight must be at least 1; the default is {DEFAULT_KAFKA_MAX_IN_FLIGHT}"
            )));
        }
        non_empty("--kafka_group_id", &args.kafka_group_id)?;
        Ok(Some(KafkaConfig {
            connection,
            group_id: args.kafka_group_id.trim().to_string(),
            auto_offset_reset: args.kafka_auto_offset_reset,
            start_offsets: args
                .kafka_offsets
                .iter()
                .map(|o| start_offset(o))
                .collect::<Result<_, _>>()?,
            dlq_topic: args
                .kafka_dlq_topic
                .as_deref()
                .map(|t| non_empty("--kafka_dlq_topic", t).map(str::to_string))
                .transpose()?,
            max_in_flight: args.kafka_max_in_flight,
            max_buffered: args.kafka_max_buffered,
            drain_timeout,
        }))
    }
}

pub(crate) fn non_empty<'a>(flag: &str, value: &'a str) -> Result<&'a str, UsageError> {
    let value = value.trim();
    if value.is_empty() {
        Err(UsageError(format!(
            "{flag} is empty: give a value or leave the flag out"
        )))
    } else {
        Ok(value)
    }
}

fn brokers_list(brokers: &str) -> Result<Vec<String>, UsageError> {
    let brokers: Vec<String> = brokers
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    if brokers.is_empty() {
        return Err(UsageError(
            "--kafka_brokers is empty: give at least one broker, e.g. --kafka_brokers localhost:9092".into(),
        ));
    }
    for broker in &brokers {
        let port_ok = broker.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(UsageError(format!(
                "--kafka_brokers: `{broker}` is not HOST:PORT, e.g. localhost:9092"
            )));
        }
    }
    Ok(brokers)
}

pub(crate) fn start_offset(text: &str) -> Result<StartOffset, UsageError> {
    let bad = || {
        UsageError(format!(
            "--kafka_offsets: `{text}` is not topic:partition:offset, e.g. events:0:1200 or events:1:earliest"
        ))
    };
    let (rest, offset) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let (topic, partition) = rest.rsplit_once(':').ok_or_else(bad)?;
    if topic.is_empty() {
        return Err(bad());
    }
    let partition = partition
        .parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(bad)?;
    let offset = match offset {
        "earliest" | "beginning" => StartPosition::Earliest,
        "latest" | "end" => StartPosition::Latest,
        n => StartPosition::At(n.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(bad)?),
    };
    Ok(StartOffset {
        topic: topic.to_string(),
        partition,
        offset,
    })
}

fn properties(pairs: &[String]) -> Result<Vec<(String, String)>, UsageError> {
    let mut properties = Vec::new();
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--kafka_property: `{pair}` is not key=value, e.g. --kafka_property session.timeout.ms=10000"
            ))
        })?;
        let (key, value) = (key.trim(), value.trim());
        if let Some((_, required, why)) = GUARDED_PROPERTIES.iter().find(|(k, _, _)| *k == key)
            && !value.eq_ignore_ascii_case(required)
        {
            return Err(UsageError(format!(
                "--kafka_property {key}={value} would break at-least-once delivery ({why}): remove it"
            )));
        }
        properties.push((key.to_string(), value.to_string()));
    }
    Ok(properties)
}

fn security(args: &KafkaConnectionArgs) -> Result<KafkaSecurity, UsageError> {
    let username = args
        .kafka_username
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let password = super::secret(args.kafka_password.as_deref());
    match (username, &password) {
        (Some(_), None) => {
            return Err(UsageError(
                "--kafka_username needs a password: set ILAGENT_KAFKA_PASSWORD (or --kafka_password)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(UsageError("--kafka_password needs --kafka_username".into()));
        }
        _ => {}
    }
    let has_credentials = username.is_some();
    // Credentials and nothing else mean SASL_SSL with PLAIN, as in the Camunda connector.
    let protocol = args
        .kafka_security_protocol
        .or(has_credentials.then_some(SecurityProtocol::SaslSsl));
    let mechanism = args
        .kafka_sasl_mechanism
        .or(has_credentials.then_some(SaslMechanism::Plain));
    if let Some(protocol) = protocol {
        if protocol.uses_sasl() && !has_credentials {
            return Err(UsageError(format!(
                "--kafka_security_protocol {} needs --kafka_username and a password (ILAGENT_KAFKA_PASSWORD)",
                protocol.as_librdkafka()
            )));
        }
        if !protocol.uses_sasl() && has_credentials {
            return Err(UsageError(format!(
                "--kafka_username is set but --kafka_security_protocol {} does not use SASL: use sasl_ssl or sasl_plaintext",
                protocol.as_librdkafka()
            )));
        }
    }
    if args.kafka_sasl_mechanism.is_some() && !has_credentials {
        return Err(UsageError(
            "--kafka_sasl_mechanism needs --kafka_username and a password".into(),
        ));
    }
    let ssl_ca = readable("--kafka_ssl_ca", args.kafka_ssl_ca.as_deref())?;
    let ssl_cert = readable("--kafka_ssl_cert", args.kafka_ssl_cert.as_deref())?;
    let ssl_key = readable("--kafka_ssl_key", args.kafka_ssl_key.as_deref())?;
    if ssl_cert.is_some() != ssl_key.is_some() {
        return Err(UsageError(
            "--kafka_ssl_cert and --kafka_ssl_key go together: give both for mutual TLS, or neither".into(),
        ));
    }
    let uses_files = ssl_ca.is_some() || ssl_cert.is_some();
    if uses_files && protocol.is_some_and(|p| !p.uses_tls()) {
        return Err(UsageError(
            "--kafka_ssl_* files need TLS: use --kafka_security_protocol ssl or sasl_ssl".into(),
        ));
    }
    Ok(KafkaSecurity {
        protocol: protocol.or(uses_files.then_some(SecurityProtocol::Ssl)),
        mechanism,
        username: username.map(str::to_string),
        password,
        ssl_ca,
        ssl_cert,
        ssl_key,
    })
}

fn readable(flag: &str, path: Option<&Path>) -> Result<Option<PathBuf>, UsageError> {
    let Some(path) = path else { return Ok(None) };
    std::fs::File::open(path)
        .map(|_| Some(path.to_path_buf()))
        .map_err(|e| UsageError(format!("{flag}: cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_take_numbers_and_names() {
        assert_eq!(
            start_offset("events:2:1200").unwrap(),
            StartOffset {
                topic: "events".into(),
                partition: 2,
                offset: StartPosition::At(1200)
            }
        );
        assert_eq!(start_offset("a:b:0:earliest").unwrap().topic, "a:b");
        assert!(start_offset("events:x:1").is_err());
        assert!(start_offset("events:1").is_err());
        assert!(start_offset("events:1:-5").is_err());
    }

    #[test]
    fn guarded_properties_are_refused_only_with_the_unsafe_value() {
        assert!(properties(&["enable.auto.offset.store=true".into()]).is_err());
        assert!(properties(&["enable.auto.commit=true".into()]).is_err());
        assert!(properties(&["enable.auto.offset.store=false".into()]).is_ok());
        assert_eq!(
            properties(&["session.timeout.ms = 6000".into()]).unwrap(),
            [("session.timeout.ms".to_string(), "6000".to_string())]
        );
        assert!(properties(&["nonsense".into()]).is_err());
    }
}
