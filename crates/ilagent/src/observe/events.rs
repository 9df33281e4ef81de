//! One function per happening (see the module above); names of metrics are constants here.

use std::time::{Duration, SystemTime};

use super::health::{self, registry};
use crate::action::{Outcome, RejectKind};
use crate::message::{Metadata, SourceKind};
use crate::queue::{Full, QueueError, Stats};

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
pub const QUEUE_DEPTH: &str = "ilagent_queue_depth";
pub const QUEUE_BYTES: &str = "ilagent_queue_bytes";
pub const QUEUE_MAX_BYTES: &str = "ilagent_queue_max_bytes";
pub const QUEUE_FULL: &str = "ilagent_queue_full";
pub const QUEUE_FULL_TOTAL: &str = "ilagent_queue_full_total";
pub const QUEUE_RETRYING: &str = "ilagent_queue_retrying";
pub const DEAD_LETTERS: &str = "ilagent_dead_letters";
pub const DELIVERY_LATENCY: &str = "ilagent_delivery_latency_seconds";
pub const END_TO_END_AGE: &str = "ilagent_end_to_end_age_seconds";
pub const ILERT_IN_FLIGHT: &str = "ilagent_ilert_requests_in_flight";
pub const ILERT_CONCURRENCY_LIMIT: &str = "ilagent_ilert_concurrency_limit";
pub const ILERT_RESPONSES: &str = "ilagent_ilert_responses_total";
pub const RATE_LIMIT_WAIT: &str = "ilagent_rate_limit_wait_seconds";
pub const RETRY_AFTER_WAIT: &str = "ilagent_retry_after_wait_seconds";
pub const KAFKA_LAG: &str = "ilagent_kafka_consumer_lag";
pub const COMPONENT_READY: &str = "ilagent_component_ready";
pub const HTTP_REQUESTS: &str = "ilagent_http_requests_total";
pub const HTTP_CONNECTIONS: &str = "ilagent_http_connections";
pub const HTTP_HEADER_TIMEOUTS: &str = "ilagent_http_header_timeouts_total";
pub const HTTP_IN_FLIGHT: &str = "ilagent_http_requests_in_flight";
pub const AGENT_HEARTBEATS: &str = "ilagent_agent_heartbeats_total";
pub const HEARTBEATS_COALESCED: &str = "ilagent_heartbeats_coalesced_total";
pub const TRACKED_KEYS: &str = "ilagent_tracked_keys";
pub const DUPLICATES: &str = "ilagent_duplicates_total";
pub const ACCEPTED_IDS: &str = "ilagent_accepted_ids";
pub const ACCEPTED_IDS_EVICTED: &str = "ilagent_accepted_ids_evicted_total";
pub const ACCEPTED_IDS_ERRORS: &str = "ilagent_accepted_ids_errors_total";
pub const DEDUPE_ID_ERRORS: &str = "ilagent_dedupe_id_errors_total";

/// An event was not delivered: ilert accepted its idempotency id inside the window.
/// `scope` is a route's name or `http`: bounded by the configuration.
pub fn duplicate_suppressed(scope: &str) {
    metrics::counter!(DUPLICATES, "scope" => scope.to_string()).increment(1);
}

/// The accepted-ids table could not be read, written or pruned; a read or a write failing
/// means the event went out without the check (or its id was not kept).
pub fn accepted_ids_failed(what: &'static str, error: &QueueError) {
    metrics::counter!(ACCEPTED_IDS_ERRORS, "operation" => what).increment(1);
    match what {
        "prune" => {
            tracing::warn!(%error, "cannot prune the idempotency ids: trying again in a minute")
        }
        _ => {
            tracing::warn!(operation = what, %error, "idempotency ids unavailable: delivering without the duplicate check")
        }
    }
}

