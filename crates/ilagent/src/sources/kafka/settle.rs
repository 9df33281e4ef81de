//! Settling a Kafka message: dead-letter it if it was rejected, then mark its offset
//! settled and store the partition's new commit point for librdkafka to commit.
//!
//! A rejected message always gets a copy before its offset is committed: on the
//! dead-letter topic when `--kafka_dlq_topic` is set, otherwise in the dead-letter table
//! of the SQLite file (`-f`). A message that is not settled (shutdown interrupted it, or
//! gave up on its dead-letter write) is abandoned: the commit point stays below it and it
//! is read again after the restart.

use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::KafkaTicket;
use super::context::AgentContext;
use super::dead_letter::DeadLetter;
use super::ledger::Ledgers;
use crate::action::Outcome;
use crate::observe::events::{self, Disposition};
use crate::pipeline::{Job, Settle};
use crate::queue::Queue;

/// Where a rejected message's copy goes.
pub(crate) enum DeadLetters {
    /// `--kafka_dlq_topic`.
    Topic(DeadLetter),
    /// The dead-letter table of the SQLite file.
    Table(Queue),
}

pub(crate) struct KafkaSettler {
    pub consumer: Arc<BaseConsumer<AgentContext>>,
    pub ledgers: Arc<Ledgers>,
    pub dead_letters: DeadLetters,
    /// Stops dead-letter retries at the end of the shutdown drain.
    pub abort: CancellationToken,
}

impl Settle for KafkaSettler {
    type Ticket = KafkaTicket;

    /// A message of a revoked partition stops waiting: its new owner delivers it.
    fn revoked(&self, ticket: &KafkaTicket) -> Option<tokio_util::sync::CancellationToken> {
        ticket.revoked.clone()
    }

    async fn settle(&self, job: Job<KafkaTicket>, outcome: Outcome) {
        let ticket = &job.ticket;
        let disposition = match &outcome {
            Outcome::Interrupted { .. } | Outcome::Failed { .. } => {
                // Not settled: the offset stays uncommitted and the message comes back.
                events::settled(&job.message.meta, &outcome, Disposition::Normal);
                self.ledgers
                    .abandon(&ticket.tp, ticket.generation, ticket.offset);
                return;
            }
            Outcome::Rejected { .. } => {
                // Boxed: the dead-letter writes are rare and their futures large, and every
                // key's task would otherwise reserve room for them while it waits (see
                // `pipeline::dispatcher`).
                let written = match &self.dead_letters {
                    DeadLetters::Topic(topic) => {
                        Box::pin(topic.write(&job, &outcome, &self.abort)).await
                    }
                    DeadLetters::Table(queue) => {
                        Box::pin(crate::queue::dead_letter::record(
                            queue,
                            &job.message,
                            &job.action,
                            &outcome,
                            &self.abort,
                        ))
                        .await
                    }
                };
                if !written {
                    self.ledgers
                        .abandon(&ticket.tp, ticket.generation, ticket.offset);
                    return;
                }
                Disposition::DeadLettered
            }
            _ => Disposition::Normal,
        };
        events::settled(&job.message.meta, &outcome, disposition);
        let (topic, partition) = &ticket.tp;
        let store = |next: i64| {
            // store_offsets takes the next offset to read (unlike store_offset, which adds
            // 1). A quick local call: it runs under the ledger lock (see settle_and_store).
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(next))
                .is_ok()
                && let Err(error) = self.consumer.store_offsets(&tpl)
            {
                // Unassigned meanwhile; its next owner starts from the last commit.
                tracing::debug!(%topic, partition, next, %error, "offset not stored");
            }
        };
        self.ledgers
            .settle_and_store(&ticket.tp, ticket.generation, ticket.offset, store);
    }
}
