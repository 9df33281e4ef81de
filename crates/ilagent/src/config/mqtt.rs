//! Validation of the MQTT source's flags: broker, login, TLS files, QoS with or without the
//! buffer, shared subscriptions and the protocol version.

use std::time::Duration;

use super::UsageError;
use crate::cli::{MqttArgs, MqttConnectionArgs, MqttVersion};
use crate::secret::Secret;
use crate::sources::mqtt::tls::TlsFiles;

/// The smallest packet limit that still leaves room for a topic and a small payload.
const MIN_PACKET_SIZE: usize = 1024;
/// MQTT's own limit: the remaining length is at most 268,435,455 bytes.
const MAX_PACKET_SIZE: usize = 268_435_455;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Also the name of the broker-side session that keeps unacknowledged messages.
    pub client_id: String,
    pub version: MqttVersion,
    /// 0, 1 or 2; 0 only with the buffer.
    pub qos: u8,
    pub credentials: Option<(String, Secret)>,
    /// `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    pub tls_reload_interval: Duration,
    /// `--mqtt_buffer`: acknowledge on the SQLite write, deliver from the queue.
    pub buffer: bool,
    pub shared_group: Option<String>,
    pub max_packet_size: usize,
    pub max_in_flight: usize,
    /// Direct mode: unacknowledged messages that make the unsettled ones spill to SQLite.
    pub max_unacked: usize,
    /// Direct mode: the age at which an unsettled message spills to SQLite.
    pub spill_after: Duration,
}

impl MqttConfig {
    /// `None` when `-m/--mqtt_host` is not given.
    pub fn from_args(args: &MqttArgs) -> Result<Option<MqttConfig>, UsageError> {
        let Some(broker) = MqttBroker::from_args(&args.connection)? else {
            return Ok(None);
        };
        let client_id = client_id(&args.mqtt_name)?;
        if args.mqtt_qos == 0 && !args.mqtt_buffer {
            return Err(UsageError::new(
                "--mqtt_qos 0 needs --mqtt_buffer: with QoS 0 there is no broker acknowledgement to delay when ilert delivery fails; use --mqtt_qos 1 or 2, or add --mqtt_buffer to accept QoS 0 messages",
            ));
        }
        if args.mqtt_max_in_flight == 0 {
            return Err(UsageError::new(
                "--mqtt_max_in_flight must be at least 1; the default is 256",
            ));
        }
        if args.mqtt_max_unacked == 0 {
            return Err(UsageError::new(
                "--mqtt_max_unacked must be at least 1; the default is 10 (half of Mosquitto's max_inflight_messages 20)",
            ));
        }
        if args.mqtt_spill_after < Duration::from_millis(10) {
            return Err(UsageError::new(
                "--mqtt_spill_after must be at least 10ms; the default is 1s",
            ));
        }
        if args.mqtt_tls_reload_interval < Duration::from_millis(100) {
            return Err(UsageError::new(
                "--mqtt_tls_reload_interval must be at least 100ms; the default is 30s",
            ));
        }
        let shared_group = shared_group(args.mqtt_shared_group.as_deref())?;
        let version = args
            .connection
            .mqtt_version
            .unwrap_or(if shared_group.is_some() {
                MqttVersion::V5
            } else {
                MqttVersion::V3
            });
        Ok(Some(MqttConfig {
            host: broker.host,
            port: broker.port,
            client_id,
            version,
            qos: args.mqtt_qos,
            credentials: broker.credentials,
            tls: broker.tls,
            tls_reload_interval: args.mqtt_tls_reload_interval,
            buffer: args.mqtt_buffer,
            shared_group,
            max_packet_size: broker.max_packet_size,
            max_in_flight: args.mqtt_max_in_flight,
            max_unacked: args.mqtt_max_unacked,
            spill_after: args.mqtt_spill_after,
        }))
    }

    /// The filter to subscribe for a configured topic: `$share/GROUP/topic` in a group.
    pub fn subscription(&self, topic: &str) -> String {
        match &self.shared_group {
            Some(group) if !topic.starts_with("$share/") => format!("$share/{group}/{topic}"),
            _ => topic.to_string(),
        }
    }
}

/// The broker and the login: what the source and `produce` both need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttBroker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, Secret)>,
    /// `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    pub max_packet_size: usize,
}

impl MqttBroker {
    /// `None` when `-m/--mqtt_host` is not given.
    pub fn from_args(args: &MqttConnectionArgs) -> Result<Option<MqttBroker>, UsageError> {
        let Some(host) = args.mqtt_host.as_deref() else {
            return Ok(None);
        };
        let host = host.trim();
        if host.is_empty() {
            return Err(UsageError::new(
                "-m/--mqtt_host is empty: give the broker's host, e.g. -m 127.0.0.1",
            ));
        }
        if args.mqtt_port == 0 {
            return Err(UsageError::new(
                "-q/--mqtt_port 0 is not a port: the MQTT default is 1883",
            ));
        }
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&args.mqtt_max_packet_size) {
            return Err(UsageError::new(format!(
                "--mqtt_max_packet_size {} is out of range: give between 1KiB and 256MiB; the default is 1MiB",
                args.mqtt_max_packet_size
            )));
        }
        Ok(Some(MqttBroker {
            host: host.to_string(),
            port: args.mqtt_port,
            credentials: credentials(args)?,
            tls: tls(args)?,
            max_packet_size: args.mqtt_max_packet_size,
        }))
    }
}