/// A route's `dedupe` expression gave no usable id: the event is delivered without the
/// check. Counted per route; logged at warning level once per route and process (it is a
/// configuration matter, and one line per message would flood the log), then at debug.
pub fn dedupe_id_failed(route: &str, reason: &str) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    metrics::counter!(DEDUPE_ID_ERRORS, "scope" => route.to_string()).increment(1);
    let first = {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        let first = !warned.iter().any(|r| r == route);
        if first {
            warned.push(route.to_string());
        }
        first
    };
    let reason = crate::printable::reason(reason.to_string());
    if first {
        tracing::warn!(route, %reason, "route's `dedupe` gave no id: delivering without the duplicate check (logged once per route)");
    } else {
        tracing::debug!(route, %reason, "route's `dedupe` gave no id: delivering without the duplicate check");
    }
}

/// A pruning of the accepted ids ran; evictions (ids dropped inside their window to keep
/// `--dedupe_max_ids`) are logged, since they shorten the effective window.
pub fn accepted_ids_pruned(pruned: &crate::queue::store::Pruned, max_ids: u64) {
    metrics::gauge!(ACCEPTED_IDS).set(pruned.kept as f64);
    if pruned.evicted > 0 {
        metrics::counter!(ACCEPTED_IDS_EVICTED).increment(pruned.evicted);
        tracing::warn!(
            evicted = pruned.evicted,
            kept = pruned.kept,
            "more idempotency ids than --dedupe_max_ids ({max_ids}): the oldest were dropped inside their window, so their duplicates would be delivered again"
        );
    }
    if pruned.expired > 0 {
        tracing::debug!(
            expired = pruned.expired,
            kept = pruned.kept,
            "expired idempotency ids deleted"
        );
    }
}

/// How many keys the agent keeps state for (`rate_limit`: keys with a request inside
/// their budget's window). Bounded by traffic within one window, never by all traffic.
pub fn tracked_keys(kind: &'static str, keys: usize) {
    metrics::gauge!(TRACKED_KEYS, "kind" => kind).set(keys as f64);
}

/// A message arrived from a source; `topic` is the configured topic or filter it came in
/// by ([`crate::pipeline::MessageRouter::topic_label`]), so the label stays bounded.
pub fn received(meta: &Metadata, topic: String) {
    metrics::counter!(MESSAGES_RECEIVED, "source" => meta.source.as_str(), "topic" => topic)
        .increment(1);
}

/// A message's delivery ended. Rejections are logged once here, at error level, with the
/// message's location and reason; `disposition` says what the source did with it.
pub fn settled(meta: &Metadata, outcome: &Outcome, disposition: Disposition) {
    let label = match outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Duplicate { .. } => "duplicate",
        Outcome::Coalesced { .. } => "coalesced",
        Outcome::Failed { .. } => "failed",
        Outcome::Rejected { kind, .. } => match kind {
            RejectKind::Invalid => "rejected_invalid",
            RejectKind::Permanent => "rejected_permanent",
            RejectKind::Exhausted => "rejected_exhausted",
        },
        Outcome::Interrupted { .. } => "interrupted",
    };
    metrics::counter!(MESSAGES_SETTLED, "source" => meta.source.as_str(), "outcome" => label)
        .increment(1);
    let mut delivery_seconds = None;
    if let Outcome::Delivered { .. } = outcome {
        let now = SystemTime::now();
        let since = |at: SystemTime| now.duration_since(at).unwrap_or_default().as_secs_f64();
        let latency = since(meta.received_at);
        delivery_seconds = Some(latency);
        metrics::histogram!(DELIVERY_LATENCY, "source" => meta.source.as_str()).record(latency);
        if let Some(stamped) = meta.timestamp {
            metrics::histogram!(END_TO_END_AGE, "source" => meta.source.as_str())
                .record(since(stamped));
        }
    }
    if !matches!(
        outcome,
        Outcome::Failed { .. } | Outcome::Interrupted { .. }
    ) {
        let rejected = matches!(outcome, Outcome::Rejected { .. });
        super::figures::settled(rejected, delivery_seconds);
    }
    match outcome {
        Outcome::Delivered {
            attempts,
            correlation_id,
            ..
        } => {
            tracing::debug!(location = %meta, attempts, correlation_id = correlation_id.as_deref().unwrap_or("-"), "delivered");
        }
        Outcome::Skipped { reason } => tracing::debug!(location = %meta, %reason, "skipped"),
        Outcome::Duplicate { reason } => {
            tracing::debug!(location = %meta, %reason, "duplicate suppressed")
        }
        Outcome::Coalesced { reason } => {
            tracing::debug!(location = %meta, %reason, "heartbeat ping coalesced")
        }
        Outcome::Failed { reason, .. } => {
            tracing::debug!(location = %meta, %reason, "attempt failed, retry scheduled")
        }
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
    /// Not rejected: nothing special.
    Normal,
}

