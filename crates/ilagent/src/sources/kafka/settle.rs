//! Settling a Kafka message: dead-letter it if it was rejected, then mark its offset
//! settled and store the partition's new commit point for librdkafka to commit.

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

pub struct KafkaSettler {
    pub consumer: Arc<BaseConsumer<AgentContext>>,
    pub ledgers: Arc<Ledgers>,
    pub dead_letter: Option<DeadLetter>,
    /// Stops dead-letter retries at the end of the shutdown drain.
    pub abort: CancellationToken,
}

impl Settle for KafkaSettler {
    type Ticket = KafkaTicket;

    async fn settle(&self, job: Job<KafkaTicket>, outcome: Outcome) {
        let disposition = match (&outcome, &self.dead_letter) {
            (Outcome::Interrupted { .. } | Outcome::Failed { .. }, _) => {
                // Not settled: the offset stays uncommitted and the message comes back.
                events::settled(&job.message.meta, &outcome, Disposition::Normal);
                return;
            }
            (Outcome::Rejected { .. }, Some(dead_letter)) => {
                if !dead_letter.write(&job, &outcome, &self.abort).await {
                    return;
                }
                Disposition::DeadLettered
            }
            (Outcome::Rejected { .. }, None) => Disposition::Dropped,
            _ => Disposition::Normal,
        };
        events::settled(&job.message.meta, &outcome, disposition);
        let (topic, partition) = &job.ticket.tp;
        if let Some(next) = self.ledgers.settle(&job.ticket.tp, job.ticket.offset) {
            // store_offsets takes the next offset to read (unlike store_offset, which adds 1).
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(next))
                .is_ok()
                && let Err(error) = self.consumer.store_offsets(&tpl)
            {
                // The partition was revoked meanwhile; its new owner starts from the last commit.
                tracing::debug!(%topic, partition, next, %error, "offset not stored");
            }
        }
    }
}
