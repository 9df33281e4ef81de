//! The MQTT source: broker messages delivered at least once, in order per alert key and
//! in parallel across keys, with manual acknowledgements on a persistent session.
//!
//! - [`connection`] is the one task that polls rumqttc's event loop (through the
//!   version-neutral [`client`]); it reconnects with backoff and never blocks.
//! - [`intake`] takes each publish either to the shared dispatcher (non-buffered: the
//!   [`settle`] step counts it done after delivery, or after the dead-letter record, and
//!   [`ledger`] acknowledges in arrival order; [`spill`] writes messages that are slow to
//!   settle to SQLite so that the broker keeps sending) or into the SQLite queue
//!   (`--mqtt_buffer`: acknowledged after the commit).
//! - The queue worker ([`crate::queue::worker`]) delivers queued rows; it runs in both
//!   modes, so dead letters requeued with `ilagent queue requeue` are always delivered.
//! - [`io_thread`] runs the connection task, the direct intake and the acknowledgements on
//!   a thread of their own, so deliveries never slow the acknowledgements down.
//! - [`tls`] builds the TLS setup from the certificate files, and [`tls_reload`] watches
//!   them and reconnects when they change.
//!
//! Shutdown: stop taking messages, finish in-flight ones until `--shutdown_timeout`, keep
//! polling so their acknowledgements go out, then DISCONNECT.

pub(crate) mod client;
mod connection;
mod intake;
mod io_thread;
mod ledger;
pub(crate) mod options;
mod settle;
mod spill;
pub mod tls;
mod tls_reload;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::connection::{ConnectionTask, Shared};
use self::io_thread::IoThread;
use self::ledger::Ledger;
use self::settle::{Acker, MqttSettler};
use self::spill::Spill;
use self::tls_reload::TlsWatcher;
use crate::config::{MqttConfig, Topics};
use crate::delivery::Deliverer;
use crate::ilert::EventPath;
use crate::mapping::MappingConfig;
use crate::message::SourceKind;
use crate::pipeline::{Dispatcher, MessageRouter};
use crate::queue::Queue;
use crate::queue::settle::QueueSettler;
use crate::queue::worker::{IDLE_POLL, Wakeup, Worker};
use crate::sources::route::{Routes, TopicSyntax};

pub use self::connection::reconnect_delay;

/// How long the connection task gets to send DISCONNECT after everything has settled.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the drain deadline, how long interrupted deliveries get to report back.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Everything the MQTT source runs from.
pub struct MqttSource {
    pub config: MqttConfig,
    pub topics: Topics,
    pub mapping: Arc<MappingConfig>,
    /// The configuration file's routes, ahead of the flag topics.
    pub routes: Arc<crate::routes::RouteTable>,
    /// Delivers live messages (non-buffered), retrying in memory; its single-attempt
    /// twin delivers queued rows.
    pub deliverer: Deliverer,
    /// `--ilert_event_path`, or the MQTT alert-source path.
    pub event_path: Option<EventPath>,
    pub shutdown_timeout: Duration,
    /// The SQLite file (`-f`): the buffer and the dead letters, opened by the daemon (it
    /// may share the file with the HTTP proxy).
    pub queue: Queue,
}

/// A failure that stops the source: the SQLite file or the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("mqtt source: {0}")]
pub struct MqttSourceError(String);

impl MqttSource {
    /// Consumes until `shutdown`, then drains and disconnects. A broker that is down or
    /// refuses the login is retried, never a reason to stop.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), MqttSourceError> {
        let queue = self.queue.clone();
        let tls = match &self.config.tls {
            Some(files) => Some(files.load().map_err(|e| MqttSourceError(e.to_string()))?),
            None => None,
        };
        let transport = options::transport(tls.as_ref().map(|(_, config)| Arc::clone(config)));
        let (client, eventloop) = options::build(&self.config, transport);
        let shared = Arc::new(Shared::default());
        let routes = Routes::new(&self.topics, TopicSyntax::Mqtt);
        let filters: Vec<String> = routes
            .subscriptions()
            .into_iter()
            .map(|topic| self.config.subscription(topic))
            .collect();
        let broker = format!("{}:{}", self.config.host, self.config.port);
        tracing::info!(
            %broker,
            client_id = %self.config.client_id,
            version = ?self.config.version,
            qos = self.config.qos,
            buffered = self.config.buffer,
            tls = tls.is_some(),
            queue = queue.path(),
            "mqtt source started"
        );

