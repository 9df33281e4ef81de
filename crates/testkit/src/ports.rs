//! Loopback ports for test brokers.
//!
//! Every test starts its own broker on its own port so tests can run in parallel and never see
//! each other's state. The OS hands out a free port when binding port 0; we release it right away
//! and the broker binds it moments later. A process-wide record of ports already handed out keeps
//! two tests in one test binary from ever being given the same port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Ports this process has already handed out; never handed out twice.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that was free a moment ago, distinct from every port this process has
/// handed out before.
pub fn try_free_port() -> anyhow::Result<u16> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("reading the local address of a listener on 127.0.0.1:0")?
            .port();
        drop(listener);
        // A poisoned lock only means another test panicked while holding it; the set is still valid.
        let mut ports = handed_out()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ports.insert(port) {
            return Ok(port);
        }
    }
    bail!("the OS kept returning ports that were already handed out")
}

/// A port on 127.0.0.1 that was free a moment ago; see [`try_free_port`].
///
/// # Panics
/// If no port can be bound on 127.0.0.1 at all, which means the test machine is broken.
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(err) => panic!("no free port on 127.0.0.1: {err:#}"),
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`, or fails after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    wait_for_port_while(port, timeout, || Ok(()))
}

/// Like [`wait_for_port`], but calls `still_alive` between attempts so a caller can stop early
/// (for example when the process that should listen has exited).
pub(crate) fn wait_for_port_while(
    port: u16,
    timeout: Duration,
    mut still_alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        still_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "nothing accepted connections on {addr} within {timeout:?} (last error: {last_error})"
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only distinctness is asserted: whether a port is still free a moment after it was
    /// handed out depends on every other process on the machine (a parallel test took one
    /// once), so binding it again here would make this test flaky, not stronger.
    #[test]
    fn free_ports_are_distinct_and_never_zero() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ports.len(),
            "ports handed out twice: {ports:?}"
        );
        assert!(ports.iter().all(|p| *p != 0), "{ports:?}");
    }

    #[test]
    fn wait_for_port_returns_once_a_listener_is_there() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        wait_for_port(port, Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn wait_for_port_fails_when_nothing_listens() {
        let port = free_port();
        let err = wait_for_port(port, Duration::from_millis(200)).unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err:#}"
        );
    }

    #[test]
    fn wait_for_port_stops_early_when_the_liveness_check_fails() {
        let port = free_port();
        let err = wait_for_port_while(port, Duration::from_secs(600), || bail!("process exited"))
            .unwrap_err();
        assert_eq!(err.to_string(), "process exited");
    }
}
