//! The dead-letter topic: where a message that can never be delivered goes, unchanged,
//! with headers that say where it came from and why it was set aside.
//!
//! The source offset is committed only after this write succeeded; a failing write is
//! retried with backoff until it succeeds or shutdown gives up on it (then the message
//! stays uncommitted and comes back after the restart).

use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use super::KafkaTicket;
use crate::action::Outcome;
use crate::observe::events;
use crate::pipeline::Job;
use crate::pipeline::persist::{WriteFailure, until_written};

/// Header names on dead-letter records.
pub mod headers {
    pub const SOURCE_TOPIC: &str = "ilagent.source.topic";
    pub const SOURCE_PARTITION: &str = "ilagent.source.partition";
    pub const SOURCE_OFFSET: &str = "ilagent.source.offset";
    pub const REASON: &str = "ilagent.reason";
    pub const REJECT_KIND: &str = "ilagent.reject.kind";
    pub const ATTEMPTS: &str = "ilagent.attempts";
    pub const FAILED_AT: &str = "ilagent.failed.at";
    /// The names of the consumer-patterns note (seed 004), for tools that read those: the
    /// reason and the time again.
    pub const ERROR_MESSAGE: &str = "error-message";
    pub const FAILED_AT_ISO: &str = "failed-at";
}

pub struct DeadLetter {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetter {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        DeadLetter { producer, topic }
    }

    /// Writes the dead-letter record; `false` only if `abort` stopped the retries.
    pub async fn write(
        &self,
        job: &Job<KafkaTicket>,
        outcome: &Outcome,
        abort: &CancellationToken,
    ) -> bool {
        let (kind, reason, attempts) = match outcome {
            Outcome::Rejected {
                kind,
                reason,
                attempts,
                ..
            } => (kind.as_str(), reason.as_str(), *attempts),
            _ => ("unknown", "not delivered", 0),
        };
        let failed_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let partition = job.ticket.tp.1.to_string();
        let offset = job.ticket.offset.to_string();
        let attempts = attempts.to_string();
        let mut record_headers =
            OwnedHeaders::new_with_capacity(job.message.meta.headers.len() + 9);
        for (key, value) in &job.message.meta.headers {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        for (key, value) in [
            (headers::SOURCE_TOPIC, &*job.ticket.tp.0),
            (headers::SOURCE_PARTITION, partition.as_str()),
            (headers::SOURCE_OFFSET, offset.as_str()),
            (headers::REASON, reason),
            (headers::REJECT_KIND, kind),
            (headers::ATTEMPTS, attempts.as_str()),
            (headers::FAILED_AT, failed_at.as_str()),
            (headers::ERROR_MESSAGE, reason),
            (headers::FAILED_AT_ISO, failed_at.as_str()),
        ] {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(value),
            });
        }

        let written = until_written(
            abort,
            || {
                let mut record =
                    FutureRecord::<[u8], [u8]>::to(&self.topic).headers(record_headers.clone());
                // A tombstone stays a tombstone: no value, not an empty one.
                if !job.ticket.tombstone {
                    record = record.payload(&job.message.payload);
                }
                if let Some(key) = job.ticket.raw_key(&job.message) {
                    record = record.key(key);
                }
                async move {
                    self.producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map_err(|(error, _)| WriteFailure::Retry(error))
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
