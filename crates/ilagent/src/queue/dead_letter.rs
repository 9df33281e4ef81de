//! Recording a rejected live message (one that never was a queue row) in the dead-letter
//! table of the SQLite file, where `ilagent queue dead_letters` shows it and
//! `ilagent queue requeue` hands it to the queue worker of its source.
//!
//! For sources that settle with their broker (a Kafka commit, an MQTT acknowledgement)
//! and have no dead-letter destination of their own: the broker acknowledgement waits
//! until the row is written, so a failing disk is waited out, never a reason to lose the
//! message. A dead letter is new data like a queued row: when the queue is full (see
//! [`super::capacity`]) it waits for deliveries to make room, and so does the Kafka
//! commit or MQTT acknowledgement behind it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::record::unix_ms;
use super::{NewDeadLetter, Queue, QueueError, StoredMeta, now_ms, order_key_column};
use crate::action::{Action, Outcome};
use crate::message::Message;
use crate::observe::events;
use crate::pipeline::persist::until_written;

/// Writes the dead-letter row for `message`, rejected with `outcome`, retrying a failing
/// write. `false` only if `abort` (or a stopped queue thread) ended the retries: the
/// message is then not settled and its source delivers it again after the restart.
pub(crate) async fn record(
    queue: &Queue,
    message: &Message,
    action: &Action,
    outcome: &Outcome,
    abort: &CancellationToken,
) -> bool {
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
        source: message.meta.source,
        topic: message.meta.topic.to_string(),
        payload: message.payload.clone(),
        meta: StoredMeta::from_metadata(&message.meta),
        order_key: order_key_column(action),
        kind: kind.as_str().to_string(),
        reason: reason.clone(),
        attempts: *attempts,
        created_at_ms: unix_ms(message.meta.received_at).min(now_ms()),
    });
    let written = until_written(
        abort,
        || {
            let letter = Arc::clone(&letter);
            async move {
                queue
                    .run(move |store| store.add_dead_letter(&letter))
                    .await
                    .map_err(QueueError::retryable)
            }
        },
        |error| {
            // A full queue is logged once when it fills, not for every retry.
            if error.is_full() {
                events::queue_error(error);
            } else {
                events::dead_letter_failed(&message.meta, error);
            }
        },
    )
    .await;
    if written.is_some() {
        events::dead_lettered(&message.meta);
    }
    written.is_some()
}