impl Disposition {
    fn describe(self) -> &'static str {
        match self {
            Disposition::DeadLettered => "written to the dead-letter destination and settled",
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
    if kind == "assigned" {
        super::figures::rebalanced();
    }
    tracing::info!(partitions, "partitions {kind}");
}

/// A source-level error (broker unreachable, fetch failed); the source keeps going.
pub fn source_error(source: SourceKind, error: &dyn std::fmt::Display) {
    metrics::counter!(SOURCE_ERRORS, "source" => source.as_str()).increment(1);
    registry().error(component_of(source), error);
    tracing::warn!(source = source.as_str(), %error, "source error; retrying");
}

/// The MQTT connection is up (CONNACK received).
pub fn mqtt_connected(broker: &str, session_present: bool) {
    metrics::gauge!(MQTT_CONNECTED).set(1.0);
    metrics::counter!(MQTT_CONNECTS).increment(1);
    // A kept session keeps the subscriptions, and the agent does not subscribe again.
    if session_present && MQTT_SUBSCRIBED_ONCE.load(std::sync::atomic::Ordering::Acquire) {
        registry().set(health::MQTT, true, "subscribed");
    } else {
        registry().set(health::MQTT, false, "connected, subscribing");
    }
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
    MQTT_SUBSCRIBED_ONCE.store(true, std::sync::atomic::Ordering::Release);
    registry().set(health::MQTT, true, "subscribed");
    tracing::info!(filters = %filters.join(","), qos, "mqtt subscribed");
}

pub fn mqtt_subscription_refused(reason: &str) {
    metrics::counter!(SOURCE_ERRORS, "source" => "mqtt").increment(1);
    registry().error(health::MQTT, &format!("subscription refused: {reason}"));
    registry().set(health::MQTT, false, "subscription refused");
    tracing::error!(%reason, "the MQTT broker refused a subscription: check the topic filter and the broker's ACL");
}

/// The MQTT connection failed or was lost; it is retried after `retry_in`. `kind` is a
/// short label (`login_refused`, `unreachable`, `closed`, ...); `message` says what to do.
pub fn mqtt_connection_failed(kind: &'static str, message: &str, retry_in: std::time::Duration) {
    metrics::gauge!(MQTT_CONNECTED).set(0.0);
    metrics::counter!(MQTT_CONNECTION_FAILURES, "kind" => kind).increment(1);
    registry().error(health::MQTT, &message);
    registry().set(health::MQTT, false, "disconnected");
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

/// The SQLite queue failed; the caller retries. A full queue is logged when it fills and
/// when it has room again ([`queue_full`], [`queue_has_room`]), not once per write.
pub fn queue_error(error: &QueueError) {
    if error.is_full() {
        return;
    }
    metrics::counter!(QUEUE_ERRORS).increment(1);
    registry().error(health::QUEUE, error);
    tracing::warn!(%error, "SQLite queue error; retrying");
}

/// The queue stopped taking new messages (its size cap, or the disk).
pub fn queue_full(reason: &Full) {
    metrics::gauge!(QUEUE_FULL).set(1.0);
    metrics::counter!(QUEUE_FULL_TOTAL).increment(1);
    registry().error(health::QUEUE, &format!("full: {reason}"));
    tracing::warn!(%reason, "SQLite queue full: new messages are refused (the proxy answers 503, MQTT is not acknowledged, Kafka is not committed) until deliveries make room");
}

/// The queue takes new messages again.
pub fn queue_has_room() {
    metrics::gauge!(QUEUE_FULL).set(0.0);
    tracing::info!("SQLite queue has room again: new messages are taken");
}

/// Bytes of the queue file's pages that hold data.
pub fn queue_bytes(bytes: u64) {
    metrics::gauge!(QUEUE_BYTES).set(bytes as f64);
}

/// `--queue_max_size`.
pub fn queue_max_bytes(bytes: u64) {
    metrics::gauge!(QUEUE_MAX_BYTES).set(bytes as f64);
    metrics::gauge!(QUEUE_FULL).set(0.0);
}

/// Set once the MQTT broker confirmed the subscriptions in this process.
static MQTT_SUBSCRIBED_ONCE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn component_of(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Kafka => health::KAFKA,
        SourceKind::Mqtt => health::MQTT,
        SourceKind::Http | SourceKind::Cli => health::HTTP,
    }
}

/// A component became ready or stopped being ready (see [`super::health`]). Before it
/// was ever ready its states (connecting, subscribing, joining the group) are what a
/// normal start goes through: info lines; losing readiness later is a warning.
pub fn component_readiness(
    name: &'static str,
    ready: bool,
    was_ready: bool,
    state: &str,
    error: Option<&str>,
) {
    metrics::gauge!(COMPONENT_READY, "component" => name).set(if ready { 1.0 } else { 0.0 });
    if ready {
        tracing::info!(component = name, state, "ready");
    } else if !was_ready {
        if state != "starting" {
            tracing::info!(
                component = name,
                state,
                error = error.unwrap_or("-"),
                "not ready yet"
            );
        }
    } else {
        tracing::warn!(
            component = name,
            state,
            error = error.unwrap_or("-"),
            "not ready"
        );
    }
}

/// The queue's rows, counted by the readiness probe.
pub fn queue_depth(stats: &Stats) {
    let gauge = |n: u64| n as f64;
    metrics::gauge!(QUEUE_DEPTH).set(gauge(stats.queued));
    metrics::gauge!(QUEUE_RETRYING).set(gauge(stats.retrying));
    metrics::gauge!(DEAD_LETTERS).set(gauge(stats.dead_letters));
}

/// A request to ilert is under way until the guard is dropped.
pub fn ilert_request_started() -> InFlight {
    metrics::gauge!(ILERT_IN_FLIGHT).increment(1.0);
    InFlight
}

/// The adaptive limit of requests to ilert at once moved by `delta` (summed over the
/// sources: each adds its own limit).
pub fn ilert_concurrency_limit(delta: f64) {
    metrics::gauge!(ILERT_CONCURRENCY_LIMIT).increment(delta);
}

/// Counts one request to ilert in [`ILERT_IN_FLIGHT`] while it lives.
pub struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(ILERT_IN_FLIGHT).decrement(1.0);
    }
}

