//! Validated configuration: what the parsed flags mean, checked before anything starts.
//!
//! Every check here fails with a [`UsageError`] that names the flag and the fix; `main`
//! prints it and exits with status 2, the same as a flag clap itself rejects. Nothing
//! downstream re-validates: a config that exists is a config that makes sense.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::cli::{DaemonArgs, DeliveryArgs, GlobalArgs};
use crate::delivery::{Backoff, Budget, Budgets, RetryPolicy};
use crate::ilert::{ClientSettings, EventPath};
use crate::mapping::{FieldPath, Filter, MappingConfig, MessageKind, PolicyMapping};
use crate::queue::Limits;
use crate::routes::RouteTable;
use crate::secret::Secret;
use crate::sources::http::{HttpConfig, ServerLimits};

pub(crate) mod file;
mod kafka;
mod mqtt;
mod self_watch;

pub use file::{ConfigFile, FileError};
pub(crate) use kafka::non_empty as kafka_non_empty;
pub use kafka::{KafkaConfig, KafkaConnection, KafkaSecurity, StartOffset, StartPosition};
pub(crate) use mqtt::client_id as mqtt_client_id;
pub use mqtt::{MqttBroker, MqttConfig};
pub use self_watch::{SelfWatchConfig, Thresholds};

/// A flag or combination of flags that cannot work; the message names the flag and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        UsageError(message.to_string())
    }
}

/// How to reach ilert, from the global flags.
pub fn client_settings(global: &GlobalArgs) -> Result<ClientSettings, UsageError> {
    Ok(ClientSettings {
        api_url: base_url("--ilert_url", &global.ilert_url)?,
        beat_url: base_url("--ilert_beat_url", &global.ilert_beat_url)?,
        connect_timeout: positive("--connect_timeout", global.connect_timeout)?,
        request_timeout: positive("--request_timeout", global.request_timeout)?,
    })
}

/// Retry policy and rate-limit budgets, from the delivery flags.
pub fn delivery_settings(args: &DeliveryArgs) -> Result<(RetryPolicy, Budgets), UsageError> {
    let initial = positive("--backoff_initial", args.backoff_initial)?;
    let max = positive("--backoff_max", args.backoff_max)?;
    if initial > max {
        return Err(UsageError::new(format!(
            "--backoff_initial ({initial:?}) is longer than --backoff_max ({max:?}): make the initial backoff the shorter one"
        )));
    }
    let window = positive("--rate_limit_window", args.rate_limit_window)?;
    let budget = |limit| Budget { limit, window };
    Ok((
        RetryPolicy {
            backoff: Backoff { initial, max },
            max_attempts: (args.max_retries > 0).then_some(args.max_retries),
            ..RetryPolicy::default()
        },
        Budgets {
            integration: budget(args.rate_limit_events),
            heartbeat: budget(args.rate_limit_heartbeats),
            api: budget(args.rate_limit_api),
        },
    ))
}

/// A key from a flag or its environment variable; empty counts as absent.
pub fn secret(value: Option<&str>) -> Option<Secret> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// The topics a broker source subscribes to, by what they carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topics {
    pub events: Vec<String>,
    pub heartbeats: Vec<String>,
    pub policies: Vec<String>,
    /// Topics (or MQTT filters) that only configured routes consume.
    pub routed: Vec<String>,
}

impl Topics {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.heartbeats.is_empty()
            && self.policies.is_empty()
            && self.routed.is_empty()
    }

    /// The topics that are valid Kafka topic names (letters, digits, `.`, `_`, `-`, at
    /// most 249): with both brokers in one agent the topic flags apply to both, and MQTT
    /// filters such as `ilert/+` are no Kafka topics.
    pub fn kafka_names(&self) -> Topics {
        let valid = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|t| is_kafka_topic_name(t))
                .cloned()
                .collect()
        };
        Topics {
            events: valid(&self.events),
            heartbeats: valid(&self.heartbeats),
            policies: valid(&self.policies),
            routed: self.routed.clone(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.events
            .iter()
            .chain(&self.heartbeats)
            .chain(&self.policies)
    }
}

