//! The Kafka source: consumer-group messages delivered at least once, in order per alert
//! key and in parallel across keys.
//!
//! - [`poll`] reads from librdkafka on its own thread and hands messages to the shared
//!   [`Dispatcher`](crate::pipeline::Dispatcher), pausing partitions when the window is full.
//! - [`ledger`] tracks each partition's unsettled offsets; only the watermark below the
//!   first unsettled one is ever stored, and librdkafka's auto commit commits what is stored.
//! - [`settle`] dead-letters rejected messages ([`dead_letter`]) before their offset counts
//!   as settled.
//! - [`context`] serves librdkafka's callbacks: logs, commit results, and rebalances (drain
//!   revoked partitions, commit, release).

mod client;
mod context;
pub mod dead_letter;
mod ledger;
mod poll;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use self::context::AgentContext;
use self::dead_letter::DeadLetter;
use self::ledger::{Ledgers, TopicPartition};
use self::poll::PollLoop;
use self::settle::KafkaSettler;
use crate::config::{KafkaConfig, Topics};
use crate::delivery::Deliverer;
use crate::ilert::EventPath;
use crate::mapping::MappingConfig;
use crate::pipeline::{Dispatcher, Limits, MessageRouter};

use crate::sources::route::{Routes, TopicSyntax};

/// Payload bytes read and not yet settled, at most (with librdkafka's own 4 MiB prefetch,
/// this keeps the agent well inside 64 MB under any backlog).
const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// How a Kafka message is settled: its partition and offset, and its raw key for the
/// dead-letter copy.
pub struct KafkaTicket {
    pub tp: TopicPartition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
}

/// Everything the Kafka source runs from.
pub struct KafkaSource {
    pub config: KafkaConfig,
    pub topics: Topics,
    pub mapping: Arc<MappingConfig>,
    pub deliverer: Deliverer,
    /// `--ilert_event_path`, or the Kafka alert-source path.
    pub event_path: Option<EventPath>,
    pub shutdown_timeout: Duration,
}

/// A failure that stops the source: the consumer or producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("kafka source: {0}")]
pub struct KafkaSourceError(String);

impl KafkaSource {
    /// Consumes until `shutdown`, then drains and commits. Returns an error only for
    /// failures that retrying cannot fix; a broker that is down is waited for.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), KafkaSourceError> {
        let ledgers = Arc::new(Ledgers::default());
        let context = AgentContext::new(
            Arc::clone(&ledgers),
            self.config.start_offsets.clone(),
            self.config.drain_timeout,
        );
        let consumer: BaseConsumer<AgentContext> = client::consumer_config(&self.config)
            .create_with_context(context)
            .map_err(|e| KafkaSourceError(format!("cannot create the consumer: {e}")))?;
        let routes = Routes::new(&self.topics, TopicSyntax::Kafka);
        consumer
            .subscribe(&routes.subscriptions())
            .map_err(|e| KafkaSourceError(format!("cannot subscribe: {e}")))?;
        let dead_letter = match &self.config.dlq_topic {
            Some(topic) => {
                let producer: FutureProducer = client::producer_config(&self.config)
                    .create()
                    .map_err(|e| {
                        KafkaSourceError(format!("cannot create the dead-letter producer: {e}"))
                    })?;
                Some(DeadLetter::new(producer, topic.clone()))
            }
            None => None,
        };

        let consumer = Arc::new(consumer);
        let abort = CancellationToken::new();
        let settler = KafkaSettler {
            consumer: Arc::clone(&consumer),
            ledgers: Arc::clone(&ledgers),
            dead_letter,
            abort: abort.clone(),
        };
        let path = self
            .event_path
            .clone()
            .unwrap_or_else(|| EventPath::PerKey(EventPath::KAFKA.to_string()));
        let limits = Limits {
            max_in_flight: self.config.max_in_flight,
            max_buffered: self.config.max_buffered,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
        };
        let dispatcher = Dispatcher::with_limits(
            self.deliverer.with_event_path(path),
            settler,
            limits,
            abort.clone(),
        );
        tracing::info!(
            brokers = %self.config.brokers.join(","),
            group = %self.config.group_id,
            topics = %routes.subscriptions().join(","),
            "kafka source started"
        );
        let poll_loop = PollLoop {
            consumer,
            ledgers,
            dispatcher,
            router: MessageRouter::by_topic(routes, self.mapping),
            shutdown,
            abort,
            shutdown_timeout: self.shutdown_timeout,
            commit_every: self.config.max_in_flight,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || poll_loop.run())
            .map_err(|e| KafkaSourceError(format!("cannot start the poll thread: {e}")))?;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(KafkaSourceError(
                "the poll thread stopped unexpectedly".into(),
            )),
        }
    }
}
