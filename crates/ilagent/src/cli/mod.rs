//! The command line, flag for flag compatible with the public ilagent documentation.
//!
//! Flags keep their documented snake_case names (`--kafka_brokers`, `--map_key_etype`)
//! and short letters (`-m`, `-e`, `-r`, `-k`); older spellings stay as aliases. Every
//! daemon flag can also come from an environment variable `ILAGENT_<FLAG_NAME>`, and
//! secrets can come only from the environment, so they need not appear in `ps`.
//! This module only parses; [`crate::config`] validates combinations.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::config::file::{ConfigFile, FileError};
use crate::ilert::{EventType, Priority};

mod daemon;
mod kafka;
mod mqtt;
mod produce;
mod queue;
mod queue_file;
mod self_watch;
mod service_links;

pub use daemon::DaemonArgs;
pub(crate) use kafka::DEFAULT_KAFKA_MAX_IN_FLIGHT;
pub use kafka::{KafkaArgs, KafkaConnectionArgs, OffsetReset, SaslMechanism, SecurityProtocol};
pub use mqtt::{MqttArgs, MqttConnectionArgs, MqttVersion, parse_size};
pub use produce::{Broker, ProduceArgs, ReplayArgs};
pub use queue::{QueueArgs, QueueCommand};
pub use queue_file::QueueFileArgs;
pub use self_watch::SelfWatchArgs;

#[derive(Debug, Parser)]
#[command(
    name = "ilagent",
    version,
    about = "The ilert agent: delivers events, heartbeats and escalation-policy updates from Kafka, MQTT and HTTP to ilert.",
    rename_all = "snake_case"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the environment, as [`clap::Parser::parse`] does (exiting
    /// with clap's message on an error), except that Kubernetes service links in our
    /// variables are ignored ([`service_links`]); returns the variables ignored, for a
    /// debug line once logging is set up.
    pub fn parse_from_env() -> (Cli, Vec<&'static str>) {
        use clap::{CommandFactory, FromArgMatches};
        let (command, ignored) =
            service_links::ignore_service_links(Cli::command(), |name| std::env::var(name).ok());
        let argv: Vec<OsString> = std::env::args_os().collect();
        let matches = command.clone().get_matches_from(&argv);
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return match Cli::from_arg_matches(&matches) {
                Ok(cli) => (cli, ignored),
                Err(error) => error.exit(),
            };
        };
        let exit_usage = |error: FileError| -> ! {
            eprintln!("error: {error}");
            std::process::exit(2)
        };
        let file = ConfigFile::read(&path).unwrap_or_else(|e| exit_usage(e));
        let file_args = file
            .args_for(&command, &matches)
            .unwrap_or_else(|e| exit_usage(e));
        let mut full = argv;
        full.extend(file_args.global.iter().cloned());
        if matches.subcommand_name() == Some("daemon") {
            full.extend(file_args.daemon.iter().cloned());
        }
        let matches = command.get_matches_from(full);
        match Cli::from_arg_matches(&matches) {
            Ok(mut cli) => {
                cli.global.config_file = Some(Arc::new(file));
                cli.global.config_daemon_args = file_args.daemon;
                (cli, ignored)
            }
            Err(error) => error.exit(),
        }
    }
}

