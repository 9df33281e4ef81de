//! librdkafka's callbacks: its logs into `tracing`, commit results into metrics, and the
//! rebalance protocol of the agent.
//!
//! On assignment the ledgers start fresh, each partition under a new generation (and
//! `--kafka_offsets` are applied once per process); on revocation the agent stops taking messages of those partitions, waits up
//! to the drain timeout for their in-flight messages to settle, commits synchronously and
//! only then lets the partitions go. All of this runs on the poll thread, inside `poll`,
//! so blocking here blocks nothing but the consumer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::ledger::{Ledgers, TopicPartition};
use crate::config::{StartOffset, StartPosition};
use crate::message::SourceKind;
use crate::observe::events;

pub struct AgentContext {
    ledgers: Arc<Ledgers>,
    /// `--kafka_offsets` not yet applied; each is applied at its partition's first assignment.
    start_offsets: Mutex<Vec<StartOffset>>,
    drain_timeout: Duration,
}

impl AgentContext {
    pub fn new(
        ledgers: Arc<Ledgers>,
        start_offsets: Vec<StartOffset>,
        drain_timeout: Duration,
    ) -> Self {
        AgentContext {
            ledgers,
            start_offsets: Mutex::new(start_offsets),
            drain_timeout,
        }
    }

    fn apply_start_offsets(&self, tpl: &mut TopicPartitionList) {
        let mut pending = self.start_offsets.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|start| {
            let assigned = tpl.find_partition(&start.topic, start.partition).is_some();
            if assigned {
                let offset = match start.offset {
                    StartPosition::Earliest => Offset::Beginning,
                    StartPosition::Latest => Offset::End,
                    StartPosition::At(n) => Offset::Offset(n),
                };
                if let Err(error) = tpl.set_partition_offset(&start.topic, start.partition, offset) {
                    tracing::warn!(topic = %start.topic, partition = start.partition, %error, "cannot apply --kafka_offsets");
                } else {
                    tracing::info!(topic = %start.topic, partition = start.partition, ?offset, "starting at the offset given by --kafka_offsets");
                }
            }
            !assigned
        });
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        self.apply_start_offsets(tpl);
        let partitions = partitions(tpl);
        self.ledgers.assign(&partitions);
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(error) = result {
            events::source_error(
                SourceKind::Kafka,
                &format!("assigning partitions failed: {error}"),
            );
        }
        events::kafka_rebalance("assigned", &describe(&partitions));
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = partitions(tpl);
        if consumer.assignment_lost() {
            tracing::warn!(partitions = %describe(&partitions), "assignment lost: in-flight messages will be delivered again by the new owner");
        } else {
            if !self.ledgers.wait_drained(&partitions, self.drain_timeout) {
                tracing::warn!(
                    partitions = %describe(&partitions),
                    timeout = ?self.drain_timeout,
                    "in-flight messages did not settle before --kafka_drain_timeout: committing what is settled, the rest will be delivered again by the new owner"
                );
            }
            commit_stored(consumer, partitions.len());
        }
        self.ledgers.revoke(&partitions);
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(error) = result {
            events::source_error(
                SourceKind::Kafka,
                &format!("releasing partitions failed: {error}"),
            );
        }
        events::kafka_rebalance("revoked", &describe(&partitions));
        // Not this agent's lag any more: a stale figure would hold a lag alert open.
        for (topic, partition) in &partitions {
            events::kafka_lag(topic, *partition, 0);
        }
    }
}

/// Commits the stored offsets synchronously; "nothing to commit" is not an error.
pub fn commit_stored(consumer: &BaseConsumer<AgentContext>, partitions: usize) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => events::kafka_commit(&Ok(()), partitions),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => events::kafka_commit(&Err(error.to_string()), partitions),
    }
}

impl ClientContext for AgentContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        events::source_error(SourceKind::Kafka, &format!("{error}: {reason}"));
    }

    fn stats_raw(&self, statistics: &[u8]) {
        crate::observe::kafka_stats::report(statistics);
    }
}

/// librdkafka's log lines into `tracing`, at the matching level.
pub(crate) fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice => tracing::info!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Info => tracing::debug!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Debug => tracing::trace!(target: "librdkafka", facility, "{message}"),
    }
}

/// The context of the command-line clients (`produce`, `replay`): librdkafka's logs into
/// `tracing`, and its errors as warnings (the command reports what failed per message);
/// the end of a partition, which `replay` asks for, is no error at all.
pub(crate) struct ToolContext;

impl ClientContext for ToolContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!(target: "librdkafka", "{error}: {reason}");
        }
    }
}

impl ConsumerContext for ToolContext {}

impl ConsumerContext for AgentContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                let code: RDKafkaErrorCode = other.into();
                events::source_error(SourceKind::Kafka, &format!("rebalance failed: {code}"));
                self.ledgers.revoke(&partitions(tpl));
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => events::kafka_commit(&Ok(()), offsets.count()),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => events::kafka_commit(&Err(error.to_string()), offsets.count()),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (std::sync::Arc::from(e.topic()), e.partition()))
        .collect()
}

fn describe(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect::<Vec<_>>()
        .join(", ")
}
