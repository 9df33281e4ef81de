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

/// The client handle and its event loop, not connected yet (the first poll connects).
pub fn build(config: &MqttConfig, transport: Transport) -> (Client, EventLoop) {
    // Room for one acknowledgement per message in flight plus subscriptions and pings, so
    // the settle step rarely waits for the connection task.
    let capacity = config.max_in_flight.saturating_mul(2).max(64);
    match config.version {
        MqttVersion::V3 => {
            let mut options =
                rumqttc::MqttOptions::new(&config.client_id, &config.host, config.port);
            options
                .set_keep_alive(KEEP_ALIVE)
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(config.max_packet_size, config.max_packet_size)
                .set_transport(transport);
            if let Some((user, password)) = &config.credentials {
                options.set_credentials(user, password.expose());
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(options, capacity);
            (Client::V3(client), EventLoop::V3(Box::new(eventloop)))
        }
        MqttVersion::V5 => {
            let mut options =
                rumqttc::v5::MqttOptions::new(&config.client_id, &config.host, config.port);
            let receive_maximum = u16::try_from(config.max_in_flight).unwrap_or(u16::MAX);
            let max_packet_size = u32::try_from(config.max_packet_size).unwrap_or(u32::MAX);
            options
                .set_keep_alive(KEEP_ALIVE)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(SESSION_NEVER_EXPIRES))
                .set_manual_acks(true)
                // The broker learns both limits: it sends no more unacknowledged messages
                // than the in-flight window, and drops (rather than sends) larger ones.
                .set_receive_maximum(Some(receive_maximum))
                .set_max_packet_size(Some(max_packet_size))
                .set_transport(transport);
            if let Some((user, password)) = &config.credentials {
                options.set_credentials(user, password.expose());
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, capacity);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
    }
}
