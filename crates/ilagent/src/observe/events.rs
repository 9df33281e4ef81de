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
pub const MQTT_CONNECTED: &str = "ilagent_mqtt_connected";
pub const MQTT_CONNECTS: &str = "ilagent_mqtt_connects_total";
pub const MQTT_CONNECTION_FAILURES: &str = "ilagent_mqtt_connection_failures_total";
pub const MQTT_TLS_RELOADS: &str = "ilagent_mqtt_tls_reloads_total";
pub const QUEUE_WRITES: &str = "ilagent_queue_writes_total";
pub const QUEUE_RETRIES: &str = "ilagent_queue_retries_total";
pub const QUEUE_ERRORS: &str = "ilagent_queue_errors_total";

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

/// The MQTT connection is up (CONNACK received).
pub fn mqtt_connected(broker: &str, session_present: bool) {
    metrics::gauge!(MQTT_CONNECTED).set(1.0);
    metrics::counter!(MQTT_CONNECTS).increment(1);
    tracing::info!(
        broker,
        session_present,
        "mqtt connected{}",
        if session_present {
            ": the broker kept the session, unacknowledged messages come again"
        } else {
            ": new session"
        }
    );
}

/// The broker confirmed every subscription.
pub fn mqtt_subscribed(filters: &[String], qos: u8) {
    tracing::info!(filters = %filters.join(","), qos, "mqtt subscribed");
}

pub fn mqtt_subscription_refused(reason: &str) {
    metrics::counter!(SOURCE_ERRORS, "source" => "mqtt").increment(1);
    tracing::error!(%reason, "the MQTT broker refused a subscription: check the topic filter and the broker's ACL");
}

/// The MQTT connection failed or was lost; it is retried after `retry_in`. `kind` is a
/// short label (`login_refused`, `unreachable`, `closed`, ...); `message` says what to do.
pub fn mqtt_connection_failed(kind: &'static str, message: &str, retry_in: std::time::Duration) {
    metrics::gauge!(MQTT_CONNECTED).set(0.0);
    metrics::counter!(MQTT_CONNECTION_FAILURES, "kind" => kind).increment(1);
    if kind == "login_refused" || kind == "tls" {
        tracing::error!(kind, retry_in = ?retry_in, "{message}; retrying");
    } else {
        tracing::warn!(kind, retry_in = ?retry_in, "{message}; retrying");
    }
}

/// The MQTT v5 broker sent DISCONNECT with a reason.
pub fn mqtt_broker_disconnected(reason: &str) {
    tracing::warn!(%reason, "the MQTT broker disconnected the agent");
}

/// Certificate files changed and are valid: the agent reconnects with them.
pub fn mqtt_tls_reloaded(files: &str) {
    metrics::counter!(MQTT_TLS_RELOADS, "result" => "applied").increment(1);
    tracing::info!(
        files,
        "certificate files changed: reconnecting to the MQTT broker with them"
    );
}

/// Certificate files changed but cannot be used: the current connection stays.
pub fn mqtt_tls_reload_rejected(error: &dyn std::fmt::Display) {
    metrics::counter!(MQTT_TLS_RELOADS, "result" => "rejected").increment(1);
    tracing::warn!(%error, "certificate files changed but cannot be used: keeping the current MQTT connection");
}

/// A message settled after its connection was lost: the broker redelivers it, so it is
/// not acknowledged on the new connection (its packet id may mean another message there).
pub fn mqtt_ack_skipped(meta: &Metadata) {
    tracing::debug!(location = %meta, "not acknowledged: received on an earlier connection, the broker sends it again");
}

/// Rows were committed to the SQLite queue.
pub fn queue_written(source: SourceKind, rows: usize) {
    metrics::counter!(QUEUE_WRITES, "source" => source.as_str()).increment(rows as u64);
    tracing::trace!(source = source.as_str(), rows, "queued");
}

/// A queued message failed transiently; its next attempt is scheduled in the row.
pub fn queue_retry_scheduled(
    meta: &Metadata,
    attempts: u32,
    reason: &str,
    retry_in: std::time::Duration,
) {
    metrics::counter!(QUEUE_RETRIES, "source" => meta.source.as_str()).increment(1);
    if attempts == 1 {
        tracing::warn!(location = %meta, attempts, %reason, retry_in = ?retry_in, "delivery failed, retrying from the queue");
    } else {
        tracing::debug!(location = %meta, attempts, %reason, retry_in = ?retry_in, "delivery failed again, retrying from the queue");
    }
}

/// The SQLite queue failed; the caller retries.
pub fn queue_error(error: &dyn std::fmt::Display) {
    metrics::counter!(QUEUE_ERRORS).increment(1);
    tracing::warn!(%error, "SQLite queue error; retrying");
}
