//! Publishing to MQTT: one clean connection (a producer needs no session), every message
//! published in input order at `--mqtt_qos`, each done when the broker acknowledged it
//! (PUBACK for QoS 1, PUBCOMP for QoS 2) or, at QoS 0, when it was written.
//!
//! rumqttc reports an outgoing publish with its packet id in the order the publishes were
//! asked for, and the acknowledgements by packet id; that pairs each message with its
//! answer. A lost connection is not retried: the messages not yet acknowledged are reported
//! as failed, and the exit status says to run again.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::Outgoing as Sent;
use serde_json::json;
use tokio::time::Instant;

use super::{Outgoing, Published};
use crate::cli::{MqttVersion, ProduceArgs};
use crate::config::{MqttBroker, UsageError};
use crate::sources::mqtt::client::qos;
use crate::sources::mqtt::options::{transport, v3_options, v5_options};

pub(crate) struct Settings {
    broker: MqttBroker,
    client_id: String,
    version: MqttVersion,
    qos: u8,
    retain: bool,
}

impl Settings {
    pub(crate) fn from_args(args: &ProduceArgs, broker: MqttBroker) -> Result<Self, UsageError> {
        let client_id = match &args.mqtt_name {
            Some(name) => crate::config::mqtt_client_id(name)?,
            None => format!("ilagent-produce-{}", std::process::id()),
        };
        Ok(Settings {
            broker,
            client_id,
            version: args.mqtt.mqtt_version.unwrap_or(MqttVersion::V3),
            qos: args.mqtt_qos,
            retain: args.mqtt_retain,
        })
    }
}

/// What MQTT cannot carry, refused before anything is sent.
pub(crate) fn check(
    settings: &Settings,
    topic: &str,
    messages: &[Outgoing],
) -> Result<(), UsageError> {
    if topic.contains(['+', '#', '\0']) {
        return Err(UsageError::new(format!(
            "--topic `{}`: an MQTT topic to publish to has no wildcards (+, #) and no NUL",
            crate::printable::printable(topic, 200)
        )));
    }
    // The fixed header, the topic and a packet id, and the properties for MQTT 5.
    let overhead = 16 + topic.len();
    if let Some(index) = messages.iter().position(|m| {
        let properties: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 5).sum();
        m.value.as_ref().map_or(0, Vec::len) + properties + overhead
            > settings.broker.max_packet_size
    }) {
        return Err(UsageError::new(format!(
            "message #{}: larger than --mqtt_max_packet_size ({} bytes): raise it (the broker must accept it too) or send less",
            index + 1,
            settings.broker.max_packet_size
        )));
    }
    if let Some(index) = messages.iter().position(|m| m.key.is_some()) {
        return Err(UsageError::new(format!(
            "message #{}: MQTT messages have no key; leave out --key (or \"key\")",
            index + 1
        )));
    }
    if settings.version == MqttVersion::V3
        && let Some(index) = messages.iter().position(|m| !m.headers.is_empty())
    {
        return Err(UsageError::new(format!(
            "message #{}: headers travel as user properties, which need MQTT 5: add --mqtt_version 5",
            index + 1
        )));
    }
    Ok(())
}

/// What the event loop said that concerns a publish.
enum Seen {
    /// A publish went out with this packet id (0 for QoS 0).
    Sent(u16),
    /// The broker's final answer to a packet id: `Err` with its reason code if it refused.
    Answered(u16, Result<(), String>),
    Other,
}

pub(crate) async fn publish(
    settings: &Settings,
    topic: &str,
    messages: Vec<Outgoing>,
    timeout: Duration,
) -> Vec<Published> {
    let count = messages.len();
    let mut results: Vec<Option<Published>> = (0..count).map(|_| None).collect();
    let tls = match &settings.broker.tls {
        Some(files) => match files.load() {
            Ok((_, config)) => Some(config),
            Err(error) => {
                let why = format!("TLS: {error}");
                return (0..count)
                    .map(|_| failed(topic, settings.qos, &why))
                    .collect();
            }
        },
        None => None,
    };
    let (client, mut eventloop) = connect(settings, transport(tls), count);
    let publisher = tokio::spawn(client.clone().publish_all(
        topic.to_string(),
        qos(settings.qos),
        settings.retain,
        messages,
    ));

    let deadline = Instant::now() + timeout;
    let mut order: VecDeque<usize> = (0..count).collect();
    let mut awaiting: HashMap<u16, usize> = HashMap::new();
    let mut done = 0;
    let mut stopped: Option<String> = None;
    while done < count {
        let seen = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => {
                stopped = Some(format!("no acknowledgement within --timeout ({timeout:?})"));
                break;
            }
            Ok(Err(error)) => {
                stopped = Some(error);
                break;
            }
            Ok(Ok(seen)) => seen,
        };
        match seen {
            Seen::Sent(pkid) => {
                let Some(index) = order.pop_front() else {
                    continue;
                };
                if settings.qos == 0 {
                    results[index] = Some(acknowledged(topic, pkid, 0));
                    done += 1;
                } else if let Some(earlier) = awaiting.insert(pkid, index) {
                    // The packet id is reused before its answer came: the earlier message's
                    // answer cannot be told apart any more.
                    results[earlier] = Some(failed(
                        topic,
                        settings.qos,
                        "its packet id was reused before the broker answered",
                    ));
                    done += 1;
                }
            }
            Seen::Answered(pkid, answer) => {
                if let Some(index) = awaiting.remove(&pkid) {
                    results[index] = Some(match answer {
                        Ok(()) => acknowledged(topic, pkid, settings.qos),
                        Err(reason) => failed(topic, settings.qos, &format!("refused: {reason}")),
                    });
                    done += 1;
                }
            }
            Seen::Other => {}
        }
    }
    publisher.abort();
    if stopped.is_none() {
        eventloop.disconnect(&client).await;
    }
    let why = stopped.unwrap_or_default();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| failed(topic, settings.qos, &why)))
        .collect()
}

