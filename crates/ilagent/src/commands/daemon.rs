//! `ilagent daemon`: validates the whole configuration, then runs what it names until
//! SIGINT or SIGTERM.
//!
//! Runs the Kafka or MQTT source and the agent's own heartbeat (`-b`); refuses, with exit
//! status 2, a configuration that needs a source this build does not have yet (the HTTP
//! proxy). If a source fails for good, the others are shut down and the daemon exits 1,
//! so that the orchestrator restarts it.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::action::{Action, Outcome};
use crate::cli::{DaemonArgs, GlobalArgs};
use crate::config::{AgentHeartbeat, DaemonConfig, UsageError};
use crate::delivery::{Context, Deliverer, RetryPolicy};
use crate::ilert::IlertClient;
use crate::queue::settle::RetrySchedule;
use crate::sources::kafka::KafkaSource;
use crate::sources::mqtt::MqttSource;

pub async fn run(global: &GlobalArgs, args: &DaemonArgs) -> Exit {
    let config = match DaemonConfig::from_args(global, args) {
        Ok(config) => config,
        Err(error) => return error.into(),
    };
    if let Some(missing) = unavailable_source(&config) {
        return UsageError(format!(
            "{missing} is not available in this build of ilagent yet: remove it, or use a release that has it"
        ))
        .into();
    }
    let client = match IlertClient::new(&config.client) {
        Ok(client) => client,
        Err(error) => return Exit::Failed(error.to_string()),
    };
    let deliverer = Deliverer::new(client, config.budgets, config.retry, config.api_key.clone());
    deliverer.set_policy_cache_ttl(config.policy_cache_ttl);

    let shutdown = CancellationToken::new();
    crate::shutdown::cancel_on_signal(shutdown.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "ilagent daemon started"
    );

    let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
    if let Some(kafka) = config.kafka.clone() {
        let source = KafkaSource {
            config: kafka,
            topics: config.topics.clone(),
            mapping: Arc::new(config.mapping.clone()),
            deliverer: deliverer.clone(),
            event_path: config.event_path.clone(),
            shutdown_timeout: config.shutdown_timeout,
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move { source.run(shutdown).await.map_err(|e| e.to_string()) });
    }
    if let Some(mqtt) = config.mqtt.clone() {
        // Queued rows get one attempt per hand-out: the row counts the attempts, so a
        // restart continues the count. Same client and rate budgets as live deliveries.
        let queue_deliverer = deliverer.with_policy(RetryPolicy {
            max_attempts: Some(1),
            ..config.retry
        });
        let source = MqttSource {
            config: mqtt,
            topics: config.topics.clone(),
            mapping: Arc::new(config.mapping.clone()),
            deliverer: deliverer.clone(),
            queue_deliverer,
            schedule: RetrySchedule {
                backoff: config.retry.backoff,
                max_attempts: config.retry.max_attempts,
            },
            event_path: config.event_path.clone(),
            shutdown_timeout: config.shutdown_timeout,
            db_file: config.db_file.clone(),
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move { source.run(shutdown).await.map_err(|e| e.to_string()) });
    }
    if let Some(heartbeat) = config.heartbeat.clone() {
        let (deliverer, shutdown) = (deliverer.clone(), shutdown.clone());
        tasks.spawn(async move {
            ping_until_shutdown(&deliverer, &heartbeat, &shutdown).await;
            Ok(())
        });
    }

    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| Err(format!("a task failed: {e}")));
        if let Err(error) = result {
            tracing::error!(%error, "stopping the agent");
            failure.get_or_insert(error);
            shutdown.cancel();
        } else if !shutdown.is_cancelled() {
            // A task that ends on its own before shutdown is a failure of the agent too.
            failure.get_or_insert_with(|| "a source stopped unexpectedly".to_string());
            shutdown.cancel();
        }
    }
    tracing::info!("ilagent daemon stopped");
    match failure {
        None => Exit::Success,
        Some(error) => Exit::Failed(error),
    }
}

fn unavailable_source(config: &DaemonConfig) -> Option<&'static str> {
    if config.http_port.is_some() {
        Some("the HTTP proxy (-p/--port)")
    } else {
        None
    }
}

/// Pings the agent's heartbeat at start and then every interval. A ping that keeps
/// failing is given up when the next one is due, so pings never pile up.
async fn ping_until_shutdown(
    deliverer: &Deliverer,
    heartbeat: &AgentHeartbeat,
    shutdown: &CancellationToken,
) {
    let mut ticks = tokio::time::interval(heartbeat.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let action = Action::Heartbeat(heartbeat.key.clone());
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let ctx = Context {
            location: &"agent heartbeat",
            deadline: Some(Instant::now() + heartbeat.interval),
            cancel: shutdown,
        };
        match deliverer.deliver(&action, &ctx).await {
            Outcome::Delivered { .. } => {
                tracing::debug!(key = %heartbeat.key, "agent heartbeat pinged")
            }
            Outcome::Interrupted { .. } => return,
            other => {
                tracing::warn!(key = %heartbeat.key, outcome = ?other, "agent heartbeat ping failed")
            }
        }
    }
}
