//! Extra Mosquitto instances for MQTT tests.
//!
//! The machine's Mosquitto on 127.0.0.1:1883 is anonymous, plain TCP and shared by everything.
//! Tests for passwords, TLS, mTLS or special broker settings need a broker configured for them,
//! so each such test starts its own Mosquitto on a fresh port with a config, password file and
//! log in a temp dir of its own.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::process::{ChildProcess, find_on_path, start_on_free_port};

const HOST: &str = "127.0.0.1";

/// How an extra Mosquitto instance is configured.
///
/// The default is an anonymous, plain-TCP listener on 127.0.0.1.
#[derive(Debug, Clone, Default)]
pub struct MosquittoConfig {
    /// Users and passwords for a password file (made with `mosquitto_passwd -b`). When not
    /// empty, anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// Makes the listener a TLS listener.
    pub tls: Option<TlsFiles>,
    /// Raw config lines appended at the end of the generated config.
    pub extra: String,
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate (`certfile`).
    pub cert_file: PathBuf,
    /// The server certificate's private key (`keyfile`).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (`cafile` plus
    /// `require_certificate true`).
    pub client_ca: Option<PathBuf>,
}

/// A running Mosquitto instance of a test's own, on 127.0.0.1 and a port of its own.
///
/// Dropping it kills and reaps the broker and removes its temp dir (config, password file, log).
#[derive(Debug)]
pub struct Mosquitto {
    // Declared before `dir` so the process is gone before its directory is removed.
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl Mosquitto {
    /// Writes the config into a fresh temp dir, starts `mosquitto -c` on a free port and waits
    /// until it accepts connections. On failure the error quotes the tail of the broker's log.
    pub fn start(config: MosquittoConfig) -> anyhow::Result<Mosquitto> {
        let binary = mosquitto_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-mosquitto-")
            .tempdir()
            .context("creating a temp dir for mosquitto")?;
        let password_file = if config.users.is_empty() {
            None
        } else {
            let path = dir.path().join("passwd");
            write_password_file(&path, &config.users)?;
            Some(path)
        };
        let config_path = dir.path().join("mosquitto.conf");
        let (process, port) = start_on_free_port("mosquitto", dir.path(), |port| {
            let text = render_config(port, &config, password_file.as_deref())?;
            fs::write(&config_path, text)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let mut command = Command::new(&binary);
            command.arg("-c").arg(&config_path).current_dir(dir.path());
            Ok(command)
        })?;
        Ok(Mosquitto { process, port, dir })
    }

    /// Stops the broker with SIGTERM (so that a broker with `persistence true` writes its
    /// state) and starts it again with the same config, directory and port, as an operator's
    /// restart would. Returns once it accepts connections again. The log starts afresh
    /// with the new process.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.terminate(Duration::from_secs(10));
        let log = self.process.log_path().to_path_buf();
        let mut command = Command::new(mosquitto_binary()?);
        command
            .arg("-c")
            .arg(self.config_path())
            .current_dir(self.dir.path());
        self.process = ChildProcess::spawn("mosquitto", command, &log)?;
        self.process
            .wait_for_port(self.port, Duration::from_secs(30))
            .with_context(|| format!("restarting mosquitto on 127.0.0.1:{}", self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The broker's log (Mosquitto logs to stderr, which goes here).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// The broker's temp dir; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `mosquitto` on PATH, else Debian's /usr/sbin/mosquitto (not on a normal user's PATH).
fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    env::var_os("PATH")
        .and_then(|path_var| find_on_path(&path_var, "mosquitto"))
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/mosquitto");
            sbin.is_file().then_some(sbin)
        })
        .ok_or_else(|| {
            anyhow!(
                "mosquitto not found on PATH nor at /usr/sbin/mosquitto; run \
                 scripts/install-test-deps (installs the Debian packages mosquitto and \
                 mosquitto-clients)"
            )
        })
}

/// The `mosquitto_passwd` program (Debian ships it in the mosquitto package).
fn mosquitto_passwd_binary() -> anyhow::Result<PathBuf> {
    env::var_os("PATH")
        .and_then(|path_var| find_on_path(&path_var, "mosquitto_passwd"))
        .or_else(|| {
            ["/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"]
                .into_iter()
                .map(PathBuf::from)
                .find(|path| path.is_file())
        })
        .ok_or_else(|| {
            anyhow!(
                "mosquitto_passwd not found; run scripts/install-test-deps (installs mosquitto)"
            )
        })
}

