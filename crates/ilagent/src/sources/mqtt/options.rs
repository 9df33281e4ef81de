//! rumqttc options from the validated configuration.
//!
//! Settings the delivery guarantee rests on are fixed here, not configurable: manual acks
//! (a message is acknowledged only by the settle step) and a persistent session (clean
//! session off, or for MQTT 5 a session that does not expire), so the broker keeps and
//! redelivers what was not acknowledged when the agent reconnects or restarts.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::tokio_rustls::rustls::ClientConfig;
use rumqttc::{TlsConfiguration, Transport};

use super::client::{Client, EventLoop};
use crate::cli::MqttVersion;
use crate::config::MqttConfig;
use crate::secret::Secret;

/// Pings keep an idle connection open and notice a dead broker within about this time.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// MQTT 5 session expiry: never, like MQTT 3.1.1's clean session off. The broker's own
/// limit (Mosquitto's `persistent_client_expiration`) still applies.
const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

pub fn transport(tls: Option<Arc<ClientConfig>>) -> Transport {
    match tls {
        Some(config) => Transport::tls_with_config(TlsConfiguration::Rustls(config)),
        None => Transport::tcp(),
    }
}

/// MQTT 3.1.1 options the source and `produce` share: keep-alive, the packet limit, the
/// transport and the login.
pub(crate) fn v3_options(
    client_id: &str,
    broker: (&str, u16),
    credentials: Option<&(String, Secret)>,
    max_packet_size: usize,
    transport: Transport,
) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(client_id, broker.0, broker.1);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(max_packet_size, max_packet_size)
        .set_transport(transport);
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password.expose());
    }
    options
}

/// The MQTT 5 counterpart of [`v3_options`].
pub(crate) fn v5_options(
    client_id: &str,
    broker: (&str, u16),
    credentials: Option<&(String, Secret)>,
    max_packet_size: usize,
    transport: Transport,
) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, broker.0, broker.1);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(Some(u32::try_from(max_packet_size).unwrap_or(u32::MAX)))
        .set_transport(transport);
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password.expose());
    }
    options
}

/// The client handle and its event loop, not connected yet (the first poll connects).
pub fn build(config: &MqttConfig, transport: Transport) -> (Client, EventLoop) {
    // Room for one acknowledgement per message in flight plus subscriptions and pings, so
    // the settle step rarely waits for the connection task.
    let capacity = config.max_in_flight.saturating_mul(2).max(64);
    let broker = (config.host.as_str(), config.port);
    let credentials = config.credentials.as_ref();
    match config.version {
        MqttVersion::V3 => {
            let mut options = v3_options(
                &config.client_id,
                broker,
                credentials,
                config.max_packet_size,
                transport,
            );
            options.set_clean_session(false).set_manual_acks(true);
            let (client, eventloop) = rumqttc::AsyncClient::new(options, capacity);
            (Client::V3(client), EventLoop::V3(Box::new(eventloop)))
        }
        MqttVersion::V5 => {
            let mut options = v5_options(
                &config.client_id,
                broker,
                credentials,
                config.max_packet_size,
                transport,
            );
            let receive_maximum = u16::try_from(config.max_in_flight).unwrap_or(u16::MAX);
            options
                .set_clean_start(false)
                .set_session_expiry_interval(Some(SESSION_NEVER_EXPIRES))
                .set_manual_acks(true)
                // The broker learns both limits: it sends no more unacknowledged messages
                // than the in-flight window, and drops (rather than sends) larger ones.
                .set_receive_maximum(Some(receive_maximum));
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, capacity);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
    }
}