fn acknowledged(topic: &str, pkid: u16, qos: u8) -> Published {
    Published {
        line: json!({"topic": topic, "pkid": pkid, "qos": qos}),
        failure: None,
    }
}

fn failed(topic: &str, qos: u8, why: &str) -> Published {
    Published {
        line: json!({"topic": topic, "pkid": null, "qos": qos, "error": why}),
        failure: Some(why.to_string()),
    }
}

#[derive(Clone)]
enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum EventLoop {
    V3(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

fn connect(
    settings: &Settings,
    transport: rumqttc::Transport,
    count: usize,
) -> (Client, EventLoop) {
    let broker = &settings.broker;
    let capacity = count.clamp(1, 256);
    let address = (broker.host.as_str(), broker.port);
    let credentials = broker.credentials.as_ref();
    // A producer keeps no session: a clean one, acknowledged by the broker as it comes.
    match settings.version {
        MqttVersion::V3 => {
            let mut options = v3_options(
                &settings.client_id,
                address,
                credentials,
                broker.max_packet_size,
                transport,
            );
            options.set_clean_session(true);
            let (client, eventloop) = rumqttc::AsyncClient::new(options, capacity);
            (Client::V3(client), EventLoop::V3(Box::new(eventloop)))
        }
        MqttVersion::V5 => {
            let mut options = v5_options(
                &settings.client_id,
                address,
                credentials,
                broker.max_packet_size,
                transport,
            );
            options.set_clean_start(true);
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, capacity);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
    }
}

impl Client {
    /// Asks for every publish, in order; waits for room in rumqttc's request channel.
    async fn publish_all(
        self,
        topic: String,
        qos: rumqttc::QoS,
        retain: bool,
        messages: Vec<Outgoing>,
    ) {
        for message in messages {
            let payload = message.value.unwrap_or_default();
            let sent = match &self {
                Client::V3(client) => client
                    .publish(topic.clone(), qos, retain, payload)
                    .await
                    .is_ok(),
                Client::V5(client) => {
                    let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
                        user_properties: message.headers,
                        ..Default::default()
                    };
                    client
                        .publish_with_properties(
                            topic.clone(),
                            qos_v5(qos),
                            retain,
                            payload,
                            properties,
                        )
                        .await
                        .is_ok()
                }
            };
            if !sent {
                return;
            }
        }
    }
}

fn qos_v5(level: rumqttc::QoS) -> rumqttc::v5::mqttbytes::QoS {
    match level {
        rumqttc::QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Seen, String> {
        match self {
            EventLoop::V3(eventloop) => {
                use rumqttc::{Event, Packet};
                match eventloop.poll().await.map_err(|e| connection_error(&e))? {
                    Event::Outgoing(Sent::Publish(pkid)) => Ok(Seen::Sent(pkid)),
                    Event::Incoming(Packet::PubAck(ack)) => Ok(Seen::Answered(ack.pkid, Ok(()))),
                    Event::Incoming(Packet::PubComp(comp)) => Ok(Seen::Answered(comp.pkid, Ok(()))),
                    _ => Ok(Seen::Other),
                }
            }
            EventLoop::V5(eventloop) => {
                use rumqttc::v5::Event;
                use rumqttc::v5::mqttbytes::v5::{
                    Packet, PubAckReason, PubCompReason, PubRecReason,
                };
                match eventloop.poll().await.map_err(|e| connection_error(&e))? {
                    Event::Outgoing(Sent::Publish(pkid)) => Ok(Seen::Sent(pkid)),
                    Event::Incoming(Packet::PubAck(ack)) => Ok(Seen::Answered(
                        ack.pkid,
                        match ack.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                            other => Err(format!("{other:?}")),
                        },
                    )),
                    Event::Incoming(Packet::PubRec(rec)) => match rec.reason {
                        PubRecReason::Success | PubRecReason::NoMatchingSubscribers => {
                            Ok(Seen::Other)
                        }
                        other => Ok(Seen::Answered(rec.pkid, Err(format!("{other:?}")))),
                    },
                    Event::Incoming(Packet::PubComp(comp)) => Ok(Seen::Answered(
                        comp.pkid,
                        match comp.reason {
                            PubCompReason::Success => Ok(()),
                            other => Err(format!("{other:?}")),
                        },
                    )),
                    _ => Ok(Seen::Other),
                }
            }
        }
    }

    /// Sends DISCONNECT and waits (briefly) until it is written.
    async fn disconnect(&mut self, client: &Client) {
        let asked = match client {
            Client::V3(client) => client.disconnect().await.is_ok(),
            Client::V5(client) => client.disconnect().await.is_ok(),
        };
        if !asked {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let written = match self {
                    EventLoop::V3(eventloop) => match eventloop.poll().await {
                        Ok(rumqttc::Event::Outgoing(Sent::Disconnect)) | Err(_) => true,
                        Ok(_) => false,
                    },
                    EventLoop::V5(eventloop) => match eventloop.poll().await {
                        Ok(rumqttc::v5::Event::Outgoing(Sent::Disconnect)) | Err(_) => true,
                        Ok(_) => false,
                    },
                };
                if written {
                    return;
                }
            }
        })
        .await;
    }
}

fn connection_error(error: &dyn std::fmt::Display) -> String {
    format!("MQTT connection failed: {error}")
}
