//! One function per happening (see the module above); names of metrics are constants here.

use crate::action::{Outcome, RejectKind};
use crate::message::{Metadata, SourceKind};

pub const MESSAGES_RECEIVED: &str = "ilagent_messages_received_total";
pub const MESSAGES_SETTLED: &str = "ilagent_messages_total";
pub const DEAD_LETTER_WRITES: &str = "ilagent_dead_letter_writes_total";
pub const DEAD_LETTER_FAILURES: &str = "ilagent_dead_letter_failures_total";
pub const KAFKA_COMMITS: &str = "ilagent_kafka_commits_total";
pub const KAFKA_REBALANCES: &str = "ilagent_kafka_rebalances_total";
pub const SOURCE_ERRORS: &str = "ilagent_source_errors_total";

/// A message arrived from a source.
pub fn received(meta: &Metadata) {
    metrics::counter!(MESSAGES_RECEIVED, "source" => meta.source.as_str(), "topic" => meta.topic.clone())
        .increment(1);
}

/// A message's delivery ended. Rejections are logged once here, at error level, with the
/// message's location and reason; `disposition` says what the source did with it.
pub fn settled(meta: &Metadata, outcome: &Outcome, disposition: Disposition) {
    let label = match outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Rejected { kind, .. } => match kind {
            RejectKind::Invalid => "rejected_invalid",
            RejectKind::Permanent => "rejected_permanent",
            RejectKind::Exhausted => "rejected_exhausted",
        },
        Outcome::Interrupted { .. } => "interrupted",
    };
    metrics::counter!(MESSAGES_SETTLED, "source" => meta.source.as_str(), "outcome" => label)
        .increment(1);
    match outcome {
        Outcome::Delivered {
            attempts,
            correlation_id,
            ..
        } => {
            tracing::debug!(location = %meta, attempts, correlation_id = correlation_id.as_deref().unwrap_or("-"), "delivered");
        }
        Outcome::Skipped { reason } => tracing::debug!(location = %meta, %reason, "skipped"),
        Outcome::Rejected {
            kind,
            reason,
            attempts,
            ..
        } => {
            tracing::error!(
                location = %meta,
                kind = kind.as_str(),
                attempts,
                %reason,
                "message rejected: {}",
                disposition.describe()
            );
        }
        Outcome::Interrupted { .. } => {
            tracing::info!(location = %meta, "delivery interrupted by shutdown: left unsettled for redelivery");
        }
    }
}

/// What a source did with a rejected message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Written to the dead-letter destination, then settled.
    DeadLettered,
    /// No dead-letter destination: settled (committed or acknowledged) without a copy.
    Dropped,
    /// Not rejected: nothing special.
    Normal,
}

impl Disposition {
    fn describe(self) -> &'static str {
        match self {
            Disposition::DeadLettered => "written to the dead-letter destination and settled",
            Disposition::Dropped => {
                "no dead-letter destination is configured, so it is settled (committed) without a copy"
            }
            Disposition::Normal => "settled",
        }
    }
}

/// A dead-letter write failed and will be retried; the source offset is not committed.
pub fn dead_letter_failed(meta: &Metadata, error: &dyn std::fmt::Display) {
    metrics::counter!(DEAD_LETTER_FAILURES, "source" => meta.source.as_str()).increment(1);
    tracing::warn!(location = %meta, %error, "dead-letter write failed; retrying, the message stays uncommitted");
}

pub fn dead_lettered(meta: &Metadata) {
    metrics::counter!(DEAD_LETTER_WRITES, "source" => meta.source.as_str()).increment(1);
}

/// A commit of consumer offsets finished.
pub fn kafka_commit(result: &Result<(), String>, partitions: usize) {
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(KAFKA_COMMITS, "result" => label).increment(1);
    match result {
        Ok(()) => tracing::debug!(partitions, "offsets committed"),
        Err(error) => {
            tracing::warn!(partitions, %error, "offset commit failed; it is retried with the next commit")
        }
    }
}

pub fn kafka_rebalance(kind: &'static str, partitions: &str) {
    metrics::counter!(KAFKA_REBALANCES, "kind" => kind).increment(1);
    tracing::info!(partitions, "partitions {kind}");
}

/// A source-level error (broker unreachable, fetch failed); the source keeps going.
pub fn source_error(source: SourceKind, error: &dyn std::fmt::Display) {
    metrics::counter!(SOURCE_ERRORS, "source" => source.as_str()).increment(1);
    tracing::warn!(source = source.as_str(), %error, "source error; retrying");
}
