//! `ilagent daemon`: validates the whole configuration, then runs what it names until
//! SIGINT or SIGTERM: the Kafka and MQTT sources (one or both), the HTTP proxy (`-p`), the operations
//! endpoints (`-p` or `--metrics_port`) and the agent's own heartbeat (`-b`).
//!
//! Start-up order: listeners first (a port in use stops the agent before anything is
//! consumed), then the SQLite file (opened once, shared by the MQTT buffer, the proxy and
//! the dead letters of Kafka without a dead-letter topic), then the tasks, all under one
//! [`supervisor::Supervisor`].

mod heartbeat;
mod self_alert;
mod supervisor;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::supervisor::Supervisor;
use super::Exit;
use crate::cli::{DaemonArgs, GlobalArgs};
use crate::config::{DaemonConfig, Topics};
use crate::delivery::idempotency::prune_accepted_ids;
use crate::delivery::{AcceptedIds, Deliverer};
use crate::ilert::{EventPath, IlertClient};
use crate::message::SourceKind;
use crate::observe::endpoints::{self, Ops};
use crate::observe::health::{self, registry};
use crate::observe::prometheus;
use crate::queue::Queue;
use crate::sources::http::{HttpProxy, RowDelivery};
use crate::sources::kafka::KafkaSource;
use crate::sources::mqtt::MqttSource;

/// The Kafka consumer reports statistics every 2 s; this long without one means stuck.
/// (A rebalance may block the poll loop for up to the drain timeout.)
const KAFKA_STALE_AFTER: Duration = Duration::from_secs(60);

