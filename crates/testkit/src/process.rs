//! A broker child process owned by a test.
//!
//! Both brokers are external programs. A test must never leave one running, and when a broker
//! fails to start the test failure should say why, so the child's output goes to a log file
//! whose tail ends up in the error, and `Drop` kills and reaps the child.

use std::env;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::ports::{try_free_port, wait_for_port_while};

/// How much of a log file an error message quotes.
const LOG_TAIL_BYTES: u64 = 4096;
/// How long a broker may take to accept connections; both usually take a few milliseconds,
/// but a loaded CI machine can be slow.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts tried when the freshly chosen port turned out to be taken.
const START_ATTEMPTS: u32 = 3;

/// A running child process; killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `command` with stdin closed and stdout/stderr written to `log` (truncated first).
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        log: &Path,
    ) -> anyhow::Result<ChildProcess> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(ChildProcess {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// Waits until the child accepts TCP connections on 127.0.0.1:`port`; fails early if the
    /// child exits first.
    pub(crate) fn wait_for_port(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let name = self.name;
        let child = &mut self.child;
        wait_for_port_while(port, timeout, || match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!("{name} exited before listening: {status}")),
            Err(err) => Err(anyhow!("checking whether {name} is still running: {err}")),
        })
    }

    /// SIGTERM, then up to `timeout` for the child to exit (a broker saves its state on
    /// the way out), then SIGKILL. Always reaps the child.
    pub(crate) fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the child has exited.
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Errors mean the child is already gone; nothing else to do either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last [`LOG_TAIL_BYTES`] of a log file, or a note saying why it could not be read.
pub(crate) fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => format!("({} is empty)", path.display()),
        Ok(text) => text,
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// Whether a log file mentions a failure to bind, so a start can be retried on another port.
fn log_says_address_in_use(path: &Path) -> bool {
    fs::read_to_string(path)
        .map(|text| text.to_ascii_lowercase().contains("address already in use"))
        .unwrap_or(false)
}

/// Starts a server on a free port: `command_for(port)` builds the command (writing any config
/// it needs), its output goes to `dir/<name>.log`, and this waits until the port accepts
/// connections. When the port turned out to be taken by someone else in the meantime, it tries
/// again on another port. On failure the error quotes the tail of the log.
pub(crate) fn start_on_free_port(
    name: &'static str,
    dir: &Path,
    mut command_for: impl FnMut(u16) -> anyhow::Result<Command>,
) -> anyhow::Result<(ChildProcess, u16)> {
    let log = dir.join(format!("{name}.log"));
    let mut attempt = 1;
    loop {
        let port = try_free_port()?;
        let command = command_for(port)?;
        let program = command.get_program().to_owned();
        let mut process = ChildProcess::spawn(name, command, &log)?;
        let err = match process.wait_for_port(port, START_TIMEOUT) {
            Ok(()) => return Ok((process, port)),
            Err(err) => err,
        };
        let port_taken = process.has_exited() && log_says_address_in_use(&log);
        // Kill and reap before reading the log so that everything it wrote is there.
        drop(process);
        if !port_taken || attempt >= START_ATTEMPTS {
            bail!(
                "{name} ({}) did not start on 127.0.0.1:{port}: {err:#}\n--- tail of {} ---\n{}",
                Path::new(&program).display(),
                log.display(),
                log_tail(&log)
            );
        }
        attempt += 1;
    }
}

/// Whether `path` is a file with an execute bit set.
pub(crate) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first executable `name` in the directories of a `PATH`-style list.
pub(crate) fn find_on_path(path_var: &OsStr, name: &str) -> Option<PathBuf> {
    env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}