pub(crate) fn is_kafka_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The agent's own heartbeat (`-b`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentHeartbeat {
    pub key: Secret,
    pub interval: Duration,
}

/// Everything `ilagent daemon` runs from.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub client: ClientSettings,
    pub retry: RetryPolicy,
    pub budgets: Budgets,
    pub mapping: MappingConfig,
    pub api_key: Option<Secret>,
    /// How long escalation-policy lookups are reused.
    pub policy_cache_ttl: Duration,
    pub db_file: PathBuf,
    /// `--queue_max_size`, with the reserve kept for draining.
    pub queue_limits: Limits,
    /// `--dedupe_max_ids`: idempotency ids kept in the file.
    pub dedupe_max_ids: u64,
    /// `--http_idempotency_window`; zero: the proxy ignores `Idempotency-Key`.
    pub http_idempotency_window: Duration,
    pub heartbeat: Option<AgentHeartbeat>,
    /// The HTTP proxy (`-p`).
    pub http: Option<HttpConfig>,
    /// `--metrics_port` on the `--http_bind` address: probes and metrics on a port of
    /// their own.
    pub metrics_addr: Option<SocketAddr>,
    /// Connection cap and read timeouts of every port served (`-p`, `--metrics_port`).
    pub server: ServerLimits,
    pub kafka: Option<KafkaConfig>,
    pub mqtt: Option<MqttConfig>,
    pub topics: Topics,
    /// How long in-flight work may finish after SIGINT or SIGTERM.
    pub shutdown_timeout: Duration,
    /// `--ilert_event_path`; `None` means each source's default.
    pub event_path: Option<EventPath>,
    /// The configuration file's `[[route]]`s, ahead of the flag topics.
    pub routes: Arc<RouteTable>,
    /// Seed 004's thresholds, and where the agent's own alerts go.
    pub self_watch: SelfWatchConfig,
}