/// `-n/--mqtt_name`, trimmed; never empty.
pub(crate) fn client_id(name: &str) -> Result<String, UsageError> {
    let client_id = name.trim();
    if client_id.is_empty() {
        return Err(UsageError::new(
            "-n/--mqtt_name is empty: give a client id, e.g. -n ilagent",
        ));
    }
    Ok(client_id.to_string())
}

fn shared_group(group: Option<&str>) -> Result<Option<String>, UsageError> {
    let Some(group) = group.map(str::trim) else {
        return Ok(None);
    };
    if group.is_empty() || group.contains(['/', '+', '#']) {
        return Err(UsageError::new(format!(
            "--mqtt_shared_group `{group}` is not a group name: use a name without /, + and #, e.g. --mqtt_shared_group ilagent"
        )));
    }
    Ok(Some(group.to_string()))
}

fn credentials(args: &MqttConnectionArgs) -> Result<Option<(String, Secret)>, UsageError> {
    let username = args
        .mqtt_username
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    // Passwords are taken as they are: spaces may be part of them.
    let password = args
        .mqtt_password
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    match (username, password) {
        (Some(user), Some(password)) => Ok(Some((user.to_string(), password))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(UsageError::new(
            "--mqtt_username needs a password: set ILAGENT_MQTT_PASSWORD (or --mqtt_password)",
        )),
        (None, Some(_)) => Err(UsageError::new(
            "--mqtt_password needs --mqtt_username: give the user name the password belongs to",
        )),
    }
}

fn tls(args: &MqttConnectionArgs) -> Result<Option<TlsFiles>, UsageError> {
    let client = match (&args.mqtt_client_cert, &args.mqtt_client_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(UsageError::new(
                "--mqtt_client_cert needs --mqtt_client_key: give the certificate's private key for mutual TLS",
            ));
        }
        (None, Some(_)) => {
            return Err(UsageError::new(
                "--mqtt_client_key needs --mqtt_client_cert: give the certificate the key belongs to",
            ));
        }
    };
    // Certificate files only make sense with TLS, so they switch it on.
    if !args.mqtt_tls && args.mqtt_ca.is_none() && client.is_none() {
        return Ok(None);
    }
    let files = TlsFiles {
        ca: args.mqtt_ca.clone(),
        client,
    };
    files
        .load()
        .map_err(|e| UsageError::new(format!("{e}: fix or replace the file")))?;
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn args(extra: &[&str]) -> MqttArgs {
        let mut argv = vec!["ilagent", "daemon", "-m", "broker", "-e", "t"];
        argv.extend(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Daemon(daemon) => daemon.mqtt,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = MqttConfig::from_args(&args(&[])).unwrap().unwrap();
        assert_eq!(
            (config.port, config.client_id.as_str(), config.qos),
            (1883, "ilagent", 1)
        );
        assert_eq!(config.version, MqttVersion::V3);
        assert_eq!(config.max_packet_size, 1024 * 1024);
        assert_eq!(config.tls_reload_interval, Duration::from_secs(30));
        assert!(config.tls.is_none() && !config.buffer && config.credentials.is_none());
        assert_eq!(
            (config.max_unacked, config.spill_after),
            (10, Duration::from_secs(1))
        );
    }

    #[test]
    fn spill_limits_must_be_usable() {
        let error = MqttConfig::from_args(&args(&["--mqtt_max_unacked", "0"])).unwrap_err();
        assert!(error.0.contains("--mqtt_max_unacked"), "{error}");
        let error = MqttConfig::from_args(&args(&["--mqtt_spill_after", "0s"])).unwrap_err();
        assert!(error.0.contains("--mqtt_spill_after"), "{error}");
        let config = MqttConfig::from_args(&args(&["--mqtt_spill_after", "250ms"]))
            .unwrap()
            .unwrap();
        assert_eq!(config.spill_after, Duration::from_millis(250));
    }

    #[test]
    fn a_shared_group_defaults_to_v5_and_prefixes_the_subscriptions() {
        let config = MqttConfig::from_args(&args(&["--mqtt_shared_group", "g"]))
            .unwrap()
            .unwrap();
        assert_eq!(config.version, MqttVersion::V5);
        assert_eq!(config.subscription("a/+"), "$share/g/a/+");
        assert_eq!(config.subscription("$share/h/a"), "$share/h/a");
        let v3 = MqttConfig::from_args(&args(&["--mqtt_shared_group", "g", "--mqtt_version", "3"]))
            .unwrap()
            .unwrap();
        assert_eq!(v3.version, MqttVersion::V3);
    }

    #[test]
    fn qos_0_needs_the_buffer() {
        let error = MqttConfig::from_args(&args(&["--mqtt_qos", "0"])).unwrap_err();
        assert!(error.0.contains("--mqtt_buffer"), "{error}");
        assert!(
            MqttConfig::from_args(&args(&["--mqtt_qos", "0", "--mqtt_buffer"]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn password_is_kept_as_a_secret_and_needs_a_user() {
        let config =
            MqttConfig::from_args(&args(&["--mqtt_username", "u", "--mqtt_password", "p w"]))
                .unwrap()
                .unwrap();
        let (user, password) = config.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose()), ("u", "p w"));
        assert!(MqttConfig::from_args(&args(&["--mqtt_password", "p"])).is_err());
        assert!(MqttConfig::from_args(&args(&["--mqtt_username", "u"])).is_err());
    }
}
