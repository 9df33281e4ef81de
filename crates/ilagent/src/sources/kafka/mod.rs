//! The Kafka source: consumer-group messages delivered at least once, in order per alert
//! key and in parallel across keys.
//!
//! - [`poll`] reads from librdkafka on its own thread and hands messages to the shared
//!   [`Dispatcher`](crate::pipeline::Dispatcher), pausing partitions when the window is full.
//! - [`ledger`] tracks each partition's unsettled offsets; only the watermark below the
//!   first unsettled one is ever stored, and the poll thread commits what is stored (auto
//!   commit is off).
//! - [`settle`] dead-letters rejected messages before their offset counts as settled: to
//!   the dead-letter topic ([`dead_letter`]) or, without one, to the SQLite file's
//!   dead-letter table, whose requeued rows a queue worker of this source delivers.
//! - [`context`] serves librdkafka's callbacks: logs, commit results, and rebalances (drain
//!   revoked partitions, commit, release).

pub(crate) mod client;
pub(crate) mod context;
pub mod dead_letter;
mod ledger;
mod poll;
mod requeued;
pub(crate) mod settle;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use self::context::AgentContext;
use self::dead_letter::DeadLetter;
use self::ledger::{Generation, Ledgers, TopicPartition};
use self::poll::PollLoop;
use self::settle::{DeadLetters, KafkaSettler};
use crate::config::{KafkaConfig, Topics};
use crate::delivery::Deliverer;
use crate::ilert::EventPath;
use crate::mapping::MappingConfig;
use crate::pipeline::{Dispatcher, Limits, MessageRouter};
use crate::queue::Queue;

use crate::sources::route::{Routes, TopicSyntax};

/// Payload bytes read and not yet settled, at most (with librdkafka's own 4 MiB prefetch,
/// this keeps the agent well inside 64 MB under any backlog).
const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// How a Kafka message is settled: its partition, the assignment it was read in, its
/// offset, and what its dead-letter copy needs beside the message.
pub struct KafkaTicket {
    pub tp: TopicPartition,
    pub generation: Generation,
    pub offset: i64,
    /// The record's key when it is not UTF-8; a UTF-8 key is the message's `meta.key`
    /// (one copy per message in the window, not two). See [`KafkaTicket::raw_key`].
    pub non_utf8_key: Option<Box<[u8]>>,
    /// Cancelled when the partition's assignment ends (see [`ledger`]).
    pub revoked: Option<tokio_util::sync::CancellationToken>,
    /// The record has no value (a tombstone); its dead-letter copy has none either.
    pub tombstone: bool,
}

impl KafkaTicket {
    /// The record's key as it arrived, for the dead-letter copy.
    pub(crate) fn raw_key<'a>(&'a self, message: &'a crate::message::Message) -> Option<&'a [u8]> {
        self.non_utf8_key
            .as_deref()
            .or(message.meta.key.as_deref().map(str::as_bytes))
    }
}

/// Everything the Kafka source runs from.
pub struct KafkaSource {
    pub config: KafkaConfig,
    pub topics: Topics,
    pub mapping: Arc<MappingConfig>,
    /// The configuration file's routes, ahead of the flag topics.
    pub routes: Arc<crate::routes::RouteTable>,
    /// With the configured retry policy; without a dead-letter topic the source retries
    /// transient failures without limit (see [`KafkaSource::run`]).
    pub deliverer: Deliverer,
    /// `--ilert_event_path`, or the Kafka alert-source path.
    pub event_path: Option<EventPath>,
    pub shutdown_timeout: Duration,
    /// The SQLite file (`-f`), opened by the daemon when there is no dead-letter topic:
    /// its dead-letter table takes the rejected messages.
    pub queue: Option<Queue>,
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
        let path = self
            .event_path
            .clone()
            .unwrap_or_else(|| EventPath::PerKey(EventPath::KAFKA.to_string()));
        // Without a dead-letter topic, a message whose retries ran out would have nowhere
        // to go but a commit without a copy: it is retried until ilert takes it instead
        // (the commit point waits and Kafka holds the backlog).
        let (dead_letters, deliverer, worker) = match (&self.config.dlq_topic, &self.queue) {
            (Some(topic), _) => {
                let producer: FutureProducer = client::producer_config(&self.config)
                    .create()
                    .map_err(|e| {
                        KafkaSourceError(format!("cannot create the dead-letter producer: {e}"))
                    })?;
                let topic = DeadLetters::Topic(DeadLetter::new(producer, topic.clone()));
                (topic, self.deliverer.clone(), None)
            }
            (None, Some(queue)) => {
                let policy = self.deliverer.policy().unlimited();
                let worker = requeued::spawn_worker(
                    queue,
                    &self.deliverer.with_event_path(path.clone()),
                    MessageRouter::by_topic(routes.clone(), Arc::clone(&self.mapping))
                        .with_routes(Arc::clone(&self.routes)),
                    self.config.max_in_flight,
                    &shutdown,
                    self.shutdown_timeout,
                );
                let table = DeadLetters::Table(queue.clone());
                (table, self.deliverer.with_policy(policy), Some(worker))
            }
            (None, None) => {
                return Err(KafkaSourceError(
                    "without --kafka_dlq_topic the SQLite file (-f) takes the dead letters, and it was not opened".into(),
                ));
            }
        };

        let consumer = Arc::new(consumer);
        let abort = CancellationToken::new();
        let settler = KafkaSettler {
            consumer: Arc::clone(&consumer),
            ledgers: Arc::clone(&ledgers),
            dead_letters,
            abort: abort.clone(),
        };
        let limits = Limits {
            max_in_flight: self.config.max_in_flight,
            max_buffered: self.config.max_buffered,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
        };
        let router = MessageRouter::by_topic(routes.clone(), self.mapping).with_routes(self.routes);
        // The window is large (a run of one partition's messages must not leave the other
        // keys idle): what waits in it keeps only its payload.
        let dispatcher = Dispatcher::with_limits(
            deliverer.with_event_path(path),
            settler,
            limits,
            abort.clone(),
        )
        .remapping(router.clone());
        tracing::info!(
            brokers = %self.config.connection.brokers.join(","),
            group = %self.config.group_id,
            topics = %routes.subscriptions().join(","),
            "kafka source started"
        );
        let poll_loop = PollLoop {
            consumer,
            ledgers,
            dispatcher,
            router,
            shutdown,
            abort,
            shutdown_timeout: self.shutdown_timeout,
            commit_every: self.config.max_in_flight,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || poll_loop.run())
            .map_err(|e| KafkaSourceError(format!("cannot start the poll thread: {e}")))?;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if let Some(worker) = worker {
            // It stops on the same shutdown signal, within the same timeout.
            let _ = worker.await;
        }
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => Err(KafkaSourceError(
                "the poll thread stopped unexpectedly".into(),
            )),
        }
    }
}