impl DaemonConfig {
    pub fn from_args(global: &GlobalArgs, args: &DaemonArgs) -> Result<Self, UsageError> {
        let client = client_settings(global)?;
        let (retry, budgets) = delivery_settings(&args.delivery)?;
        let topics = Topics {
            events: topic_list("-e/--event_topic", &args.event_topics)?,
            heartbeats: topic_list("-r/--heartbeat_topic", &args.heartbeat_topics)?,
            policies: topic_list("--policy_topic", &args.policy_topics)?,
            routed: Vec::new(),
        };
        let kafka = KafkaConfig::from_args(&args.kafka)?;
        let mqtt = MqttConfig::from_args(&args.mqtt)?;
        let mapping = mapping_config(args)?;
        let routes = Arc::new(route_table(global, &mapping)?);
        let routed_kafka = routes.topics_for(crate::message::SourceKind::Kafka);
        if let Some(error) = route_without_broker(
            global,
            &routes,
            kafka.is_some(),
            mqtt.is_some(),
            args.port.is_some(),
        ) {
            return Err(error);
        }
        let heartbeat = agent_heartbeat(args)?;
        let api_key = secret(args.ilert_api_key.as_deref());

        if let Some(topic) = topic_in_two_roles(&topics) {
            return Err(UsageError::new(format!(
                "topic `{topic}` is given to more than one of -e, -r and --policy_topic: each topic carries one kind of message"
            )));
        }
        if kafka.is_some() {
            // With MQTT beside Kafka (as ilagent 0.9 allows) the topic flags apply to both
            // brokers and Kafka takes the names that are Kafka topics; alone, every topic
            // must be one.
            let kafka_topics = topics.kafka_names();
            if mqtt.is_none()
                && let Some(bad) = topics.all().find(|t| !is_kafka_topic_name(t))
            {
                return Err(UsageError::new(format!(
                    "`{bad}` is not a Kafka topic name: Kafka topics consist of letters, digits, `.`, `_` and `-` (MQTT filters such as `a/+` need -m/--mqtt_host)"
                )));
            }
            if mqtt.is_some()
                && kafka_topics.is_empty()
                && !topics.is_empty()
                && routed_kafka.is_empty()
            {
                return Err(UsageError::new(
                    "--kafka_brokers and -m/--mqtt_host share the topic flags, but none of -e/-r/--policy_topic is a Kafka topic name (letters, digits, `.`, `_`, `-`): add one for Kafka",
                ));
            }
        }
        let has_broker = kafka.is_some() || mqtt.is_some();
        if has_broker && topics.is_empty() && routes.is_empty() {
            return Err(UsageError::new(
                "no topic to consume: at least one topic (-e, -r, or --policy_topic) must be configured",
            ));
        }
        if !has_broker && !topics.is_empty() {
            return Err(UsageError::new(
                "-e/-r/--policy_topic name topics, but no broker is configured: add --kafka_brokers HOST:PORT or -m/--mqtt_host HOST",
            ));
        }
        if !has_broker && args.port.is_none() && heartbeat.is_none() {
            return Err(UsageError::new(
                "nothing to run: configure at least one of --kafka_brokers, -m/--mqtt_host, -p/--port or -b/--heartbeat",
            ));
        }
        if let Some(route) = routes
            .routes()
            .iter()
            .find(|r| r.kind() == MessageKind::Policy)
            && api_key.is_none()
        {
            return Err(UsageError::new(format!(
                "route `{}` updates escalation policies, which needs an ilert user API key: set ilert_api_key = \"env:ILERT_API_KEY\" in the file, or the environment variable ILERT_API_KEY",
                route.name
            )));
        }
        if !topics.policies.is_empty() {
            if api_key.is_none() {
                return Err(UsageError::new(
                    "--policy_topic needs an ilert user API key: set the environment variable ILERT_API_KEY (or --ilert_api_key)",
                ));
            }
            if args.policy_routing_keys.iter().all(|k| k.trim().is_empty()) {
                return Err(UsageError::new(
                    "--policy_topic needs --policy_routing_keys: name the payload fields that form the routing key, e.g. --policy_routing_keys team,site",
                ));
            }
        }
        if let Some(port) = args.port
            && port == 0
        {
            return Err(UsageError::new(
                "-p/--port 0 is not a port: give the port to listen on, e.g. -p 8977",
            ));
        }
        let http = http_config(args)?;
        if args.metrics_port == Some(0) {
            return Err(UsageError::new(
                "--metrics_port 0 is not a port: give the port to serve /health, /ready and /metrics on, e.g. --metrics_port 9977",
            ));
        }
        if args.metrics_port.is_some() && args.metrics_port == args.port {
            return Err(UsageError::new(
                "--metrics_port is the same as -p/--port: the proxy's port already serves /health, /ready and /metrics; drop --metrics_port or give another port",
            ));
        }

        let queue_limits = queue_limits(args, http.as_ref(), mqtt.as_ref(), kafka.is_some())?;
        if let Err(why) =
            crate::delivery::idempotency::check_window(args.queue_file.http_idempotency_window)
        {
            return Err(UsageError::new(format!(
                "--http_idempotency_window {why}: give at most 30d, e.g. --http_idempotency_window 24h (0 ignores the header)"
            )));
        }
        if args.queue_file.dedupe_max_ids == 0 {
            return Err(UsageError::new(
                "--dedupe_max_ids must be at least 1: it is how many idempotency ids the file keeps, e.g. --dedupe_max_ids 1000000 (remove a route's `dedupe` to deliver every copy)",
            ));
        }

        Ok(DaemonConfig {
            client,
            retry,
            budgets,
            mapping,
            api_key,
            policy_cache_ttl: args.policy_cache_ttl,
            db_file: global.file.clone(),
            queue_limits,
            dedupe_max_ids: args.queue_file.dedupe_max_ids,
            http_idempotency_window: args.queue_file.http_idempotency_window,
            heartbeat,
            http,
            metrics_addr: args
                .metrics_port
                .map(|port| SocketAddr::new(args.http_bind, port)),
            server: server_limits(args)?,
            kafka,
            mqtt,
            topics,
            shutdown_timeout: positive("--shutdown_timeout", args.shutdown_timeout)?,
            event_path: event_path_flag(args)?,
            routes,
            self_watch: SelfWatchConfig::from_args(&args.self_watch)?,
        })
    }
}

