//! One face for rumqttc's MQTT 3.1.1 and MQTT 5 clients.
//!
//! rumqttc has a module per protocol version with look-alike but distinct types. The rest
//! of the source works on what is here: a cloneable [`Client`] that only queues requests
//! (acks, subscriptions, disconnect), an [`EventLoop`] that the connection task alone
//! polls, and the few [`Happening`]s the source acts on.

use rumqttc::v5::mqttbytes::v5 as v5_packets;
use rumqttc::{QoS, Transport};

/// What an acknowledgement needs: the packet id and QoS (1 or 2) of the publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckToken {
    pub pkid: u16,
    pub qos: u8,
}

/// A publish as the broker delivered it.
#[derive(Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    /// `None` for QoS 0: nothing to acknowledge.
    pub ack: Option<AckToken>,
    /// MQTT v5 user properties.
    pub properties: Vec<(String, String)>,
    /// The connection it arrived on; see [`super::connection`].
    pub epoch: u64,
}

/// The events of the event loop the source cares about.
#[derive(Debug)]
pub enum Happening {
    Connected {
        session_present: bool,
    },
    /// A SUBACK; `refused` describes each filter the broker turned down.
    Subscribed {
        refused: Vec<String>,
    },
    Message(Received),
    /// Our DISCONNECT went out: every request queued before it has been written.
    DisconnectSent,
    /// An MQTT v5 broker sent DISCONNECT.
    BrokerDisconnected(String),
    Other,
}

/// A failed or lost connection, sorted by what the operator should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `login_refused`, `refused`, `unreachable`, `timeout`, `closed`, `tls`,
    /// `packet_too_large`, `protocol`.
    pub kind: &'static str,
    pub message: String,
}

