//! The local HTTP proxy (`-p`): applications post ilert events and heartbeat pings to the
//! agent instead of to ilert, and the agent delivers them at least once.
//!
//! - [`intake`] answers `POST /api/events` with 202 only after the event is committed to
//!   the SQLite queue (`-f`): a 202 means it is on disk and survives a crash. The paths of
//!   http routes (`[[route]] source = "http"`) take any body their route maps, the same way.
//! - The queue worker ([`crate::queue::worker`]) delivers the proxy's rows per alert key
//!   in insertion order and in parallel across keys; every attempt is counted in its row,
//!   and `--max_retries` moves an exhausted row to the dead letters. Polling: a new event
//!   wakes it at once; 500 ms while rows are due; at most 5 s when idle; a failing row
//!   waits its own backoff, up to `--backoff_max` (60 s).
//! - [`heartbeat`] forwards pings at once, never queued.
//! - [`reply`] shapes errors as ilert does and checks `--http_token` on `/api/*`.
//! - [`limits`] caps the `/api/*` requests under way (`--http_max_in_flight`) and gives
//!   request bodies a deadline (`--http_body_timeout`).
//! - [`server`] serves the proxy's port and `--metrics_port`: the connection cap and the
//!   header timeout, and graceful shutdown.
//!
//! The operations endpoints (`/health`, `/ready`, `/metrics`) are merged in by the daemon
//! ([`crate::observe::endpoints`]); the token does not apply to them.

mod heartbeat;
mod intake;
mod limits;
mod reply;
mod server;

pub use heartbeat::path_key;
pub use intake::{event_of, is_json};
pub use reply::error_body;
pub use server::ServerLimits;
pub(crate) use server::serve;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::Deliverer;
use crate::ilert::{EventPath, IlertClient};
use crate::mapping::{MappingConfig, MessageKind};
use crate::message::SourceKind;
use crate::pipeline::{Dispatcher, MessageRouter};
use crate::queue::Queue;
use crate::queue::settle::QueueSettler;
use crate::queue::worker::{Wakeup, Worker};
use crate::routes::RouteTable;
use crate::secret::Secret;

/// The proxy's idle poll: at most this long between looks at the queue with nothing due.
pub const IDLE_POLL: Duration = Duration::from_secs(5);
/// Deliveries of queued events running at once, across alert keys.
const MAX_IN_FLIGHT: usize = 256;

/// The proxy's flags, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// `--http_bind`.
    pub bind: IpAddr,
    /// `-p/--port`.
    pub port: u16,
    /// `--http_token`: required on `/api/*` when set.
    pub token: Option<Secret>,
    /// `--http_max_body`, bytes.
    pub max_body: usize,
    /// `--http_max_in_flight`: `/api/*` requests handled at once.
    pub max_in_flight: usize,
}

/// Everything the proxy runs from.
pub struct HttpProxy {
    pub config: HttpConfig,
    /// Shared with the MQTT buffer when both run: one file, one queue thread.
    pub queue: Queue,
    /// Forwards heartbeat pings.
    pub client: IlertClient,
    /// Delivers queued rows (one attempt per hand-out, the row keeps the count).
    pub deliverer: Deliverer,
    /// `--ilert_event_path`, else ilert's generic `/api/events`.
    pub event_path: EventPath,
    pub shutdown_timeout: Duration,
    /// `--http_idempotency_window` (zero: `Idempotency-Key` is ignored).
    pub idempotency_window: Duration,
    /// The configuration file's routes; those of source `http` add their paths.
    pub routes: Arc<RouteTable>,
}

/// How the proxy routes and maps what it is sent, at intake and again at delivery: ilert's
/// own schema on `/api/events`, the routes' expressions on their paths.
pub(crate) fn router(routes: Arc<RouteTable>, idempotency_window: Duration) -> MessageRouter {
    MessageRouter::fixed(MessageKind::Event, Arc::new(MappingConfig::default()))
        .with_routes(routes)
        .with_idempotency_window(idempotency_window)
}

