//! The agent under fault: one process at a time on one SQLite file, killed with SIGKILL and
//! started again the way an orchestrator restarts a crashed container. An exit the run did
//! not cause is a crash: it is counted (and the run fails), and the agent is started again so
//! that the run can still count what was lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bench::agent_process::AgentProcess;
use tempfile::TempDir;
use tokio::time::Instant;

pub struct Agent {
    binary: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// `/ready` is asked here.
    ops_port: u16,
    process: Option<AgentProcess>,
    /// One log per start: `agent-N.log`.
    starts: usize,
    /// SIGKILLs the run sent.
    pub kills: usize,
    /// Exits the run did not cause, each with the end of its log.
    pub crashes: Vec<String>,
    // Last: the SQLite file and the logs outlive the process.
    dir: TempDir,
}

impl Agent {
    /// Starts `binary -f <tmp>/agent.db3 daemon --metrics_port P --shutdown_timeout 5s
    /// <args>` with ilert at `ilert_url`.
    pub fn start(binary: &Path, ilert_url: &str, args: Vec<String>) -> Result<Agent> {
        let mut agent = Agent::prepare(binary, ilert_url, args)?;
        agent.spawn()?;
        Ok(agent)
    }

    /// [`Agent::start`] without starting it: [`Agent::restart`] does.
    pub fn prepare(binary: &Path, ilert_url: &str, args: Vec<String>) -> Result<Agent> {
        let dir = tempfile::Builder::new()
            .prefix("ilagent-chaos-")
            .tempdir()
            .context("creating a temp dir for the agent")?;
        let ops_port = testkit::try_free_port()?;
        let envs = vec![
            ("ILERT_API_URL".to_string(), ilert_url.to_string()),
            ("ILAGENT_ILERT_BEAT_URL".to_string(), ilert_url.to_string()),
        ];
        Ok(Agent {
            binary: binary.to_path_buf(),
            args,
            envs,
            ops_port,
            process: None,
            starts: 0,
            kills: 0,
            crashes: Vec::new(),
            dir,
        })
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("agent.db3")
    }

    fn spawn(&mut self) -> Result<()> {
        let mut all: Vec<String> = vec![
            "-f".into(),
            self.db().display().to_string(),
            "daemon".into(),
            "--metrics_port".into(),
            self.ops_port.to_string(),
            "--http_bind".into(),
            "127.0.0.1".into(),
            "--shutdown_timeout".into(),
            "5s".into(),
        ];
        all.extend(self.args.iter().cloned());
        self.starts += 1;
        let log = self.dir.path().join(format!("agent-{}.log", self.starts));
        self.process = Some(AgentProcess::start(&self.binary, &all, &self.envs, &log)?);
        Ok(())
    }

    /// Records a crash (and starts the agent again) if it exited on its own.
    pub fn check(&mut self) -> Result<()> {
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        if let Some(status) = process.exit_status() {
            self.crashes.push(format!(
                "exited on its own ({status}):\n{}",
                process.log_tail()
            ));
            self.spawn()?;
        }
        Ok(())
    }

    /// SIGKILL (through [`AgentProcess`]'s drop) and start again at once.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.check()?;
        self.process = None;
        self.kills += 1;
        self.spawn()
    }

    /// SIGKILL, and no restart until [`Agent::restart`].
    pub fn kill(&mut self) -> Result<()> {
        self.check()?;
        self.process = None;
        self.kills += 1;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Starts the agent if the run had killed it.
    pub fn restart(&mut self) -> Result<()> {
        if self.process.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    /// Waits until `/ready` answers 200 (every source connected and subscribed).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/ready", self.ops_port);
        let client = testkit::http_client().build()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.check()?;
            if let Ok(response) = client.get(&url).send().await
                && response.status().as_u16() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "the agent was not ready within {timeout:?}; its log ends with:\n{}",
            self.log_tail()
        )
    }

    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map_or_else(String::new, AgentProcess::log_tail)
    }

    /// SIGTERM and the wait for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        self.check()?;
        if let Some(process) = self.process.take() {
            process.stop();
        }
        Ok(())
    }

    /// `ilagent queue status` of the SQLite file, as printed.
    pub fn queue_status(&self) -> Result<String> {
        let output = std::process::Command::new(&self.binary)
            .arg("-f")
            .arg(self.db())
            .args(["queue", "status"])
            .output()
            .context("running ilagent queue status")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Reasons of all the dead letters in the SQLite file (`queue dead_letters --json`,
    /// whose listing stops at 100 unless told otherwise).
    pub fn dead_letter_reasons(&self) -> Result<Vec<String>> {
        let output = std::process::Command::new(&self.binary)
            .arg("-f")
            .arg(self.db())
            .args(["queue", "dead_letters", "--json", "--limit", "4294967295"])
            .output()
            .context("running ilagent queue dead_letters")?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|row| row["reason"].as_str().unwrap_or_default().to_string())
            .collect())
    }
}