#[derive(Clone)]
pub enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub enum EventLoop {
    V3(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos_v5(level: u8) -> rumqttc::v5::mqttbytes::QoS {
    match level {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    /// Queues the acknowledgement (PUBACK, or PUBREC for QoS 2). Waits only for room in
    /// the request channel, which the connection task drains.
    pub async fn ack(&self, token: &AckToken) -> Result<(), String> {
        // rumqttc acknowledges by packet id and QoS; the rest of the publish is not used.
        match self {
            Client::V3(client) => {
                let mut publish = rumqttc::Publish::new("", qos(token.qos), Vec::new());
                publish.pkid = token.pkid;
                client.ack(&publish).await.map_err(|e| e.to_string())
            }
            Client::V5(client) => {
                let mut publish = v5_packets::Publish::new("", qos_v5(token.qos), Vec::new(), None);
                publish.pkid = token.pkid;
                client.ack(&publish).await.map_err(|e| e.to_string())
            }
        }
    }

    pub async fn subscribe(&self, filter: &str, level: u8) -> Result<(), String> {
        match self {
            Client::V3(client) => client
                .subscribe(filter, qos(level))
                .await
                .map_err(|e| e.to_string()),
            Client::V5(client) => client
                .subscribe(filter, qos_v5(level))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V3(client) => client.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(client) => client.disconnect().await.map_err(|e| e.to_string()),
        }
    }
}

impl EventLoop {
    /// The next event. Never cancel this while connected: rumqttc may be mid-write.
    pub async fn poll(&mut self) -> Result<Happening, Failure> {
        match self {
            EventLoop::V3(eventloop) => match eventloop.poll().await {
                Ok(event) => Ok(v3_happening(event)),
                Err(error) => Err(v3_failure(error)),
            },
            EventLoop::V5(eventloop) => match eventloop.poll().await {
                Ok(event) => Ok(v5_happening(event)),
                Err(error) => Err(v5_failure(error)),
            },
        }
    }

    /// Used from the next connection attempt on (certificate reload).
    pub fn set_transport(&mut self, transport: Transport) {
        match self {
            EventLoop::V3(eventloop) => {
                eventloop.mqtt_options.set_transport(transport);
            }
            EventLoop::V5(eventloop) => {
                eventloop.options.set_transport(transport);
            }
        }
    }
}

fn v3_happening(event: rumqttc::Event) -> Happening {
    use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Happening::Connected {
            session_present: connack.session_present,
        },
        Event::Incoming(Packet::SubAck(suback)) => Happening::Subscribed {
            refused: suback
                .return_codes
                .iter()
                .filter(|code| matches!(code, SubscribeReasonCode::Failure))
                .map(|_| "failure (0x80)".to_string())
                .collect(),
        },
        Event::Incoming(Packet::Publish(publish)) => {
            let ack = (publish.qos != QoS::AtMostOnce).then_some(AckToken {
                pkid: publish.pkid,
                qos: publish.qos as u8,
            });
            Happening::Message(Received {
                topic: publish.topic,
                payload: publish.payload.to_vec(),
                ack,
                properties: Vec::new(),
                epoch: 0,
            })
        }
        Event::Outgoing(Outgoing::Disconnect) => Happening::DisconnectSent,
        _ => Happening::Other,
    }
}

fn v5_happening(event: rumqttc::v5::Event) -> Happening {
    use rumqttc::Outgoing;
    use rumqttc::v5::Event;
    use v5_packets::{Packet, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Happening::Connected {
            session_present: connack.session_present,
        },
        Event::Incoming(Packet::SubAck(suback)) => Happening::Subscribed {
            refused: suback
                .return_codes
                .iter()
                .filter(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                .map(|code| format!("{code:?}"))
                .collect(),
        },
        Event::Incoming(Packet::Publish(publish)) => {
            let ack =
                (publish.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then_some(AckToken {
                    pkid: publish.pkid,
                    qos: publish.qos as u8,
                });
            Happening::Message(Received {
                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                payload: publish.payload.to_vec(),
                ack,
                properties: publish
                    .properties
                    .map(|p| p.user_properties)
                    .unwrap_or_default(),
                epoch: 0,
            })
        }
        Event::Incoming(Packet::Disconnect(disconnect)) => {
            let reason = disconnect
                .properties
                .and_then(|p| p.reason_string)
                .map_or_else(
                    || format!("{:?}", disconnect.reason_code),
                    |text| format!("{:?}: {text}", disconnect.reason_code),
                );
            Happening::BrokerDisconnected(reason)
        }
        Event::Outgoing(Outgoing::Disconnect) => Happening::DisconnectSent,
        _ => Happening::Other,
    }
}

fn failure(kind: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

fn io_failure(error: &std::io::Error) -> Failure {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::NotFound | ErrorKind::AddrNotAvailable => {
            failure(
                "unreachable",
                format!("cannot reach the MQTT broker: {error}"),
            )
        }
        ErrorKind::TimedOut => failure(
            "timeout",
            format!("the MQTT broker did not answer in time: {error}"),
        ),
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => failure(
            "closed",
            format!("the MQTT broker closed the connection: {error}"),
        ),
        // Name resolution failures and the like arrive as "other" I/O errors.
        _ => failure(
            "unreachable",
            format!("cannot reach the MQTT broker: {error}"),
        ),
    }
}

fn refused(code: &dyn std::fmt::Debug) -> Failure {
    let code = format!("{code:?}");
    if code.contains("UserNamePassword") || code.contains("NotAuthorized") {
        failure(
            "login_refused",
            format!(
                "the MQTT broker refused the login ({code}): check --mqtt_username and the password (ILAGENT_MQTT_PASSWORD)"
            ),
        )
    } else {
        failure(
            "refused",
            format!("the MQTT broker refused the connection ({code})"),
        )
    }
}

fn state_failure(text: String) -> Failure {
    if text.contains("PayloadSizeLimitExceeded") || text.contains("PayloadTooLong") {
        failure(
            "packet_too_large",
            format!(
                "a message is larger than --mqtt_max_packet_size ({text}): the broker sends it again after the reconnect; raise the limit (with MQTT 5 the broker drops such messages instead)"
            ),
        )
    } else if text.contains("ConnectionAborted") || text.contains("Io") {
        failure(
            "closed",
            format!("the MQTT broker closed the connection ({text})"),
        )
    } else {
        failure("protocol", format!("MQTT protocol error: {text}"))
    }
}

fn v3_failure(error: rumqttc::ConnectionError) -> Failure {
    use rumqttc::ConnectionError as E;
    match error {
        E::ConnectionRefused(code) => refused(&code),
        E::Io(error) => io_failure(&error),
        E::NetworkTimeout | E::FlushTimeout => failure(
            "timeout",
            "the MQTT broker did not answer in time (it may be down or overloaded)",
        ),
        E::Tls(error) => failure("tls", format!("TLS with the MQTT broker failed: {error}")),
        E::MqttState(rumqttc::StateError::Io(error)) => io_failure(&error),
        E::MqttState(error) => state_failure(format!("{error:?}")),
        other => failure("protocol", format!("MQTT connection error: {other}")),
    }
}

fn v5_failure(error: rumqttc::v5::ConnectionError) -> Failure {
    use rumqttc::v5::ConnectionError as E;
    match error {
        E::ConnectionRefused(code) => refused(&code),
        E::Io(error) => io_failure(&error),
        E::Timeout(_) => failure(
            "timeout",
            "the MQTT broker did not answer in time (it may be down or overloaded)",
        ),
        E::Tls(error) => failure("tls", format!("TLS with the MQTT broker failed: {error}")),
        E::MqttState(rumqttc::v5::StateError::Io(error)) => io_failure(&error),
        E::MqttState(error) => state_failure(format!("{error:?}")),
        other => failure("protocol", format!("MQTT connection error: {other}")),
    }
}
