//! The connection task: the only code that polls rumqttc's event loop.
//!
//! It never waits for anything else while connected, so PINGs, PUBACKs and subscriptions
//! always go out: publishes are handed on through an unbounded channel (bounded in
//! practice by the broker's in-flight window, since unacknowledged messages are all the
//! broker sends), and acknowledgements come in through the cloned [`Client`].
//!
//! Epochs: every lost connection starts a new epoch. A message is acknowledged only on
//! the connection it arrived on; one settled after a reconnect is not acknowledged,
//! because the broker redelivers it anyway and its packet id may by then name another
//! message. (rumqttc itself drops PUBACKs still queued when a connection fails.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rumqttc::Transport;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{Client, EventLoop, Happening, Received};
use crate::delivery::Backoff;
use crate::observe::events;

/// Reconnect delays double from this...
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
/// ...up to this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// State the connection task shares with the settle step and the certificate watcher.
#[derive(Default)]
pub struct Shared {
    /// Incremented whenever a connection is lost.
    pub epoch: AtomicU64,
    pub connected: AtomicBool,
    /// A transport to use from the next connection attempt on (new certificates).
    pub next_transport: Mutex<Option<Transport>>,
}

pub struct ConnectionTask {
    pub eventloop: EventLoop,
    pub client: Client,
    pub shared: Arc<Shared>,
    /// Subscription filters (with `$share/` prefixes where configured) and their QoS.
    pub filters: Vec<String>,
    pub qos: u8,
    /// `host:port`, for log lines.
    pub broker: String,
    /// Unbounded on purpose, see [`super::MqttSource::run`].
    pub intake: mpsc::UnboundedSender<Received>,
    /// Cancelled once the source has queued its DISCONNECT: stop after it is sent.
    pub stop: CancellationToken,
}

impl ConnectionTask {
    pub async fn run(mut self) {
        let mut failures = 0u32;
        let mut subscribed_once = false;
        // SUBACKs still to come for the last round of subscriptions.
        let mut awaited_subacks = 0usize;
        loop {
            let connected = self.shared.connected.load(Ordering::Acquire);
            let polled = if connected {
                self.eventloop.poll().await
            } else {
                // Not connected, so nothing can be cut off mid-write: stopping is safe.
                tokio::select! {
                    polled = self.eventloop.poll() => polled,
                    () = self.stop.cancelled() => break,
                }
            };
            match polled {
                Ok(Happening::Connected { session_present }) => {
                    self.shared.connected.store(true, Ordering::Release);
                    failures = 0;
                    events::mqtt_connected(&self.broker, session_present);
                    // A kept session still has the subscriptions; subscribing again would
                    // make the broker resend retained messages. The first connection of a
                    // process subscribes anyway, in case the topic flags changed.
                    if !subscribed_once || !session_present {
                        self.subscribe();
                        subscribed_once = true;
                        awaited_subacks = self.filters.len();
                    }
                }
                Ok(Happening::Subscribed { refused }) => {
                    for reason in &refused {
                        events::mqtt_subscription_refused(reason);
                    }
                    awaited_subacks = awaited_subacks.saturating_sub(1);
                    if awaited_subacks == 0 && refused.is_empty() {
                        events::mqtt_subscribed(&self.filters, self.qos);
                    }
                }
                Ok(Happening::Message(mut received)) => {
                    received.epoch = self.shared.epoch.load(Ordering::Acquire);
                    // A closed intake means the source is stopping: the message stays
                    // unacknowledged and the broker redelivers it.
                    let _ = self.intake.send(received);
                }
                Ok(Happening::DisconnectSent) => {
                    if self.stop.is_cancelled() {
                        break;
                    }
                }
                Ok(Happening::BrokerDisconnected(reason)) => {
                    events::mqtt_broker_disconnected(&reason)
                }
                Ok(Happening::Other) => {}
                Err(failure) => {
                    self.shared.epoch.fetch_add(1, Ordering::AcqRel);
                    self.shared.connected.store(false, Ordering::Release);
                    if self.stop.is_cancelled() {
                        break;
                    }
                    let next = self
                        .shared
                        .next_transport
                        .lock()
                        .ok()
                        .and_then(|mut t| t.take());
                    if let Some(transport) = next {
                        // A deliberate reconnect with new certificates: no waiting.
                        self.eventloop.set_transport(transport);
                        continue;
                    }
                    failures = failures.saturating_add(1);
                    let wait = reconnect_delay(failures, &mut rand::rng());
                    events::mqtt_connection_failed(
                        failure.kind,
                        &format!("{} ({})", failure.message, self.broker),
                        wait,
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
            }
        }
        self.shared.connected.store(false, Ordering::Release);
        metrics::gauge!(events::MQTT_CONNECTED).set(0.0);
    }

    /// Queues the subscriptions from a task of their own: waiting for room in the request
    /// channel here would stop the very polling that empties it.
    fn subscribe(&self) {
        let (client, filters, qos) = (self.client.clone(), self.filters.clone(), self.qos);
        tokio::spawn(async move {
            for filter in &filters {
                // The SUBACK reports the broker's answer; this fails only when stopping.
                if let Err(error) = client.subscribe(filter, qos).await {
                    tracing::debug!(%filter, %error, "subscription not sent");
                }
            }
        });
    }
}

/// Exponential backoff with "equal jitter": half the ceiling plus a random part, so a
/// fleet of agents does not reconnect in lockstep yet none hammers a broker that is down.
pub fn reconnect_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = Backoff {
        initial: RECONNECT_INITIAL,
        max: RECONNECT_MAX,
    }
    .ceiling(failures);
    let half = ceiling / 2;
    let jitter = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rng.random_range(0..=jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_and_stop_at_thirty_seconds() {
        let mut rng = rand::rng();
        for failures in 1..50 {
            let delay = reconnect_delay(failures, &mut rng);
            let ceiling = RECONNECT_INITIAL
                .saturating_mul(1 << (failures - 1).min(20))
                .min(RECONNECT_MAX);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{failures}: {delay:?}"
            );
        }
        assert!(reconnect_delay(100, &mut rng) >= Duration::from_secs(15));
    }
}
