//! Settling an MQTT message in non-buffered mode: record a rejected message in the
//! dead-letter table, then acknowledge it to the broker; acknowledge delivered and skipped
//! ones at once; leave interrupted ones unacknowledged so that the broker redelivers them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::client::{AckToken, Client};
use super::connection::Shared;
use crate::action::Outcome;
use crate::message::Metadata;
use crate::observe::events::{self, Disposition};
use crate::pipeline::persist::until_written;
use crate::pipeline::{Job, Settle};
use crate::queue::{NewDeadLetter, Queue, QueueError, StoredMeta, now_ms, order_key_column};

/// How a message is acknowledged: its packet (QoS 0: none) and the connection it came on.
pub struct MqttTicket {
    pub ack: Option<AckToken>,
    pub epoch: u64,
}

/// Sends acknowledgements through a clone of the client, never from the connection task.
#[derive(Clone)]
pub struct Acker {
    pub client: Client,
    pub shared: Arc<Shared>,
}

impl Acker {
    /// Acknowledges `token` if the connection it arrived on is still the current one.
    pub async fn ack(&self, token: &AckToken, epoch: u64, meta: Option<&Metadata>) {
        if epoch != self.shared.epoch.load(Ordering::Acquire) {
            if let Some(meta) = meta {
                events::mqtt_ack_skipped(meta);
            }
            return;
        }
        if let Err(error) = self.client.ack(token).await {
            // Only when the event loop is gone, i.e. the source has stopped.
            tracing::debug!(%error, "acknowledgement not sent");
        }
    }
}

pub struct MqttSettler {
    pub acker: Acker,
    pub dead_letters: Queue,
    /// Stops dead-letter retries at the end of the shutdown drain.
    pub abort: CancellationToken,
}

impl Settle for MqttSettler {
    type Ticket = MqttTicket;

    async fn settle(&self, job: Job<MqttTicket>, outcome: Outcome) {
        let disposition = match &outcome {
            Outcome::Interrupted { .. } | Outcome::Failed { .. } => {
                events::settled(&job.message.meta, &outcome, Disposition::Normal);
                return;
            }
            Outcome::Rejected { .. } => {
                if !self.dead_letter(&job, &outcome).await {
                    return;
                }
                Disposition::DeadLettered
            }
            _ => Disposition::Normal,
        };
        events::settled(&job.message.meta, &outcome, disposition);
        if let Some(token) = &job.ticket.ack {
            self.acker
                .ack(token, job.ticket.epoch, Some(&job.message.meta))
                .await;
        }
    }
}

impl MqttSettler {
    /// Writes the dead-letter row; `false` only if shutdown gave up on a failing write
    /// (the message then stays unacknowledged and comes back).
    async fn dead_letter(&self, job: &Job<MqttTicket>, outcome: &Outcome) -> bool {
        let Outcome::Rejected {
            kind,
            reason,
            attempts,
            ..
        } = outcome
        else {
            return true;
        };
        let letter = Arc::new(NewDeadLetter {
            queue_id: None,
            source: job.message.meta.source,
            topic: job.message.meta.topic.clone(),
            payload: job.message.payload.clone(),
            meta: StoredMeta::from_metadata(&job.message.meta),
            order_key: order_key_column(&job.action),
            kind: kind.as_str().to_string(),
            reason: reason.clone(),
            attempts: *attempts,
            created_at_ms: crate::queue::record::unix_ms(job.message.meta.received_at)
                .min(now_ms()),
        });
        let written = until_written(
            &self.abort,
            || {
                let record = Arc::clone(&letter);
                async move {
                    self.dead_letters
                        .run(move |store| store.add_dead_letter(&record))
                        .await
                        .map_err(QueueError::retryable)
                }
            },
            |error| events::dead_letter_failed(&job.message.meta, error),
        )
        .await;
        if written.is_some() {
            events::dead_lettered(&job.message.meta);
        }
        written.is_some()
    }
}
