//! One supervisor for every task of the daemon: if one fails for good, the others are
//! shut down cleanly and the daemon exits non-zero, so that the orchestrator restarts it.
//!
//! Shutdown runs in two steps. The shared token stops the sources and the heartbeat; they
//! drain (each bounded by `--shutdown_timeout`) while the HTTP servers keep answering, so
//! `/health` and `/ready` say 503 until the end. Only when every task is done are the
//! servers stopped. A task that outlives its drain by far is aborted: shutdown is bounded
//! by a deadline, never by a sleep.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observe::health;
use crate::sources::http::{self, ServerLimits};

/// Beyond `--shutdown_timeout`, how long tasks get before they are aborted.
const ABORT_AFTER: Duration = Duration::from_secs(15);
/// How long open HTTP requests get once every task is done.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

struct Task {
    name: &'static str,
    /// The readiness component that fails with it, if any.
    component: Option<&'static str>,
}

pub struct Supervisor {
    /// Cancelled on SIGINT/SIGTERM or when a task fails: every task watches it.
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), String>>,
    names: HashMap<Id, Task>,
    /// The HTTP servers; they stop on `server_stop`, after every task.
    servers: JoinSet<Result<(), String>>,
    server_stop: CancellationToken,
    /// Connection cap and read timeouts of every server.
    limits: ServerLimits,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, limits: ServerLimits) -> Self {
        Supervisor {
            shutdown,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            servers: JoinSet::new(),
            server_stop: CancellationToken::new(),
            limits,
        }
    }

    /// Runs `task` until it returns; returning before shutdown counts as a failure.
    pub fn spawn(
        &mut self,
        name: &'static str,
        component: Option<&'static str>,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), Task { name, component });
    }

    /// Serves `router` on `listener` until every task is done; `name` labels the port in
    /// logs and metrics.
    pub fn serve(&mut self, name: &'static str, listener: TcpListener, router: Router) {
        self.servers.spawn(http::serve(
            listener,
            router,
            self.limits,
            name,
            self.server_stop.clone(),
        ));
    }

    /// Waits for every task; `Err` names the first failure.
    pub async fn wait(mut self, shutdown_timeout: Duration) -> Result<(), String> {
        let mut failure: Option<String> = None;
        let mut deadline: Option<Instant> = None;
        while !self.tasks.is_empty() {
            tokio::select! {
                joined = self.tasks.join_next_with_id() => {
                    let Some(joined) = joined else { break };
                    let (id, result) = match joined {
                        Ok((id, result)) => (id, result),
                        Err(error) if error.is_cancelled() => {
                            (error.id(), Err("did not stop within the shutdown deadline".into()))
                        }
                        Err(error) => (error.id(), Err(format!("panicked: {error}"))),
                    };
                    let task = self.names.remove(&id);
                    let name = task.as_ref().map_or("a task", |t| t.name);
                    let error = match result {
                        Ok(()) if self.shutdown.is_cancelled() => continue,
                        Ok(()) => "stopped unexpectedly".to_string(),
                        Err(error) => error,
                    };
                    if let Some(component) = task.and_then(|t| t.component) {
                        health::registry().fail(component, &error);
                    }
                    tracing::error!(task = name, %error, "stopping the agent");
                    failure.get_or_insert_with(|| {
                        if error.starts_with(name) { error.clone() } else { format!("{name}: {error}") }
                    });
                    self.shutdown.cancel();
                }
                Some(server) = self.servers.join_next(), if !self.servers.is_empty() => {
                    let error = match server {
                        Ok(Err(error)) => error,
                        Ok(Ok(())) => "the HTTP server stopped unexpectedly".into(),
                        Err(error) => format!("the HTTP server panicked: {error}"),
                    };
                    tracing::error!(%error, "stopping the agent");
                    failure.get_or_insert(error);
                    self.shutdown.cancel();
                }
                () = self.shutdown.cancelled(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + shutdown_timeout + ABORT_AFTER);
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    tracing::warn!(tasks = self.tasks.len(), "tasks still running long after --shutdown_timeout: aborting them");
                    self.tasks.abort_all();
                    deadline = Some(Instant::now() + ABORT_AFTER);
                }
            }
        }
        self.server_stop.cancel();
        if tokio::time::timeout(SERVER_STOP_TIMEOUT, async {
            while self.servers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.servers.abort_all();
        }
        match failure {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
