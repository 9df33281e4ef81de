//! The agent under test as a separate process, and what /proc says about it: peak and
//! current resident memory (VmHWM, VmRSS), open file descriptors and CPU seconds
//! (utime + stime). Its output goes to a log file, so that a scenario can tell why it
//! exited (the proxy scenario looks for a refused `-p`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long the agent gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of the log an error message quotes.
const LOG_TAIL_BYTES: usize = 3000;

pub struct AgentProcess {
    child: Child,
    log: PathBuf,
    /// Set once the child was reaped (by [`AgentProcess::exit_status`]).
    exited: Option<ExitStatus>,
}

impl AgentProcess {
    /// Starts `binary args` with `envs` added and `RUST_LOG` removed; stdout and stderr go
    /// to `log`.
    pub fn start(
        binary: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} (build it with cargo build --release -p ilagent)",
                binary.display()
            )
        })?;
        Ok(AgentProcess {
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The exit status if the agent has exited (it is reaped then).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The end of the agent's output, for error messages.
    pub fn log_tail(&self) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => {
                let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
                String::from_utf8_lossy(&bytes[start..]).into_owned()
            }
            Err(error) => format!("(cannot read {}: {error})", self.log.display()),
        }
    }

    /// Peak resident set size in bytes, from /proc/PID/status.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_kb("VmHWM:").map(|kb| kb * 1024)
    }

    /// Resident set size now, in MiB.
    pub fn rss_mb(&self) -> Option<f64> {
        self.status_kb("VmRSS:").map(|kb| kb as f64 / 1024.0)
    }

    /// A `kB` field of /proc/PID/status.
    fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors now: the entries of /proc/PID/fd.
    pub fn open_fds(&self) -> Option<usize> {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).ok()?;
        Some(entries.count())
    }

    /// Peak RSS in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0))
    }

    /// User plus system CPU seconds so far, from /proc/PID/stat.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may contain spaces) start after ") ".
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / clock_ticks_per_second())
    }

    /// SIGTERM, then up to [`STOP_TIMEOUT`] for a clean exit, then SIGKILL.
    pub fn stop(mut self) {
        if self.exit_status().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("the agent did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The machine's 1-minute load average, from /proc/loadavg.
pub fn load_average_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
