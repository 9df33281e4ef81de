//! Certificate hot reload: the TLS files are read every `--mqtt_tls_reload_interval`; when
//! their contents change and are valid, the agent reconnects with them; when they are
//! invalid or unreadable, it keeps the current connection and warns (once per change, not
//! every interval).
//!
//! The reconnect is a clean DISCONNECT queued behind the pending acknowledgements, so
//! every message settled before it is acknowledged on the old connection; the connection
//! task then connects with the new transport at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::connection::Shared;
use super::options::transport;
use super::tls::{TlsFiles, TlsSnapshot};
use crate::observe::events;

pub struct TlsWatcher {
    pub files: TlsFiles,
    /// What the current connection was built from.
    pub current: TlsSnapshot,
    pub interval: Duration,
    pub client: Client,
    pub shared: Arc<Shared>,
}

impl TlsWatcher {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        // The last warning given, so a bad file is reported once, not every interval.
        let mut warned: Option<String> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            let snapshot = match self.files.read() {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    warn_once(&mut warned, &error);
                    continue;
                }
            };
            if snapshot == self.current {
                warned = None;
                continue;
            }
            match snapshot.client_config(&self.files) {
                Ok(config) => {
                    warned = None;
                    self.current = snapshot;
                    if let Ok(mut next) = self.shared.next_transport.lock() {
                        *next = Some(transport(Some(config)));
                    }
                    events::mqtt_tls_reloaded(&self.files.describe());
                    // Not connected: the next connection attempt takes the new transport
                    // anyway. Connected: close cleanly so that it reconnects now.
                    if self.shared.connected.load(Ordering::Acquire)
                        && let Err(error) = self.client.disconnect().await
                    {
                        tracing::debug!(%error, "disconnect for the certificate reload not sent");
                    }
                }
                Err(error) => warn_once(&mut warned, &error),
            }
        }
    }
}

fn warn_once(warned: &mut Option<String>, error: &dyn std::fmt::Display) {
    let text = error.to_string();
    if warned.as_deref() != Some(text.as_str()) {
        events::mqtt_tls_reload_rejected(&text);
        *warned = Some(text);
    }
}