pub async fn run(global: &GlobalArgs, args: &DaemonArgs) -> Exit {
    let config = match DaemonConfig::from_args(global, args) {
        Ok(config) => config,
        Err(error) => return error.into(),
    };
    let client = match IlertClient::new(&config.client) {
        Ok(client) => client,
        Err(error) => return Exit::Failed(error.to_string()),
    };
    let deliverer = Deliverer::new(
        client.clone(),
        config.budgets,
        config.retry,
        config.api_key.clone(),
    );
    deliverer.set_policy_cache_ttl(config.policy_cache_ttl);

    let shutdown = CancellationToken::new();
    crate::shutdown::cancel_on_signal(shutdown.clone());

    let proxy_listener = match &config.http {
        Some(http) => match listen(SocketAddr::new(http.bind, http.port), "-p/--port").await {
            Ok(listener) => Some(listener),
            Err(error) => return Exit::Failed(error),
        },
        None => None,
    };
    let metrics_listener = match config.metrics_addr {
        Some(addr) => match listen(addr, "--metrics_port").await {
            Ok(listener) => Some(listener),
            Err(error) => return Exit::Failed(error),
        },
        None => None,
    };
    let metrics = if proxy_listener.is_some() || metrics_listener.is_some() {
        match prometheus::install() {
            Ok(handle) => {
                prometheus::spawn_upkeep(handle.clone());
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot install the metrics recorder: /metrics is off");
                None
            }
        }
    } else {
        None
    };
    // Kafka without a dead-letter topic keeps its dead letters in the file, and routes
    // with `dedupe` their accepted ids.
    let kafka_needs_file = config.kafka.as_ref().is_some_and(|k| k.dlq_topic.is_none());
    let queue = if config.mqtt.is_some()
        || config.http.is_some()
        || kafka_needs_file
        || config.routes.dedupes()
    {
        let (path, limits) = (config.db_file.clone(), config.queue_limits);
        match tokio::task::spawn_blocking(move || Queue::open(&path, limits)).await {
            Ok(Ok(queue)) => Some(queue),
            Ok(Err(error)) => return Exit::Failed(error.to_string()),
            Err(error) => return Exit::Failed(format!("cannot open the SQLite file: {error}")),
        }
    } else {
        None
    };
    // Every event with an idempotency id is checked against the file, whichever source
    // it came from.
    let deliverer = match &queue {
        Some(queue) => deliverer.remembering(AcceptedIds::new(queue.clone())),
        None => deliverer,
    };
    let proxy_rows_waiting = match &queue {
        Some(queue) => match upgrade::import_and_check(queue, &config).await {
            Ok(waiting) => waiting,
            Err(error) => return Exit::Failed(error.to_string()),
        },
        None => false,
    };

    if config.kafka.is_some() {
        registry().register(health::KAFKA, Some(KAFKA_STALE_AFTER));
    }
    if config.mqtt.is_some() {
        registry().register(health::MQTT, None);
    }
    if queue.is_some() {
        registry().register(health::QUEUE, None);
        registry().set(health::QUEUE, true, "writable");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        proxy = ?proxy_listener.as_ref().and_then(|l| l.local_addr().ok()),
        metrics = ?metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        "ilagent daemon started"
    );

    // Before any source runs: what they settle from the start counts.
    crate::observe::figures::configure(
        config.self_watch.thresholds.p99_delivery,
        config.self_watch.window,
        config.self_watch.rebalance_window,
    );
    let mut supervisor = Supervisor::new(shutdown.clone(), config.server);
    if let Some(queue) = queue.clone() {
        let (max_ids, shutdown) = (config.dedupe_max_ids, shutdown.clone());
        supervisor.spawn("idempotency ids", None, async move {
            prune_accepted_ids(queue, max_ids, shutdown).await;
            Ok(())
        });
    }
    if let Some(kafka) = config.kafka.clone() {
        let source = KafkaSource {
            config: kafka,
            // With MQTT beside it, the topic flags name MQTT filters too.
            topics: Topics {
                routed: config.routes.topics_for(SourceKind::Kafka),
                ..config.topics.kafka_names()
            },
            mapping: Arc::new(config.mapping.clone()),
            routes: Arc::clone(&config.routes),
            deliverer: deliverer.clone(),
            event_path: config.event_path.clone(),
            shutdown_timeout: config.shutdown_timeout,
            queue: if kafka_needs_file {
                queue.clone()
            } else {
                None
            },
        };
        let shutdown = shutdown.clone();
        supervisor.spawn("kafka source", Some(health::KAFKA), async move {
            source.run(shutdown).await.map_err(|e| e.to_string())
        });
    }
    if let (Some(mqtt), Some(queue)) = (config.mqtt.clone(), queue.clone()) {
        let source = MqttSource {
            config: mqtt,
            topics: Topics {
                routed: config.routes.topics_for(SourceKind::Mqtt),
                ..config.topics.clone()
            },
            mapping: Arc::new(config.mapping.clone()),
            routes: Arc::clone(&config.routes),
            deliverer: deliverer.clone(),
            event_path: config.event_path.clone(),
            shutdown_timeout: config.shutdown_timeout,
            queue,
        };
        let shutdown = shutdown.clone();
        supervisor.spawn("mqtt source", Some(health::MQTT), async move {
            source.run(shutdown).await.map_err(|e| e.to_string())
        });
    }
    let ops = Ops {
        shutdown: shutdown.clone(),
        queue: queue.clone(),
        metrics,
    };
    if let (Some(http), Some(queue), Some(listener)) =
        (config.http.clone(), queue.clone(), proxy_listener)
    {
        registry().register(health::HTTP, None);
        registry().set(health::HTTP, true, "listening");
        let proxy = HttpProxy {
            config: http,
            queue,
            client: client.clone(),
            deliverer: deliverer.clone(),
            event_path: config.event_path.clone().unwrap_or(EventPath::Generic),
            shutdown_timeout: config.shutdown_timeout,
            idempotency_window: config.http_idempotency_window,
            routes: Arc::clone(&config.routes),
        };
        let (api, worker) = proxy.start(&shutdown);
        supervisor.spawn("http queue worker", Some(health::HTTP), async move {
            worker
                .await
                .map_err(|e| format!("the queue worker failed: {e}"))
        });
        supervisor.serve("proxy", listener, api.merge(endpoints::router(ops.clone())));
    }
    if let (None, Some(queue), true) = (&config.http, queue.clone(), proxy_rows_waiting) {
        // Rows of the proxy's kind without -p: left by an earlier run, or by ilagent 0.9.
        let rows = RowDelivery {
            queue,
            deliverer: deliverer.clone(),
            event_path: config.event_path.clone().unwrap_or(EventPath::Generic),
            shutdown_timeout: config.shutdown_timeout,
            idempotency_window: config.http_idempotency_window,
            routes: Arc::clone(&config.routes),
        };
        let worker = rows.start(&shutdown);
        supervisor.spawn("http queue worker", None, async move {
            worker
                .await
                .map_err(|e| format!("the queue worker failed: {e}"))
        });
    }
    if let Some(listener) = metrics_listener {
        supervisor.serve("metrics", listener, endpoints::router(ops));
    }
    if let Some(heartbeat) = config.heartbeat.clone() {
        supervisor.spawn(
            "agent heartbeat",
            None,
            heartbeat::ping_while_healthy(
                deliverer.clone(),
                heartbeat,
                queue.clone(),
                shutdown.clone(),
            ),
        );
    }

    supervisor.spawn(
        "self-monitoring",
        None,
        self_alert::watch_self(
            config.self_watch.clone(),
            deliverer.clone(),
            shutdown.clone(),
        ),
    );

    let result = supervisor.wait(config.shutdown_timeout).await;
    tracing::info!("ilagent daemon stopped");
    match result {
        Ok(()) => Exit::Success,
        Err(error) => Exit::Failed(error),
    }
}

async fn listen(addr: SocketAddr, flag: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({flag}): {e}"))
}
