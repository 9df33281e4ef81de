//! Flags of `ilagent daemon`: which sources to run, how to map their messages, how to
//! deliver them.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;

use super::{
    DeliveryArgs, KafkaArgs, MqttArgs, QueueFileArgs, SelfWatchArgs, parse_duration, parse_size,
};

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct DaemonArgs {
    // ---- sources ----
    /// Start the local HTTP proxy on this port.
    #[arg(short = 'p', long, env = "ILAGENT_PORT", help_heading = "Sources")]
    pub port: Option<u16>,

    /// Address the HTTP proxy and --metrics_port listen on (`127.0.0.1` keeps them to this
    /// machine).
    #[arg(
        long,
        env = "ILAGENT_HTTP_BIND",
        default_value = "0.0.0.0",
        help_heading = "HTTP proxy"
    )]
    pub http_bind: IpAddr,

    /// Require `Authorization: Bearer <token>` on /api/* (probes and metrics stay open).
    #[arg(
        long,
        env = "ILAGENT_HTTP_TOKEN",
        hide_env_values = true,
        help_heading = "HTTP proxy"
    )]
    pub http_token: Option<String>,

    /// Largest request body the proxy accepts (bytes, KiB, MiB); larger ones get 413.
    #[arg(long, env = "ILAGENT_HTTP_MAX_BODY", value_parser = parse_size, default_value = "1MiB", help_heading = "HTTP proxy")]
    pub http_max_body: usize,

    /// Connections served at once, per port; beyond it new ones wait to be accepted while
    /// idle keep-alive connections are closed to make room.
    #[arg(
        long,
        env = "ILAGENT_HTTP_MAX_CONNECTIONS",
        default_value_t = 1024,
        help_heading = "HTTP proxy"
    )]
    pub http_max_connections: usize,

    /// Requests to /api/* handled at once; beyond it they get 503 with Retry-After
    /// (/health, /ready and /metrics do not count).
    #[arg(
        long,
        env = "ILAGENT_HTTP_MAX_IN_FLIGHT",
        default_value_t = 256,
        help_heading = "HTTP proxy"
    )]
    pub http_max_in_flight: usize,

    /// Time to send a request's headers, counted from when the connection opened or its
    /// last answer went out: slow clients and idle keep-alive connections are closed after it.
    #[arg(long, env = "ILAGENT_HTTP_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "10s", help_heading = "HTTP proxy")]
    pub http_header_timeout: Duration,

    /// Time to send a request's whole body, counted from the end of its headers; a slower
    /// one gets 408 and the connection is closed.
    #[arg(long, env = "ILAGENT_HTTP_BODY_TIMEOUT", value_parser = parse_duration, default_value = "30s", help_heading = "HTTP proxy")]
    pub http_body_timeout: Duration,

    /// Serve /health, /ready and /metrics on this port too, on the --http_bind address (-p's
    /// port serves them as well).
    #[arg(long, env = "ILAGENT_METRICS_PORT", help_heading = "HTTP proxy")]
    pub metrics_port: Option<u16>,

    /// Ping this heartbeat key regularly while the agent is healthy.
    #[arg(
        short = 'b',
        long,
        env = "ILAGENT_HEARTBEAT",
        hide_env_values = true,
        help_heading = "Sources"
    )]
    pub heartbeat: Option<String>,

    /// How often to ping the -b heartbeat.
    #[arg(long, env = "ILAGENT_HEARTBEAT_INTERVAL", value_parser = parse_duration, default_value = "30s", help_heading = "Sources")]
    pub heartbeat_interval: Duration,

    /// Topic carrying events (repeatable; MQTT wildcards allowed).
    #[arg(
        short = 'e',
        long = "event_topic",
        visible_alias = "mqtt_event_topic",
        env = "ILAGENT_EVENT_TOPIC",
        value_delimiter = ',',
        help_heading = "Sources"
    )]
    pub event_topics: Vec<String>,

    /// Topic carrying heartbeats (repeatable; MQTT wildcards allowed).
    #[arg(
        short = 'r',
        long = "heartbeat_topic",
        visible_alias = "mqtt_heartbeat_topic",
        env = "ILAGENT_HEARTBEAT_TOPIC",
        value_delimiter = ',',
        help_heading = "Sources"
    )]
    pub heartbeat_topics: Vec<String>,

    /// Topic carrying escalation-policy updates (repeatable).
    #[arg(
        long = "policy_topic",
        env = "ILAGENT_POLICY_TOPIC",
        value_delimiter = ',',
        help_heading = "Sources"
    )]
    pub policy_topics: Vec<String>,

    #[command(flatten, next_help_heading = "Kafka")]
    pub kafka: KafkaArgs,

    #[command(flatten, next_help_heading = "MQTT")]
    pub mqtt: MqttArgs,

    #[command(flatten, next_help_heading = "Queue")]
    pub queue_file: QueueFileArgs,

    #[command(flatten, next_help_heading = "Self-monitoring")]
    pub self_watch: SelfWatchArgs,

    /// How long to finish in-flight work after SIGINT or SIGTERM before giving it back
    /// to the broker undelivered.
    #[arg(long, env = "ILAGENT_SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "30s", help_heading = "Sources")]
    pub shutdown_timeout: Duration,

    // ---- mapping ----
    /// Integration key for every event, overriding the payload's.
    #[arg(
        long,
        visible_alias = "mqtt_event_key",
        env = "ILAGENT_EVENT_KEY",
        hide_env_values = true,
        help_heading = "Mapping"
    )]
    pub event_key: Option<String>,

    /// Payload field (dot path) holding the event type.
    #[arg(
        long,
        visible_alias = "mqtt_map_key_etype",
        env = "ILAGENT_MAP_KEY_ETYPE",
        default_value = "eventType",
        help_heading = "Mapping"
    )]
    pub map_key_etype: String,

    /// Payload field (dot path) holding the summary.
    #[arg(
        long,
        visible_alias = "mqtt_map_key_summary",
        env = "ILAGENT_MAP_KEY_SUMMARY",
        default_value = "summary",
        help_heading = "Mapping"
    )]
    pub map_key_summary: String,

    /// Payload field (dot path) holding the alert key.
    #[arg(
        long,
        visible_alias = "mqtt_map_key_alert_key",
        env = "ILAGENT_MAP_KEY_ALERT_KEY",
        default_value = "alertKey",
        help_heading = "Mapping"
    )]
    pub map_key_alert_key: String,

    /// Payload value that means ALERT.
    #[arg(
        long,
        visible_alias = "mqtt_map_val_etype_alert",
        env = "ILAGENT_MAP_VAL_ETYPE_ALERT",
        help_heading = "Mapping"
    )]
    pub map_val_etype_alert: Option<String>,

    /// Payload value that means ACCEPT.
    #[arg(
        long,
        visible_alias = "mqtt_map_val_etype_accept",
        env = "ILAGENT_MAP_VAL_ETYPE_ACCEPT",
        help_heading = "Mapping"
    )]
    pub map_val_etype_accept: Option<String>,

    /// Payload value that means RESOLVE.
    #[arg(
        long,
        visible_alias = "mqtt_map_val_etype_resolve",
        env = "ILAGENT_MAP_VAL_ETYPE_RESOLVE",
        help_heading = "Mapping"
    )]
    pub map_val_etype_resolve: Option<String>,

    /// Only deliver messages that have this field (dot path).
    #[arg(
        long,
        visible_alias = "mqtt_filter_key",
        env = "ILAGENT_FILTER_KEY",
        help_heading = "Mapping"
    )]
    pub filter_key: Option<String>,

    /// ...and whose --filter_key field has this value (non-strings compare as JSON text).
    #[arg(
        long,
        visible_alias = "mqtt_filter_val",
        env = "ILAGENT_FILTER_VAL",
        help_heading = "Mapping"
    )]
    pub filter_val: Option<String>,

    /// Send the whole message payload as the event's customDetails.
    #[arg(
        long,
        env = "ILAGENT_FORWARD_MESSAGE_PAYLOAD",
        help_heading = "Mapping"
    )]
    pub forward_message_payload: bool,

    /// Payload fields whose values, concatenated in order, form the policy routing key.
    #[arg(
        long,
        env = "ILAGENT_POLICY_ROUTING_KEYS",
        value_delimiter = ',',
        help_heading = "Escalation policies"
    )]
    pub policy_routing_keys: Vec<String>,

    /// Payload field (dot path) holding the user's email.
    #[arg(
        long,
        env = "ILAGENT_MAP_KEY_EMAIL",
        default_value = "data.email",
        help_heading = "Escalation policies"
    )]
    pub map_key_email: String,

    /// Payload field (dot path) holding the shift (a number or a string holding one).
    #[arg(
        long,
        env = "ILAGENT_MAP_KEY_SHIFT",
        default_value = "data.shift",
        help_heading = "Escalation policies"
    )]
    pub map_key_shift: String,

    /// Added to the shift to get the zero-based escalation level (never below 0).
    #[arg(
        long,
        env = "ILAGENT_SHIFT_OFFSET",
        default_value_t = 0,
        allow_negative_numbers = true,
        help_heading = "Escalation policies"
    )]
    pub shift_offset: i64,

    /// ilert user API key for escalation-policy updates (a leading `Bearer ` is fine).
    #[arg(
        long,
        env = "ILERT_API_KEY",
        hide_env_values = true,
        help_heading = "Escalation policies"
    )]
    pub ilert_api_key: Option<String>,

    /// How long user and policy lookups are reused, to stay inside the API key's
    /// 120 requests a minute (0 = look up every time).
    #[arg(long, env = "ILAGENT_POLICY_CACHE_TTL", value_parser = parse_duration, default_value = "60s", help_heading = "Escalation policies")]
    pub policy_cache_ttl: Duration,

    // ---- delivery ----
    /// Path events are posted to, with `{key}` for the integration key
    /// (default: /api/v1/events/kafka/{key} for Kafka, /api/v1/events/mqtt/{key} for MQTT).
    #[arg(long, env = "ILAGENT_ILERT_EVENT_PATH", help_heading = "Delivery")]
    pub ilert_event_path: Option<String>,

    #[command(flatten, next_help_heading = "Delivery")]
    pub delivery: DeliveryArgs,
}
