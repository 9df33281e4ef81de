//! The operations surface: `GET /` (version), `/health` (liveness), `/ready` (readiness),
//! `/status` (the self-monitoring's conditions) and `/metrics` (Prometheus text). Served on the proxy's port (`-p`) or on its own
//! (`--metrics_port`), never behind the proxy's token: orchestrators and scrapers probe
//! without credentials, and nothing here reveals a secret.
//!
//! The server ([`crate::sources::http::serve`]) keeps answering while the daemon drains
//! after SIGINT or SIGTERM, so that `/health` and `/ready` can say 503 ("stopping") until
//! the process is gone.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{events, health, prometheus};
use crate::queue::Queue;

/// What the endpoints read.
#[derive(Clone)]
pub struct Ops {
    /// Cancelled when shutdown begins: `/health` and `/ready` answer 503 from then on.
    pub shutdown: CancellationToken,
    /// Probed for readiness and counted for the depth gauges, when the daemon has one.
    pub queue: Option<Queue>,
    /// `None` when the recorder could not be installed.
    pub metrics: Option<PrometheusHandle>,
}

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/", get(version))
        .route("/health", get(liveness))
        .route("/ready", get(readiness))
        .route("/status", get(self_status))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

async fn version() -> Response {
    axum::Json(json!({ "name": "ilagent", "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn liveness(State(ops): State<Ops>) -> Response {
    let (status, state) = if ops.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else {
        (StatusCode::OK, "running")
    };
    events::http_request("health", status.as_u16());
    (status, axum::Json(json!({ "status": state }))).into_response()
}

async fn readiness(State(ops): State<Ops>) -> Response {
    let report = health::check(ops.queue.as_ref()).await;
    let stopping = ops.shutdown.is_cancelled();
    let status = if report.ready && !stopping {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    events::http_request("ready", status.as_u16());
    let body = json!({
        "ready": report.ready && !stopping,
        "stopping": stopping,
        "components": report.components,
    });
    (status, axum::Json(body)).into_response()
}

/// The self-monitoring's conditions and figures; always 200 (readiness is `/ready`'s).
async fn self_status() -> Response {
    events::http_request("status", 200);
    axum::Json(super::figures::status()).into_response()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let Some(handle) = &ops.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not available in this process\n",
        )
            .into_response();
    };
    if let Some(queue) = &ops.queue {
        health::probe_queue(queue).await;
    }
    let page = prometheus::render(handle);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}