/// Flags every command takes, before or after the command name.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct GlobalArgs {
    /// Log more: -v warn, -vv info, -vvv debug, -vvvv trace (RUST_LOG overrides).
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// SQLite file for the durable queues.
    #[arg(
        short = 'f',
        long,
        global = true,
        env = "ILAGENT_FILE",
        default_value = "./ilagent.db3"
    )]
    pub file: PathBuf,

    /// A TOML configuration file: the daemon's flags by their long names, and [[route]]
    /// tables. Flags and environment variables win over it.
    #[arg(long, global = true, env = "ILAGENT_CONFIG")]
    pub config: Option<PathBuf>,

    /// The file `--config` names, read and checked.
    #[arg(skip)]
    pub config_file: Option<Arc<ConfigFile>>,

    /// The daemon flags the file sets (for `map` and `check`, which map as the daemon does).
    #[arg(skip)]
    pub config_daemon_args: Vec<OsString>,

    /// Log line format: `text` for people, `json` for log shippers.
    #[arg(long, global = true, env = "ILAGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Base URL of the ilert API (events, legacy heartbeats, escalation policies).
    #[arg(
        long,
        global = true,
        env = "ILERT_API_URL",
        default_value = "https://api.ilert.com"
    )]
    pub ilert_url: String,

    /// Base URL for heartbeat pings of new heartbeat monitors.
    #[arg(
        long,
        global = true,
        env = "ILAGENT_ILERT_BEAT_URL",
        default_value = "https://beat.ilert.com"
    )]
    pub ilert_beat_url: String,

    /// How long to wait for a connection to ilert.
    #[arg(long, global = true, env = "ILAGENT_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,

    /// How long one request to ilert may take before it counts as failed (and is retried).
    #[arg(long, global = true, env = "ILAGENT_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// Send one event to ilert; exits 0 only when ilert accepted it.
    Event(EventArgs),
    /// Ping one heartbeat; exits 0 only when ilert accepted the ping.
    Heartbeat(HeartbeatArgs),
    /// Run the agent: consume brokers, serve the local proxy, ping the agent's heartbeat.
    Daemon(Box<DaemonArgs>),
    /// Inspect the SQLite queue (-f): depth, dead letters; requeue or purge dead letters.
    /// Works while the daemon runs.
    Queue(QueueArgs),
    /// Show what the agent would do with one message (read from standard input): the route
    /// that takes it and the request it sends ilert, or why it skips or sets it aside.
    /// Exit 0, or 1 for a message that is invalid. No network.
    Map(MapArgs),
    /// Check the configuration (--config) and run its route tests; exit 0 only if every
    /// test passes.
    Check(CheckArgs),
    /// Publish messages to a Kafka or MQTT topic and wait for the broker's
    /// acknowledgements; prints one JSON line per message and exits 0 only when every one
    /// was acknowledged.
    Produce(Box<ProduceArgs>),
    /// Move the dead letters of a Kafka dead-letter topic back to the topics they came
    /// from, once their cause is fixed; committed on the dead-letter topic only after the
    /// source topic acknowledged them.
    Replay(Box<ReplayArgs>),
}

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct MapArgs {
    /// The topic the message arrives on (Kafka topic, MQTT topic, or the proxy's path).
    #[arg(long)]
    pub topic: String,

    /// Which source it comes from; without it, the source of the routes that have the
    /// topic (MQTT if the topic only matches MQTT filters), else Kafka.
    #[arg(long, value_enum)]
    pub source: Option<MapSource>,

    /// The Kafka message key.
    #[arg(long)]
    pub key: Option<String>,

    /// A Kafka header or MQTT user property, `name=value` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MapSource {
    Kafka,
    Mqtt,
    /// A request to the proxy: `--topic` is its path.
    Http,
}

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct CheckArgs {}

pub(crate) fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}` is not name=value"))
}

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct EventArgs {
    /// Integration key of the alert source.
    #[arg(
        short = 'k',
        long,
        visible_alias = "api_key",
        env = "ILERT_INTEGRATION_KEY",
        hide_env_values = true
    )]
    pub integration_key: Option<String>,

    /// ALERT, ACCEPT, RESOLVE or COMMENT.
    #[arg(short = 't', long, value_parser = parse_event_type, default_value = "ALERT")]
    pub event_type: EventType,

    /// What happened (required for ALERT).
    #[arg(short = 's', long)]
    pub summary: Option<String>,

    /// Correlates ACCEPT and RESOLVE with the ALERT they belong to.
    #[arg(short = 'i', long)]
    pub alert_key: Option<String>,

    /// HIGH or LOW.
    #[arg(short = 'o', long, value_parser = parse_priority)]
    pub priority: Option<Priority>,

    /// Longer description (markdown).
    #[arg(short = 'd', long)]
    pub details: Option<String>,

    /// URL of an image to attach (repeatable).
    #[arg(short = 'g', long = "image")]
    pub images: Vec<String>,

    /// URL of a link to attach (repeatable).
    #[arg(short = 'l', long = "link")]
    pub links: Vec<String>,

    /// Keep retrying transient failures until this much time has passed.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,

    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct HeartbeatArgs {
    /// Heartbeat key (`il1hbt…` keys use the legacy heartbeat endpoint).
    #[arg(
        short = 'k',
        long,
        visible_alias = "api_key",
        env = "ILERT_INTEGRATION_KEY",
        hide_env_values = true
    )]
    pub integration_key: Option<String>,

    /// Keep retrying transient failures until this much time has passed.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,

    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

/// How delivery retries and paces requests; shared by every command.
#[derive(Clone, Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct DeliveryArgs {
    /// Attempts before a message that keeps failing transiently is rejected (0 = unlimited).
    /// Kafka counts them only with --kafka_dlq_topic; without one it retries until ilert
    /// takes the message.
    #[arg(long, env = "ILAGENT_MAX_RETRIES", default_value_t = 100)]
    pub max_retries: u32,

    /// First backoff ceiling after a transient failure (full jitter below it).
    #[arg(long, env = "ILAGENT_BACKOFF_INITIAL", value_parser = parse_duration, default_value = "500ms")]
    pub backoff_initial: Duration,

    /// Longest backoff between attempts.
    #[arg(long, env = "ILAGENT_BACKOFF_MAX", value_parser = parse_duration, default_value = "60s")]
    pub backoff_max: Duration,

    /// Requests per integration key per window, ilert's limit (0 = no client-side limit).
    #[arg(long, env = "ILAGENT_RATE_LIMIT_EVENTS", default_value_t = 50)]
    pub rate_limit_events: u32,

    /// Pings per heartbeat key per window (0 = no client-side limit).
    #[arg(long, env = "ILAGENT_RATE_LIMIT_HEARTBEATS", default_value_t = 5)]
    pub rate_limit_heartbeats: u32,

    /// Requests per user API key per window (0 = no client-side limit).
    #[arg(long, env = "ILAGENT_RATE_LIMIT_API", default_value_t = 120)]
    pub rate_limit_api: u32,

    /// The window the rate limits count in.
    #[arg(long, env = "ILAGENT_RATE_LIMIT_WINDOW", value_parser = parse_duration, default_value = "60s")]
    pub rate_limit_window: Duration,
}

/// `30s`, `500ms`, `2m`, `1h 30m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration: write it like 30s, 500ms, 2m or 1h"))
}