        // Unbounded on purpose: the connection task that feeds it is also the only one that
        // polls the event loop, which sends the acknowledgements. Were it to wait for room
        // here, the intake waiting to acknowledge would wait for it: a deadlock (seen in
        // mqtt-buffered-50ms). What bounds it is the broker's window of unacknowledged QoS 1
        // messages (`--mqtt_max_in_flight` with MQTT 5, the broker's own with 3.1.1), since
        // the agent acknowledges only after delivery or the SQLite write.
        let (intake_tx, intake_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let io = IoThread::start()
            .map_err(|e| MqttSourceError(format!("cannot start the MQTT thread: {e}")))?;
        let connection = io.spawn(
            ConnectionTask {
                eventloop,
                client: client.clone(),
                shared: Arc::clone(&shared),
                filters,
                qos: self.config.qos,
                broker,
                intake: intake_tx,
                stop: stop.clone(),
            }
            .run(),
        );
        if let (Some((snapshot, _)), Some(files)) = (tls, self.config.tls.clone()) {
            let watcher = TlsWatcher {
                files,
                current: snapshot,
                interval: self.config.tls_reload_interval,
                client: client.clone(),
                shared: Arc::clone(&shared),
            };
            tokio::spawn(watcher.run(stop.clone()));
        }

        let path = self
            .event_path
            .clone()
            .unwrap_or_else(|| EventPath::PerKey(EventPath::MQTT.to_string()));
        let wake = Arc::new(Wakeup::default());
        let router = MessageRouter::by_topic(routes, Arc::clone(&self.mapping))
            .with_routes(Arc::clone(&self.routes));
        let held = Arc::new(Mutex::new(HashSet::new()));
        let abort = CancellationToken::new();
        let (spill, deleter) = Spill::new(
            queue.clone(),
            Arc::clone(&held),
            Arc::clone(&wake),
            abort.clone(),
        );
        if !self.config.buffer {
            // Before the worker starts and before any message is taken: a key with rows
            // left in the file must not be overtaken by its new messages.
            spill
                .load_keys()
                .await
                .map_err(|e| MqttSourceError(e.to_string()))?;
        }
        let worker = self.spawn_worker(&queue, &router, &path, &wake, held, &shutdown);
        let acker = Acker {
            client: client.clone(),
            shared: Arc::clone(&shared),
        };
        if self.config.buffer {
            drop(spill);
            intake::buffered(
                intake_rx,
                queue.clone(),
                acker,
                router,
                wake,
                shutdown.clone(),
            )
            .await;
        } else {
            let (ledger, acks) = Ledger::new();
            let ledger = Arc::new(ledger);
            let acks = io.spawn(ledger::send_acks(acks, acker));
            let settler = MqttSettler {
                ledger: Arc::clone(&ledger),
                spill: spill.clone(),
                dead_letters: queue.clone(),
                abort: abort.clone(),
            };
            let dispatcher = Dispatcher::new(
                self.deliverer.with_event_path(path),
                settler,
                self.config.max_in_flight,
                abort.clone(),
            );
            let direct = intake::Direct::new(
                dispatcher.clone(),
                router,
                Arc::clone(&ledger),
                spill,
                self.config.max_unacked,
                self.config.spill_after,
            );
            let _ = io
                .spawn(intake::direct(intake_rx, direct, shutdown.clone()))
                .await;
            drain(&dispatcher, &abort, self.shutdown_timeout).await;
            // Every acknowledgement released so far goes out before the DISCONNECT below.
            ledger.close();
            let _ = acks.await;
        }
        // The rows of messages delivered during the drain are deleted before the exit (or
        // delivered once more after the restart, if that takes too long).
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, deleter).await;
        let stopped_early = !shutdown.is_cancelled();
        let _ = worker.await;

        // Acknowledgements are queued ahead of the DISCONNECT, so they all go out first.
        if let Err(error) = client.disconnect().await {
            tracing::debug!(%error, "disconnect not sent");
        }
        stop.cancel();
        let abort_handle = connection.abort_handle();
        if tokio::time::timeout(DISCONNECT_TIMEOUT, connection)
            .await
            .is_err()
        {
            abort_handle.abort();
        }
        tracing::info!("mqtt source stopped");
        if stopped_early {
            return Err(MqttSourceError(
                "the connection task stopped unexpectedly".into(),
            ));
        }
        Ok(())
    }

    fn spawn_worker(
        &self,
        queue: &Queue,
        router: &MessageRouter,
        path: &EventPath,
        wake: &Arc<Wakeup>,
        in_flight: Arc<Mutex<HashSet<i64>>>,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let abort = CancellationToken::new();
        let settler = QueueSettler {
            queue: queue.clone(),
            policy: *self.deliverer.policy(),
            in_flight: Arc::clone(&in_flight),
            wake: Arc::clone(wake),
            abort: abort.clone(),
        };
        let dispatcher = Dispatcher::new(
            self.deliverer
                .single_attempt()
                .with_event_path(path.clone()),
            settler,
            self.config.max_in_flight,
            abort.clone(),
        );
        let worker = Worker {
            queue: queue.clone(),
            dispatcher,
            router: router.clone(),
            in_flight,
            wake: Arc::clone(wake),
            abort,
            source: Some(SourceKind::Mqtt),
            idle_poll: IDLE_POLL,
        };
        tokio::spawn(worker.run(shutdown.clone(), self.shutdown_timeout))
    }
}

/// Lets in-flight messages finish until the deadline; the rest stay unacknowledged and
/// come back from the broker.
async fn drain(dispatcher: &Dispatcher<MqttSettler>, abort: &CancellationToken, timeout: Duration) {
    // Messages waiting for a budget or a backoff stop now and come back from the broker
    // (or from their spilled row).
    dispatcher.stop_waiting();
    let in_flight = dispatcher.in_flight();
    if in_flight > 0 {
        tracing::info!(in_flight, timeout = ?timeout, "mqtt source stopping: finishing in-flight messages");
    }
    if tokio::time::timeout(timeout, dispatcher.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = dispatcher.in_flight(),
            "--shutdown_timeout passed: the remaining messages stay unacknowledged and the broker delivers them again"
        );
        abort.cancel();
        let _ = tokio::time::timeout(ABORT_GRACE, dispatcher.drained()).await;
    }
}