/// What the request handlers share.
#[derive(Clone)]
struct ApiState {
    queue: Queue,
    wake: Arc<Wakeup>,
    /// Events in the ilert schema as it is: the proxy does not apply the broker mapping
    /// flags.
    router: MessageRouter,
    /// `--http_idempotency_window` is not 0.
    honours_idempotency_key: bool,
    client: IlertClient,
    /// Cancelled when shutdown begins: new events are refused with 503 from then on.
    shutdown: CancellationToken,
    max_body: usize,
}

impl HttpProxy {
    /// The `/api` routes, and the queue worker delivering the proxy's rows (it returns
    /// after `shutdown` and its drain).
    pub fn start(self, shutdown: &CancellationToken) -> (Router, JoinHandle<()>) {
        let wake = Arc::new(Wakeup::default());
        let rows = RowDelivery {
            queue: self.queue.clone(),
            deliverer: self.deliverer.clone(),
            event_path: self.event_path.clone(),
            shutdown_timeout: self.shutdown_timeout,
            idempotency_window: self.idempotency_window,
            routes: Arc::clone(&self.routes),
        };
        let router = router(Arc::clone(&rows.routes), rows.idempotency_window);
        let worker = spawn_worker(rows, &wake, shutdown);
        let state = ApiState {
            queue: self.queue.clone(),
            wake,
            router,
            honours_idempotency_key: !self.idempotency_window.is_zero(),
            client: self.client.clone(),
            shutdown: shutdown.clone(),
            max_body: self.config.max_body,
        };
        let mut api = Router::new()
            .route("/api/events", post(intake::post_event))
            .route("/api/v1/events", post(intake::post_event))
            .route(
                "/api/heartbeats/{key}",
                get(heartbeat::forward).post(heartbeat::forward),
            )
            .route(
                "/api/v1/heartbeats/{key}",
                get(heartbeat::forward).post(heartbeat::forward),
            );
        for path in self.routes.topics_for(SourceKind::Http) {
            api = api.route(&path, post(intake::post_routed));
        }
        let mut api = api
            .layer(DefaultBodyLimit::max(self.config.max_body))
            .layer(axum::middleware::from_fn_with_state(
                limits::InFlight::new(self.config.max_in_flight),
                limits::limit_in_flight,
            ))
            .with_state(state);
        if let Some(token) = self.config.token.clone() {
            api = api.layer(axum::middleware::from_fn_with_state(
                Arc::new(token),
                reply::require_token,
            ));
        }
        (api, worker)
    }
}

/// What delivering the proxy's rows needs.
pub struct RowDelivery {
    pub queue: Queue,
    /// One attempt per hand-out (the row keeps the count).
    pub deliverer: Deliverer,
    pub event_path: EventPath,
    pub shutdown_timeout: Duration,
    /// `--http_idempotency_window` (zero: `Idempotency-Key` is ignored).
    pub idempotency_window: Duration,
    /// Rows of an http route's path map by its route.
    pub routes: Arc<RouteTable>,
}

impl RowDelivery {
    /// Delivers the proxy's rows without serving the API: for rows an earlier run with
    /// `-p`, or ilagent 0.9, left in the file when this run has no `-p`. Returns after
    /// `shutdown` and the drain.
    pub fn start(self, shutdown: &CancellationToken) -> JoinHandle<()> {
        let wake = Arc::new(Wakeup::default());
        spawn_worker(self, &wake, shutdown)
    }
}

fn spawn_worker(
    rows: RowDelivery,
    wake: &Arc<Wakeup>,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let abort = CancellationToken::new();
    let settler = QueueSettler {
        queue: rows.queue.clone(),
        policy: *rows.deliverer.policy(),
        in_flight: Arc::clone(&in_flight),
        wake: Arc::clone(wake),
        abort: abort.clone(),
    };
    let dispatcher = Dispatcher::new(
        rows.deliverer
            .single_attempt()
            .with_event_path(rows.event_path.clone()),
        settler,
        MAX_IN_FLIGHT,
        abort.clone(),
    );
    let worker = Worker {
        queue: rows.queue.clone(),
        dispatcher,
        router: router(Arc::clone(&rows.routes), rows.idempotency_window),
        in_flight,
        wake: Arc::clone(wake),
        abort,
        source: Some(SourceKind::Http),
        idle_poll: IDLE_POLL,
    };
    tokio::spawn(worker.run(shutdown.clone(), rows.shutdown_timeout))
}