/// A route whose source has no broker configured.
fn route_without_broker(
    global: &GlobalArgs,
    routes: &RouteTable,
    kafka: bool,
    mqtt: bool,
    proxy: bool,
) -> Option<UsageError> {
    use crate::message::SourceKind;
    let route = routes.routes().iter().find(|r| match r.source() {
        SourceKind::Kafka => !kafka,
        SourceKind::Mqtt => !mqtt,
        SourceKind::Http => !proxy,
        SourceKind::Cli => false,
    })?;
    let path = global
        .config_file
        .as_ref()
        .map(|f| f.located.path().display().to_string())
        .unwrap_or_default();
    if route.source() == SourceKind::Http {
        return Some(UsageError::new(format!(
            "{path}: route `{}` takes HTTP requests ({}) but the proxy is off: set port (or -p/--port)",
            route.name,
            route.topics().join(", ")
        )));
    }
    let (broker, fix) = match route.source() {
        SourceKind::Kafka => ("Kafka", "kafka_brokers (or --kafka_brokers)"),
        _ => ("MQTT", "mqtt_host (or -m/--mqtt_host)"),
    };
    Some(UsageError::new(format!(
        "{path}: route `{}` consumes {broker} topics ({}) but no {broker} broker is configured: set {fix}",
        route.name,
        route.topics().join(", ")
    )))
}

/// `--ilert_event_path`; `None` means each source's default.
pub(crate) fn event_path_flag(args: &DaemonArgs) -> Result<Option<EventPath>, UsageError> {
    args.ilert_event_path
        .as_deref()
        .map(|path| event_path("--ilert_event_path", path))
        .transpose()
}

/// The configuration file's routes, compiled with the flag mapping (none without a file).
pub(crate) fn route_table(
    global: &GlobalArgs,
    mapping: &MappingConfig,
) -> Result<RouteTable, UsageError> {
    match &global.config_file {
        None => Ok(RouteTable::default()),
        Some(file) => {
            RouteTable::of_file(file, mapping).map_err(|e| UsageError::new(e.to_string()))
        }
    }
}

pub(crate) fn mapping_config(args: &DaemonArgs) -> Result<MappingConfig, UsageError> {
    let filter = match (&args.filter_key, &args.filter_val) {
        (None, Some(_)) => {
            return Err(UsageError::new(
                "--filter_val needs --filter_key: name the field whose value must match, e.g. --filter_key type --filter_val ALARM",
            ));
        }
        (Some(key), value) => Some(Filter {
            key: field("--filter_key", key)?,
            value: value.clone(),
        }),
        (None, None) => None,
    };
    let values = [
        ("--map_val_etype_alert", &args.map_val_etype_alert),
        ("--map_val_etype_accept", &args.map_val_etype_accept),
        ("--map_val_etype_resolve", &args.map_val_etype_resolve),
    ];
    for (i, (flag, value)) in values.iter().enumerate() {
        for (other_flag, other) in &values[i + 1..] {
            if value.is_some() && value == other {
                return Err(UsageError::new(format!(
                    "{flag} and {other_flag} both map the value `{}`: give each event type its own value",
                    value.as_deref().unwrap_or_default()
                )));
            }
        }
    }
    Ok(MappingConfig {
        event_key: secret(args.event_key.as_deref()),
        event_type_field: field("--map_key_etype", &args.map_key_etype)?,
        summary_field: field("--map_key_summary", &args.map_key_summary)?,
        alert_key_field: field("--map_key_alert_key", &args.map_key_alert_key)?,
        alert_value: args.map_val_etype_alert.clone(),
        accept_value: args.map_val_etype_accept.clone(),
        resolve_value: args.map_val_etype_resolve.clone(),
        filter,
        forward_payload: args.forward_message_payload,
        policy: PolicyMapping {
            routing_key_fields: args
                .policy_routing_keys
                .iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            email: field("--map_key_email", &args.map_key_email)?,
            shift: field("--map_key_shift", &args.map_key_shift)?,
            shift_offset: args.shift_offset,
        },
    })
}

