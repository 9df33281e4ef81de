//! The four ways in: Kafka, MQTT acknowledged after delivery ("direct"), MQTT with the
//! SQLite buffer, and the HTTP proxy. A [`Setup`] is one source's broker (or port), the
//! agent's flags for it and where a feed sends; everything else in a run is the same for all.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use testkit::{Mosquitto, MosquittoConfig, Tansu};

use crate::feed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kafka,
    MqttDirect,
    MqttBuffered,
    Proxy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Kafka,
        Kind::MqttDirect,
        Kind::MqttBuffered,
        Kind::Proxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::MqttDirect => "mqtt-direct",
            Kind::MqttBuffered => "mqtt-buffered",
            Kind::Proxy => "proxy",
        }
    }
}

/// What carries the messages to the agent. Kept alive for the whole run.
pub enum Broker {
    Tansu(Tansu),
    /// librdkafka's mock cluster, in this process: the one Kafka broker here that can go
    /// down and come back with its data (tansu's build keeps data only in memory).
    Mock(MockCluster<'static, DefaultProducerContext>),
    Mosquitto(Mosquitto),
    None,
}

pub const TOPIC: &str = "chaos-events";
pub const MQTT_TOPIC: &str = "chaos/events";
pub const PARTITIONS: i32 = 3;

/// Where a feed sends: cheap to clone into the feed's task.
#[derive(Clone, Debug)]
pub enum Target {
    Kafka { bootstrap: String, topic: String },
    Mqtt { port: u16, topic: String },
    Proxy { port: u16 },
}

impl Target {
    /// Sends events `0..count` at `rate` per second; see [`feed`].
    pub async fn feed(self, count: usize, rate: usize) -> Result<()> {
        match self {
            Target::Kafka { bootstrap, topic } => {
                feed::kafka(&bootstrap, &topic, count, rate).await
            }
            Target::Mqtt { port, topic } => feed::mqtt(port, &topic, count, rate).await,
            Target::Proxy { port } => {
                feed::proxy(port, count, rate, Duration::from_secs(600)).await
            }
        }
    }
}

pub struct Setup {
    pub kind: Kind,
    pub broker: Broker,
    pub target: Target,
}

impl Setup {
    /// A fresh broker for `kind`: tansu for Kafka, a Mosquitto of the run's own with
    /// persistence on (its defaults otherwise), a free port for the proxy.
    pub async fn start(kind: Kind) -> Result<Setup> {
        match kind {
            Kind::Kafka => {
                let tansu = Tansu::start().context("cannot start tansu")?;
                let bootstrap = tansu.bootstrap_servers();
                bench::kafka::ensure_topic(&bootstrap, TOPIC, PARTITIONS).await?;
                Ok(Setup::kafka(Broker::Tansu(tansu), bootstrap))
            }
            Kind::MqttDirect | Kind::MqttBuffered => {
                let mosquitto = Mosquitto::start(MosquittoConfig {
                    extra: "persistence true\n".to_string(),
                    ..MosquittoConfig::default()
                })
                .context("cannot start mosquitto (scripts/install-test-deps installs it)")?;
                let port = mosquitto.port();
                Ok(Setup {
                    kind,
                    broker: Broker::Mosquitto(mosquitto),
                    target: Target::Mqtt {
                        port,
                        topic: MQTT_TOPIC.to_string(),
                    },
                })
            }
            Kind::Proxy => Ok(Setup {
                kind,
                broker: Broker::None,
                target: Target::Proxy {
                    port: testkit::try_free_port()?,
                },
            }),
        }
    }

    /// Kafka on librdkafka's mock cluster (one broker, id 1).
    pub fn start_mock_kafka() -> Result<Setup> {
        let cluster = MockCluster::new(1).context("cannot start librdkafka's mock cluster")?;
        cluster
            .create_topic(TOPIC, PARTITIONS, 1)
            .context("cannot create the topic on the mock cluster")?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Setup::kafka(Broker::Mock(cluster), bootstrap))
    }

    fn kafka(broker: Broker, bootstrap: String) -> Setup {
        Setup {
            kind: Kind::Kafka,
            broker,
            target: Target::Kafka {
                bootstrap,
                topic: TOPIC.to_string(),
            },
        }
    }

    /// The agent's flags for this source; Kafka agents join `group`. Everything else is
    /// the agent's default: rate limits on, default windows and retries.
    pub fn agent_args(&self, group: &str) -> Vec<String> {
        let args: Vec<&str> = match (&self.target, self.kind) {
            (Target::Kafka { bootstrap, topic }, _) => vec![
                "--kafka_brokers",
                bootstrap,
                "--kafka_group_id",
                group,
                "-e",
                topic,
                "--kafka_auto_offset_reset",
                "earliest",
                // tansu's group joins take seconds with these instead of ~20 s.
                "--kafka_property",
                "session.timeout.ms=6000",
                "--kafka_property",
                "heartbeat.interval.ms=500",
            ],
            (Target::Mqtt { topic, .. }, kind) => {
                let mut args = vec!["-m", "127.0.0.1", "-n", "chaos-agent", "-e", topic];
                args.extend(["--mqtt_qos", "1"]);
                if kind == Kind::MqttBuffered {
                    args.push("--mqtt_buffer");
                }
                args
            }
            (Target::Proxy { .. }, _) => vec![],
        };
        let mut args: Vec<String> = args.into_iter().map(str::to_string).collect();
        match &self.target {
            Target::Mqtt { port, .. } => args.extend(["-q".to_string(), port.to_string()]),
            Target::Proxy { port } => args.extend(["-p".to_string(), port.to_string()]),
            Target::Kafka { .. } => {}
        }
        args
    }

    pub fn mosquitto(&mut self) -> Option<&mut Mosquitto> {
        match &mut self.broker {
            Broker::Mosquitto(mosquitto) => Some(mosquitto),
            _ => None,
        }
    }

    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        match &self.broker {
            Broker::Mock(cluster) => Some(cluster),
            _ => None,
        }
    }
}