/// ilert answered with `status`, or (`None`) could not be reached.
pub fn ilert_response(status: Option<u16>) {
    let class = match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "network",
    };
    metrics::counter!(ILERT_RESPONSES, "class" => class).increment(1);
}

/// A request waited for room in its key's rate-limit budget.
pub fn rate_limit_waited(class: &'static str, waited: Duration) {
    if !waited.is_zero() {
        metrics::histogram!(RATE_LIMIT_WAIT, "class" => class).record(waited.as_secs_f64());
    }
}

/// A heartbeat ping was settled without a request: one was in flight or recent pings
/// used up the heartbeat's budget.
pub fn heartbeat_coalesced() {
    metrics::counter!(HEARTBEATS_COALESCED).increment(1);
}

/// A retry waits as long as ilert's `Retry-After` asked.
pub fn retry_after_waiting(wait: Duration) {
    metrics::histogram!(RETRY_AFTER_WAIT).record(wait.as_secs_f64());
}

/// Kafka consumer lag of one partition, from librdkafka's statistics.
pub fn kafka_lag(topic: &str, partition: i32, lag: i64) {
    metrics::gauge!(KAFKA_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// The HTTP proxy answered a request on `route` (a fixed route name, never the key).
pub fn http_request(route: &'static str, status: u16) {
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
}

/// The HTTP proxy refused an event; nothing was stored.
pub fn http_event_refused(path: &str, status: u16, reason: &str) {
    tracing::info!(location = %format!("http {path}"), status, %reason, "event refused, nothing stored");
}

/// The HTTP proxy committed an event to the queue and answered 202.
pub fn http_event_queued(meta: &Metadata) {
    tracing::debug!(location = %meta, "event queued");
}

/// A heartbeat ping forwarded through the proxy, with ilert's answer (or why none).
pub fn http_heartbeat_forwarded(key: &crate::secret::Secret, status: u16, reason: Option<&str>) {
    if let Some(reason) = reason {
        tracing::warn!(%key, status, %reason, "heartbeat ping forwarded: ilert did not accept it");
    } else {
        tracing::debug!(%key, status, "heartbeat ping forwarded");
    }
}

/// A connection to one of the agent's ports (`listener`: `proxy` or `metrics`) opened
/// (`delta` 1) or closed (-1).
pub fn http_connections(listener: &'static str, delta: f64) {
    metrics::gauge!(HTTP_CONNECTIONS, "listener" => listener).increment(delta);
}

/// A connection was closed because no complete request head arrived within
/// `--http_header_timeout`: a slow client, or a keep-alive connection left idle.
pub fn http_header_timeout(listener: &'static str) {
    metrics::counter!(HTTP_HEADER_TIMEOUTS, "listener" => listener).increment(1);
    tracing::debug!(
        listener,
        "HTTP connection closed: no complete request head within --http_header_timeout"
    );
}

/// A port reached `--http_max_connections`: new connections wait to be accepted, idle
/// ones are closed to make room. The caller logs this at most once a minute.
pub fn http_connections_at_cap(listener: &'static str, max: usize) {
    tracing::warn!(
        listener,
        max,
        "HTTP connections at --http_max_connections: new ones wait, idle ones are closed; raise the flag if this is normal load"
    );
}

/// Accepting a connection failed for a reason other than the client leaving, most often
/// because the process is out of file descriptors.
pub fn http_accept_failed(listener: &'static str, error: &std::io::Error, max: usize) {
    tracing::error!(
        listener,
        %error,
        "cannot accept an HTTP connection: if it says too many open files, raise the open-files limit (ulimit -n, LimitNOFILE) above --http_max_connections ({max}) or lower the flag"
    );
}

/// An `/api/*` request took (`delta` 1) or gave back (-1) one of the
/// `--http_max_in_flight` slots.
pub fn http_in_flight(delta: f64) {
    metrics::gauge!(HTTP_IN_FLIGHT).increment(delta);
}

/// An `/api/*` request got 503 because `--http_max_in_flight` requests were under way.
pub fn http_overloaded(max: usize) {
    http_request("overloaded", 503);
    tracing::debug!(
        max,
        "request refused with 503: --http_max_in_flight requests under way"
    );
}

/// The agent's own heartbeat (`-b`): `pinged`, `failed`, or `skipped` while not healthy.
pub fn agent_heartbeat(result: &'static str, detail: &str) {
    metrics::counter!(AGENT_HEARTBEATS, "result" => result).increment(1);
    match result {
        "pinged" => tracing::debug!("agent heartbeat pinged"),
        "skipped" => tracing::warn!(
            unready = detail,
            "agent heartbeat not pinged: the agent is not healthy"
        ),
        "resumed" => tracing::info!("agent healthy again: agent heartbeat pings resume"),
        _ => tracing::warn!(outcome = detail, "agent heartbeat ping failed"),
    }
}