fn http_config(args: &DaemonArgs) -> Result<Option<HttpConfig>, UsageError> {
    let token = secret(args.http_token.as_deref());
    let Some(port) = args.port else {
        if token.is_some() {
            return Err(UsageError::new(
                "--http_token protects the HTTP proxy, which is not enabled: add -p/--port, or drop --http_token",
            ));
        }
        return Ok(None);
    };
    if args.http_max_body == 0 {
        return Err(UsageError::new(
            "--http_max_body must be larger than 0: ilert events need room, e.g. --http_max_body 1MiB",
        ));
    }
    if args.http_max_in_flight == 0 {
        return Err(UsageError::new(
            "--http_max_in_flight must be at least 1: it is how many /api requests are handled at once, e.g. --http_max_in_flight 256",
        ));
    }
    Ok(Some(HttpConfig {
        bind: args.http_bind,
        port,
        token,
        max_body: args.http_max_body,
        max_in_flight: args.http_max_in_flight,
    }))
}

/// The size a Kafka message has at most by default (`message.max.bytes`).
const KAFKA_MESSAGE_MAX: usize = 1 << 20;

/// `--queue_max_size` must hold a few of the largest messages the sources accept (at least
/// 1 MiB): the reserve kept for draining takes two (see [`crate::queue::capacity`]), and a
/// message that could never fit would stop its source for good.
fn queue_limits(
    args: &DaemonArgs,
    http: Option<&HttpConfig>,
    mqtt: Option<&MqttConfig>,
    kafka: bool,
) -> Result<Limits, UsageError> {
    let max = args.queue_file.queue_max_size;
    let sources = [
        http.map(|h| (h.max_body, "--http_max_body")),
        mqtt.map(|m| (m.max_packet_size, "--mqtt_max_packet_size")),
        kafka.then_some((KAFKA_MESSAGE_MAX, "Kafka's message.max.bytes")),
    ];
    let (largest, named) = sources
        .into_iter()
        .flatten()
        .max_by_key(|(size, _)| *size)
        .unwrap_or((KAFKA_MESSAGE_MAX, "the default message size"));
    // Buffered MQTT commits up to 1 MiB at once (`sources::mqtt::intake`): that must fit too.
    let largest = largest.max(1 << 20);
    let needed = largest.saturating_mul(4);
    if max < needed {
        return Err(UsageError::new(format!(
            "--queue_max_size {} is too small: the queue must hold at least 4 of the largest messages ({}, {named}); give at least {}, e.g. --queue_max_size 1GiB",
            size_text(max),
            size_text(largest),
            size_text(needed)
        )));
    }
    Ok(Limits::new(max as u64, largest as u64))
}

