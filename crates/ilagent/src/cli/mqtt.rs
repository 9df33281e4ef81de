//! Flags of the MQTT source: broker, login, TLS, QoS, the durable buffer and shared
//! subscriptions. Names and short letters follow the public ilagent documentation.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse_duration;

/// Where the broker is and how to log in: shared by the source (`daemon`) and `produce`.
/// The client id (`-n`) is not here: each command has its own default, so that a
/// `produce` does not take over the daemon's session.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct MqttConnectionArgs {
    /// MQTT broker host (starts the MQTT source).
    #[arg(short = 'm', long, env = "ILAGENT_MQTT_HOST")]
    pub mqtt_host: Option<String>,

    /// MQTT broker port.
    #[arg(short = 'q', long, env = "ILAGENT_MQTT_PORT", default_value_t = 1883)]
    pub mqtt_port: u16,

    /// User name for the broker login (needs a password).
    #[arg(long, env = "ILAGENT_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,

    /// Password for the broker login; prefer the environment variable.
    #[arg(long, env = "ILAGENT_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,

    /// Connect with TLS (system root certificates unless --mqtt_ca is given).
    #[arg(long, env = "ILAGENT_MQTT_TLS")]
    pub mqtt_tls: bool,

    /// CA certificate (PEM) that signed the broker's certificate; implies --mqtt_tls.
    #[arg(long, env = "ILAGENT_MQTT_CA")]
    pub mqtt_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS; needs --mqtt_client_key.
    #[arg(long, env = "ILAGENT_MQTT_CLIENT_CERT")]
    pub mqtt_client_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "ILAGENT_MQTT_CLIENT_KEY")]
    pub mqtt_client_key: Option<PathBuf>,

    /// MQTT protocol version: 3 (3.1.1) or 5. Default: 5 with --mqtt_shared_group, else 3.
    #[arg(long, env = "ILAGENT_MQTT_VERSION", value_enum)]
    pub mqtt_version: Option<MqttVersion>,

    /// Largest MQTT packet accepted, in bytes (suffixes KiB and MiB allowed).
    #[arg(long, env = "ILAGENT_MQTT_MAX_PACKET_SIZE", value_parser = parse_size, default_value = "1MiB")]
    pub mqtt_max_packet_size: usize,
}

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct MqttArgs {
    #[command(flatten)]
    pub connection: MqttConnectionArgs,

    /// MQTT client id; also names the broker-side session that keeps unacknowledged messages.
    #[arg(
        short = 'n',
        long,
        env = "ILAGENT_MQTT_NAME",
        default_value = "ilagent"
    )]
    pub mqtt_name: String,

    /// How often the certificate files are checked for changes (then the agent reconnects
    /// with them, if they are valid).
    #[arg(long, env = "ILAGENT_MQTT_TLS_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub mqtt_tls_reload_interval: Duration,

    /// QoS of the subscriptions: 0 (needs --mqtt_buffer), 1 or 2.
    #[arg(long, env = "ILAGENT_MQTT_QOS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub mqtt_qos: u8,

    /// Write every message to the SQLite file (-f) first and acknowledge it then; a worker
    /// delivers from there.
    #[arg(long, env = "ILAGENT_MQTT_BUFFER")]
    pub mqtt_buffer: bool,

    /// Join this MQTT v5 shared-subscription group (`$share/GROUP/topic`), so that several
    /// agents split the stream.
    #[arg(long, env = "ILAGENT_MQTT_SHARED_GROUP")]
    pub mqtt_shared_group: Option<String>,

    /// Messages delivered in parallel across alert keys (and held in memory) at most.
    #[arg(long, env = "ILAGENT_MQTT_MAX_IN_FLIGHT", default_value_t = 256)]
    pub mqtt_max_in_flight: usize,

    /// Without --mqtt_buffer: when this many messages are unacknowledged, the unsettled ones
    /// are written to the SQLite file (-f) and acknowledged, so the broker keeps sending.
    /// Keep it below the broker's in-flight window (Mosquitto: max_inflight_messages, 20).
    #[arg(long, env = "ILAGENT_MQTT_MAX_UNACKED", default_value_t = 10)]
    pub mqtt_max_unacked: usize,

    /// Without --mqtt_buffer: a message not settled this long after it arrived is written to
    /// the SQLite file (-f) and acknowledged (with every unacknowledged one before it).
    #[arg(long, env = "ILAGENT_MQTT_SPILL_AFTER", value_parser = parse_duration, default_value = "1s")]
    pub mqtt_spill_after: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "3", alias = "3.1.1", alias = "4")]
    V3,
    /// MQTT 5.
    #[value(name = "5")]
    V5,
}

/// `1048576`, `512KiB`, `1MiB`, `1GiB` (also `K`/`KB`/`M`/`MB`/`G`/`GB`, counted in powers
/// of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write it like 1048576, 512KiB, 1MiB or 1GiB"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            format!("`{text}` is not a size: write it like 1048576, 512KiB, 1MiB or 1GiB")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_plain_bytes_and_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("512 KiB"), Ok(524_288));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("big").is_err());
    }
}
