//! The agents under the soak and what is sampled from them: VmRSS, the entries of
//! /proc/PID/fd, the size of the SQLite file with its WAL (`-f` and `-f`-wal) and, from
//! their /metrics, the dead letters and the queue depth.
//!
//! One agent cannot run MQTT both ways (`--mqtt_buffer` is for every subscription), so
//! there are two: `a` with Kafka, MQTT direct and the HTTP proxy, `b` with MQTT buffered.
//! Both run with the production defaults (rate limits on), `--shutdown_timeout 10s`
//! aside.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use ilert_standin::StandIn;
use serde::Serialize;

use crate::agent_process::AgentProcess;

pub struct Agent {
    pub name: &'static str,
    pub process: AgentProcess,
    pub db: PathBuf,
    /// The port serving /metrics (`-p` for a, `--metrics_port` for b).
    pub metrics_port: u16,
}

/// One agent at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentSample {
    pub rss_mib: f64,
    pub fds: f64,
    /// SQLite file plus its WAL, MiB.
    pub sqlite_mib: f64,
    /// Of `fds`, the sockets.
    pub sockets: f64,
    /// `ilagent_dead_letters`: rows in the SQLite file's dead letters (`None` when /metrics
    /// did not answer).
    pub dead_letters: Option<f64>,
    /// `ilagent_queue_depth`: rows queued for delivery.
    pub queue_depth: Option<f64>,
    /// `ilagent_memory_allocated_bytes` in MiB: what the agent's objects take, as the
    /// allocator counts it (an RSS that grows while this stays flat is fragmentation).
    pub allocated_mib: Option<f64>,
}

impl Agent {
    /// Starts `binary -f <dir>/<name>.db3 daemon --shutdown_timeout 10s <args>`, pointed at
    /// the stand-in; its output goes to `<dir>/<name>.log`.
    pub fn start(
        name: &'static str,
        binary: &Path,
        dir: &Path,
        stand_in: &StandIn,
        metrics_port: u16,
        args: &[String],
    ) -> Result<Agent> {
        let db = dir.join(format!("{name}.db3"));
        let mut all: Vec<String> = vec![
            "-f".into(),
            db.display().to_string(),
            "daemon".into(),
            "--shutdown_timeout".into(),
            "10s".into(),
            "--http_bind".into(),
            "127.0.0.1".into(),
        ];
        all.extend(args.iter().cloned());
        let envs = vec![
            ("ILERT_API_URL".to_string(), stand_in.url()),
            ("ILAGENT_ILERT_BEAT_URL".to_string(), stand_in.url()),
        ];
        let log = dir.join(format!("{name}.log"));
        let process = AgentProcess::start(binary, &all, &envs, &log)?;
        Ok(Agent {
            name,
            process,
            db,
            metrics_port,
        })
    }

    /// Fails with the log tail when the agent has exited.
    pub fn ensure_alive(&mut self) -> Result<()> {
        match self.process.exit_status() {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "agent {} exited ({status}); its log ends with:\n{}",
                self.name,
                self.process.log_tail()
            ),
        }
    }

    /// The SQLite file and its WAL, in bytes.
    pub fn sqlite_bytes(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.db.display()));
        [&self.db, &wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The agent's /metrics text (`None` when it does not answer three times). `client`
    /// should keep no idle connections: the agent closes idle ones after
    /// `--http_header_timeout`, and a request on one it is closing fails.
    pub async fn metrics(&self, client: &reqwest::Client) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        for _ in 0..3 {
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => {
                    if let Ok(text) = response.text().await {
                        return Some(text);
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        None
    }

    /// Sockets among the open file descriptors.
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.pid()))
            .map(|entries| {
                entries
                    .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    pub async fn sample(&self, client: &reqwest::Client) -> AgentSample {
        let metrics = self.metrics(client).await;
        let gauge = |name| metrics.as_deref().map(|m| metric(m, name, None));
        AgentSample {
            rss_mib: self.process.rss_mb().unwrap_or(0.0),
            fds: self.process.open_fds().unwrap_or(0) as f64,
            sockets: self.sockets() as f64,
            sqlite_mib: self.sqlite_bytes() as f64 / (1024.0 * 1024.0),
            dead_letters: gauge("ilagent_dead_letters"),
            queue_depth: gauge("ilagent_queue_depth"),
            allocated_mib: gauge("ilagent_memory_allocated_bytes").map(|b| b / (1024.0 * 1024.0)),
        }
    }
}

/// The sum of every series of metric `name` in Prometheus text, optionally only those with
/// the label `key="value"` (0 when there is none).
pub fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if let Some((key, wanted)) = label {
                let pair = format!("{key}=\"{wanted}\"");
                if !labels.split(',').any(|l| l.trim() == pair) {
                    return None;
                }
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |sum, v| sum + v)
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn metrics_are_summed_by_name_and_label() {
        let text = "# HELP x\nilagent_dead_letters 3\nilagent_dead_letters_more 9\n\
                    ilagent_dead_letter_writes_total{source=\"kafka\"} 4\n\
                    ilagent_dead_letter_writes_total{source=\"mqtt\"} 5\n";
        assert_eq!(metric(text, "ilagent_dead_letters", None), 3.0);
        assert_eq!(metric(text, "ilagent_dead_letter_writes_total", None), 9.0);
        let kafka = Some(("source", "kafka"));
        assert_eq!(metric(text, "ilagent_dead_letter_writes_total", kafka), 4.0);
        assert_eq!(metric(text, "missing", None), 0.0);
    }
}