/// A size as the flags take it: in MiB when it is a whole number of them.
fn size_text(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

/// The limits of the HTTP server; checked only when something is served (`-p` or
/// `--metrics_port`), as the other proxy flags are.
fn server_limits(args: &DaemonArgs) -> Result<ServerLimits, UsageError> {
    let limits = ServerLimits {
        max_connections: args.http_max_connections,
        header_timeout: args.http_header_timeout,
        body_timeout: args.http_body_timeout,
    };
    if args.port.is_none() && args.metrics_port.is_none() {
        return Ok(limits);
    }
    if limits.max_connections == 0 {
        return Err(UsageError::new(
            "--http_max_connections must be at least 1: it is how many connections each port serves at once, e.g. --http_max_connections 1024",
        ));
    }
    if limits.header_timeout.is_zero() {
        return Err(UsageError::new(
            "--http_header_timeout must be longer than 0: it is how long a client may take to send a request's headers, e.g. --http_header_timeout 10s",
        ));
    }
    if limits.body_timeout.is_zero() {
        return Err(UsageError::new(
            "--http_body_timeout must be longer than 0: it is how long a client may take to send a request's body, e.g. --http_body_timeout 30s",
        ));
    }
    Ok(limits)
}

fn agent_heartbeat(args: &DaemonArgs) -> Result<Option<AgentHeartbeat>, UsageError> {
    let Some(key) = args.heartbeat.as_deref() else {
        return Ok(None);
    };
    let key = secret(Some(key)).ok_or_else(|| {
        UsageError::new("-b/--heartbeat is empty: give the heartbeat key, e.g. -b il1hbt…")
    })?;
    if args.heartbeat_interval < Duration::from_secs(1) {
        return Err(UsageError::new(
            "--heartbeat_interval must be at least 1s: the default is 30s",
        ));
    }
    Ok(Some(AgentHeartbeat {
        key,
        interval: args.heartbeat_interval,
    }))
}

fn topic_in_two_roles(topics: &Topics) -> Option<&str> {
    let roles = [&topics.events, &topics.heartbeats, &topics.policies];
    roles.iter().enumerate().find_map(|(i, role)| {
        role.iter()
            .find(|t| roles[i + 1..].iter().any(|other| other.contains(t)))
            .map(String::as_str)
    })
}

fn topic_list(flag: &str, topics: &[String]) -> Result<Vec<String>, UsageError> {
    topics
        .iter()
        .map(|t| {
            let t = t.trim();
            if t.is_empty() {
                Err(UsageError::new(format!(
                    "{flag} is empty: give a topic name"
                )))
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

fn field(flag: &str, path: &str) -> Result<FieldPath, UsageError> {
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(UsageError::new(format!(
            "{flag}: `{path}` is not a field name: use a name or a dot path such as data.email"
        )));
    }
    Ok(FieldPath::new(path))
}

fn base_url(flag: &str, text: &str) -> Result<Url, UsageError> {
    // Errors show the URL as given, but never a password in it.
    let shown = crate::secret::mask_url_credentials(text);
    let url = Url::parse(text.trim()).map_err(|e| {
        UsageError::new(format!(
            "{flag}: `{shown}` is not a URL ({e}): write it like https://api.ilert.com"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(UsageError::new(format!(
            "{flag}: `{shown}` must be an http:// or https:// URL with a host, like https://api.ilert.com"
        )));
    }
    Ok(url)
}

fn event_path(flag: &str, path: &str) -> Result<EventPath, UsageError> {
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(UsageError::new(format!(
            "{flag}: `{path}` must be a path starting with /, e.g. /api/v1/events/kafka/{{key}}"
        )));
    }
    Ok(if path.contains("{key}") {
        EventPath::PerKey(path.to_string())
    } else if path.trim_end_matches('/') == "/api/events" {
        EventPath::Generic
    } else {
        return Err(UsageError::new(format!(
            "{flag}: `{path}` has no {{key}} placeholder: use /api/events or a path with {{key}}, e.g. /api/v1/events/kafka/{{key}}"
        )));
    })
}

fn positive(flag: &str, duration: Duration) -> Result<Duration, UsageError> {
    if duration.is_zero() {
        Err(UsageError::new(format!("{flag} must be longer than 0")))
    } else {
        Ok(duration)
    }
}
