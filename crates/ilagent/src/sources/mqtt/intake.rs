//! From a received publish to work: either straight into the dispatcher (acknowledged
//! after delivery), or into the SQLite queue (acknowledged after the commit).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{AckToken, Received};
use super::settle::{Acker, MqttSettler, MqttTicket};
use crate::message::{Message, Metadata, SourceKind};
use crate::observe::events;
use crate::pipeline::persist::until_written;
use crate::pipeline::{Dispatcher, Job, MessageRouter};
use crate::queue::worker::Wakeup;
use crate::queue::{NewRow, Queue, QueueError, StoredMeta, now_ms, order_key_column};

/// How many received messages one SQLite commit takes at most.
const BUFFER_BATCH: usize = 512;

fn split(received: Received) -> (Message, Option<AckToken>, u64) {
    let mut meta = Metadata::new(SourceKind::Mqtt, received.topic);
    meta.headers = received
        .properties
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let message = Message {
        payload: received.payload,
        meta,
    };
    (message, received.ack, received.epoch)
}

/// Non-buffered: each message waits for a slot in the in-flight window, then goes to the
/// dispatcher. Stops taking messages at `shutdown`; what it did not take stays
/// unacknowledged and comes back from the broker.
pub async fn direct(
    mut received: mpsc::UnboundedReceiver<Received>,
    dispatcher: Dispatcher<MqttSettler>,
    router: MessageRouter,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = received.recv() => next,
        };
        let Some(next) = next else { break };
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = dispatcher.reserve_for(next.payload.len()) => slot,
        };
        let Some(slot) = slot else { break };
        let (message, ack, epoch) = split(next);
        events::received(&message.meta);
        let action = router.action_for(&message);
        dispatcher.submit(
            slot,
            Job {
                ticket: MqttTicket { ack, epoch },
                message,
                action,
            },
        );
    }
}

/// Buffered: messages are committed to SQLite in batches, then acknowledged, then the
/// worker is woken. A message is acknowledged only once its row is on disk.
pub async fn buffered(
    mut received: mpsc::UnboundedReceiver<Received>,
    queue: Queue,
    acker: Acker,
    router: MessageRouter,
    wake: Arc<Wakeup>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BUFFER_BATCH);
    loop {
        let count = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            count = received.recv_many(&mut batch, BUFFER_BATCH) => count,
        };
        if count == 0 {
            break;
        }
        let mut rows = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for next in batch.drain(..) {
            let (message, ack, epoch) = split(next);
            events::received(&message.meta);
            // The order key is fixed at the write, so the queue keeps the arrival order
            // of each alert key whatever happens later.
            let order_key = order_key_column(&router.action_for(&message));
            rows.push(NewRow {
                source: SourceKind::Mqtt,
                meta: StoredMeta::from_metadata(&message.meta),
                topic: message.meta.topic,
                payload: message.payload,
                order_key,
                created_at_ms: now_ms(),
            });
            acks.push((ack, epoch));
        }
        let written = rows.len();
        if !write_until_committed(&queue, Arc::new(rows), &shutdown).await {
            // Shutdown before the commit: nothing is acknowledged, the broker redelivers.
            break;
        }
        events::queue_written(SourceKind::Mqtt, written);
        wake.new_rows();
        for (ack, epoch) in acks {
            if let Some(ack) = ack {
                acker.ack(&ack, epoch, None).await;
            }
        }
    }
}

/// Retries a failing commit (disk full, file locked) until it works or shutdown comes.
async fn write_until_committed(
    queue: &Queue,
    rows: Arc<Vec<NewRow>>,
    shutdown: &CancellationToken,
) -> bool {
    until_written(
        shutdown,
        || {
            let rows = Arc::clone(&rows);
            async move { queue.insert(rows).await.map_err(QueueError::retryable) }
        },
        |error| events::queue_error(error),
    )
    .await
    .is_some()
}
