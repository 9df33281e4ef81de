//! What the agent tells operators: log lines and metrics, one place per happening.
//!
//! Each function here is one thing that happens to a message or a connection; it writes
//! the log line and bumps the counter with the same labels, so logs and metrics never
//! disagree and metric names live in one file. Sources call these, never `tracing` or
//! `metrics` directly, for anything an operator would count.

pub mod events;
