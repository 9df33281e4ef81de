//! What the agent tells operators: log lines and metrics, one place per happening.
//!
//! Each function in [`events`] is one thing that happens to a message or a connection; it
//! writes the log line and bumps the counter with the same labels, so logs and metrics
//! never disagree and metric names live in one file. Sources call these, never `tracing`
//! or `metrics` directly, for anything an operator would count.
//!
//! - [`health`] keeps each component's readiness, for `/ready` and the agent's heartbeat.
//! - [`prometheus`] installs the recorder behind the `metrics` facade and renders it.
//! - [`kafka_stats`] turns librdkafka's statistics into readiness and consumer lag.
//! - [`figures`] keeps the few rates the agent watches itself by (seed 004's thresholds).
//! - [`endpoints`] serves `/`, `/health`, `/ready`, `/status` and `/metrics`.

pub mod endpoints;
pub mod events;
pub mod figures;
pub mod health;
pub mod kafka_stats;
pub mod prometheus;
