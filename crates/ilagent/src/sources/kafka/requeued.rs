//! Delivering Kafka messages that come back from the SQLite file: dead letters an operator
//! put back with `ilagent queue requeue` become queue rows of source `kafka`, and nothing
//! reads Kafka rows but this worker. (Their offsets were committed when they were
//! dead-lettered; from here on the file holds them, as it holds the MQTT buffer's.)
//!
//! The rows are retried through the file as every queued row is: one attempt per
//! hand-out, `--max_retries` attempts before a row goes back to the dead letters.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::Deliverer;
use crate::message::SourceKind;
use crate::pipeline::{Dispatcher, MessageRouter};
use crate::queue::Queue;
use crate::queue::settle::QueueSettler;
use crate::queue::worker::{IDLE_POLL, Wakeup, Worker};

/// Starts the worker for the Kafka rows of `queue`; it stops on `shutdown`, letting
/// in-flight rows finish for up to `shutdown_timeout`.
pub(crate) fn spawn_worker(
    queue: &Queue,
    deliverer: &Deliverer,
    router: MessageRouter,
    max_in_flight: usize,
    shutdown: &CancellationToken,
    shutdown_timeout: Duration,
) -> JoinHandle<()> {
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let wake = Arc::new(Wakeup::default());
    let abort = CancellationToken::new();
    let settler = QueueSettler {
        queue: queue.clone(),
        policy: *deliverer.policy(),
        in_flight: Arc::clone(&in_flight),
        wake: Arc::clone(&wake),
        abort: abort.clone(),
    };
    let dispatcher = Dispatcher::new(
        deliverer.single_attempt(),
        settler,
        max_in_flight,
        abort.clone(),
    );
    let worker = Worker {
        queue: queue.clone(),
        dispatcher,
        router,
        in_flight,
        wake,
        abort,
        source: Some(SourceKind::Kafka),
        idle_poll: IDLE_POLL,
    };
    tokio::spawn(worker.run(shutdown.clone(), shutdown_timeout))
}