fn parse_event_type(text: &str) -> Result<EventType, String> {
    text.parse()
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
    }

    #[test]
    fn documented_mqtt_command_parses() {
        let cli = Cli::try_parse_from([
            "ilagent",
            "daemon",
            "-m",
            "127.0.0.1",
            "-q",
            "1883",
            "-n",
            "ilagent",
            "-e",
            "ilert/events",
            "-r",
            "ilert/heartbeats",
            "-v",
            "-v",
        ])
        .unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("daemon expected")
        };
        assert_eq!(args.mqtt.connection.mqtt_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(args.mqtt.mqtt_qos, 1);
        assert_eq!(args.event_topics, ["ilert/events"]);
        assert_eq!(args.heartbeat_topics, ["ilert/heartbeats"]);
        assert_eq!(cli.global.verbose, 2);
    }

    #[test]
    fn the_agent_heartbeat_pings_every_30_seconds_by_default_as_ilagent_0_9() {
        let cli = Cli::try_parse_from(["ilagent", "daemon", "-b", "il1hbt-agent"]).unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("daemon expected")
        };
        assert_eq!(args.heartbeat_interval, Duration::from_secs(30));
    }

    /// ilert takes 700 requests a minute from one client IP: the default must let the Kafka
    /// source use all of it even when every answer takes the whole request timeout, and no
    /// more than that (each request under way holds an HTTP connection, about 40 KB).
    #[test]
    fn kafka_in_flight_default_covers_ilerts_per_ip_budget_at_the_request_timeout() {
        let cli = Cli::try_parse_from(["ilagent", "daemon", "--kafka_brokers", "k:9092"]).unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("daemon expected")
        };
        let in_flight = args.kafka.kafka_max_in_flight;
        assert_eq!(in_flight, 128);
        let per_ip_per_second = 700.0 / 60.0;
        let needed = per_ip_per_second * cli.global.request_timeout.as_secs_f64();
        assert!(
            (needed..2.0 * needed).contains(&(in_flight as f64)),
            "{in_flight} requests in parallel for {needed:.0} needed"
        );
    }

    #[test]
    fn documented_kafka_and_mapping_command_parses() {
        let cli = Cli::try_parse_from([
            "ilagent",
            "daemon",
            "--kafka_brokers",
            "localhost:9092",
            "--kafka_group_id",
            "ilagent",
            "-e",
            "events-topic",
            "-r",
            "heartbeats-topic",
            "--event_key",
            "il1api112115xxx",
            "--map_key_alert_key",
            "mCode",
            "--map_key_summary",
            "comment",
            "--map_key_etype",
            "state",
            "--map_val_etype_alert",
            "SET",
            "--map_val_etype_accept",
            "ACK",
            "--map_val_etype_resolve",
            "CLR",
            "--filter_key",
            "type",
            "--filter_val",
            "ALARM",
            "--shift_offset",
            "-1",
        ])
        .unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("daemon expected")
        };
        assert_eq!(
            args.kafka.connection.kafka_brokers.as_deref(),
            Some("localhost:9092")
        );
        assert_eq!(args.map_val_etype_resolve.as_deref(), Some("CLR"));
        assert_eq!(args.shift_offset, -1);
    }

    #[test]
    fn documented_event_command_parses() {
        let cli = Cli::try_parse_from([
            "ilagent",
            "event",
            "-k",
            "il1api123",
            "-t",
            "ALERT",
            "-s",
            "a summary from the shell",
            "-g",
            "u1",
            "-g",
            "u2",
            "-l",
            "l1",
            "-o",
            "LOW",
        ])
        .unwrap();
        let Command::Event(args) = cli.command else {
            panic!("event expected")
        };
        assert_eq!(args.images, ["u1", "u2"]);
        assert_eq!(args.priority, Some(Priority::Low));
    }
}