fn write_password_file(path: &Path, users: &[(String, String)]) -> anyhow::Result<()> {
    let binary = mosquitto_passwd_binary()?;
    for (index, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new(&binary);
        if index == 0 {
            command.arg("-c");
        }
        command.arg("-b").arg(path).arg(user).arg(password);
        let output = command
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "mosquitto_passwd failed for user {user:?} ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    Ok(())
}

/// The config text for a broker on `port`.
fn render_config(
    port: u16,
    config: &MosquittoConfig,
    password_file: Option<&Path>,
) -> anyhow::Result<String> {
    let mut text = String::new();
    let mut line = |args: std::fmt::Arguments<'_>| {
        // Writing to a String cannot fail.
        let _ = text.write_fmt(args);
        text.push('\n');
    };
    line(format_args!(
        "# Written by testkit for one test; removed when it ends."
    ));
    // Running as root, Mosquitto switches to the user `mosquitto`, which could not read this
    // temp dir; `user root` keeps it as it is. As a non-root user the setting has no effect.
    line(format_args!("user root"));
    line(format_args!("persistence false"));
    line(format_args!("log_dest stderr"));
    line(format_args!("log_timestamp_format %Y-%m-%dT%H:%M:%S"));
    line(format_args!("connection_messages true"));
    line(format_args!("listener {port} {HOST}"));
    line(format_args!("allow_anonymous {}", password_file.is_none()));
    if let Some(path) = password_file {
        line(format_args!("password_file {}", config_path_value(path)?));
    }
    if let Some(tls) = &config.tls {
        line(format_args!(
            "certfile {}",
            config_path_value(&tls.cert_file)?
        ));
        line(format_args!(
            "keyfile {}",
            config_path_value(&tls.key_file)?
        ));
        if let Some(ca) = &tls.client_ca {
            line(format_args!("cafile {}", config_path_value(ca)?));
            line(format_args!("require_certificate true"));
        }
    }
    if !config.extra.is_empty() {
        line(format_args!("# extra"));
        line(format_args!("{}", config.extra.trim_end()));
    }
    Ok(text)
}

/// A path as a config value: absolute, on one line.
fn config_path_value(path: &Path) -> anyhow::Result<String> {
    let path =
        std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))?;
    if text.contains(['\n', '\r']) {
        bail!("{text:?} contains a line break and cannot go into a mosquitto config");
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_an_anonymous_plain_listener_on_loopback() {
        let text = render_config(4242, &MosquittoConfig::default(), None).unwrap();
        assert!(text.contains("\nlistener 4242 127.0.0.1\n"), "{text}");
        assert!(text.contains("\nallow_anonymous true\n"), "{text}");
        assert!(text.contains("\npersistence false\n"), "{text}");
        assert!(!text.contains("certfile"), "{text}");
        assert!(!text.contains("password_file"), "{text}");
    }

    #[test]
    fn users_and_client_ca_turn_on_passwords_and_client_certificates() {
        let config = MosquittoConfig {
            users: vec![("u".into(), "p".into())],
            tls: Some(TlsFiles {
                cert_file: "/certs/server.pem".into(),
                key_file: "/certs/server.key".into(),
                client_ca: Some("/certs/ca.pem".into()),
            }),
            extra: "max_inflight_messages 7\n".into(),
        };
        let text = render_config(4242, &config, Some(Path::new("/d/passwd"))).unwrap();
        for expected in [
            "\nallow_anonymous false\n",
            "\npassword_file /d/passwd\n",
            "\ncertfile /certs/server.pem\n",
            "\nkeyfile /certs/server.key\n",
            "\ncafile /certs/ca.pem\n",
            "\nrequire_certificate true\n",
            "\nmax_inflight_messages 7\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn tls_without_client_ca_does_not_require_client_certificates() {
        let config = MosquittoConfig {
            tls: Some(TlsFiles {
                cert_file: "/certs/server.pem".into(),
                key_file: "/certs/server.key".into(),
                client_ca: None,
            }),
            ..MosquittoConfig::default()
        };
        let text = render_config(4242, &config, None).unwrap();
        assert!(text.contains("\ncertfile /certs/server.pem\n"), "{text}");
        assert!(!text.contains("require_certificate"), "{text}");
        assert!(!text.contains("cafile"), "{text}");
    }
}
