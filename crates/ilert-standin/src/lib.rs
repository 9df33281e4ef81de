//! A local stand-in for the ilert API (events, heartbeats, escalation-policy calls), used by
//! ilagent's tests, benchmarks and README demo instead of the real service. It records every
//! request so a test can assert exactly what arrived, and can be told to misbehave (latency,
//! random 503s, scripted answers, rate limits, dropped connections, per-key errors).
//!
//! In-process use: [`StandIn::start`]. Out-of-process use: the `ilert-standin` binary and its
//! `/__standin/` control endpoints.

mod control;
mod display;
mod model;
mod routes;
mod server;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use display::mask_key;
pub use model::{
    Behaviour, Level, Policy, RateLimit, RecordedRequest, RequestKind, Scripted, User,
};
use state::Shared;

/// A running stand-in server. Dropping it stops the server.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl StandIn {
    /// Starts on 127.0.0.1 with a free port and default behaviour.
    pub async fn start() -> std::io::Result<StandIn> {
        Self::start_with(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            Behaviour::default(),
        )
        .await
    }

    /// Starts on `addr` (port 0 picks a free port) with the given behaviour.
    pub async fn start_with(addr: SocketAddr, behaviour: Behaviour) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(behaviour);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router = server::router(Arc::clone(&shared));
        tracker.spawn(server::accept_loop(
            listener,
            router,
            cancel.clone(),
            tracker.clone(),
        ));
        Ok(StandIn {
            shared,
            addr,
            cancel,
            tracker,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every ilert request received, in arrival order (control endpoints excluded).
    /// A request appears once it has been answered (or its connection dropped).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// JSON bodies of event requests answered 2xx, in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.shared.events()
    }

    /// Forgets recorded requests and rate-limit windows (behaviour, script, users and
    /// policies stay).
    pub fn clear(&self) {
        self.shared.clear();
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.set_behaviour(behaviour);
    }

    /// Appends to the script FIFO: each following ilert request takes one entry before the
    /// standing behaviour applies.
    pub fn script(&self, responses: impl IntoIterator<Item = Scripted>) {
        self.shared.push_script(responses);
    }

    /// Returns once at least `n` requests are recorded, or at `timeout` with what there is.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        self.shared.wait_for(n, timeout).await
    }

    pub fn add_user(&self, user: User) {
        self.shared.add_user(user);
    }

    /// Adds (or replaces, by id) an escalation policy.
    pub fn add_policy(&self, policy: Policy) {
        self.shared.add_policy(policy);
    }

    /// The policy's current state, including level updates received.
    pub fn policy(&self, id: i64) -> Option<Policy> {
        self.shared.policy(id)
    }

    /// A live feed of requests as they are recorded (used by `ilert-standin --print`).
    pub fn subscribe(&self) -> broadcast::Receiver<RecordedRequest> {
        self.shared.subscribe()
    }

    /// Stops accepting, closes all connections and waits for the server tasks to end;
    /// returns every request recorded, those answered while it was stopping included.
    pub async fn shutdown(self) -> Vec<RecordedRequest> {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.shared.requests()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
