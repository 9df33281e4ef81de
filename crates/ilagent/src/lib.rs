//! ilagent: delivers operational signals from message brokers to ilert, at least once.
//!
//! # Layout
//!
//! Every message takes the same path, whatever its source:
//!
//! ```text
//! source  -> Message { payload, metadata }           message.rs, sources/ (kafka, mqtt, http)
//! route   -> a configured route (topic + condition),  routes/, pipeline/route.rs,
//!            else which kind of topic it came from    sources/route.rs
//! map     -> Action: Event | Heartbeat | PolicyUpdate | Skip | Invalid     mapping/
//!            (a route's jq field expressions first)   routes/expr.rs
//! order   -> per alert key, parallel across keys      pipeline/dispatcher.rs
//! deliver -> Outcome: Delivered | Skipped | Duplicate | Coalesced | Rejected | Failed | Interrupted
//!            (rate budget, then a slot on the wire)   delivery/, ilert/
//! settle  -> the source's own acknowledgement         sources/ (commit, PUBACK in arrival
//!            order, 202 after the SQLite commit), queue/ (rows deleted, rescheduled or
//!            dead-lettered); writes that settle retry until done (pipeline/persist.rs)
//! ```
//!
//! - [`pipeline`] is what every source shares after receiving: route and map, the
//!   key-ordered dispatcher, and the rule for retrying the writes that settle a message.
//! - [`mapping`] is pure: bytes and configuration in, an [`action::Action`] out.
//! - [`routes`] are the configuration file's `[[route]]`s: topic, jq condition and jq
//!   field expressions, compiled once; `ilagent map` and `ilagent check` preview them.
//! - [`delivery`] owns the one retry policy (backoff, `Retry-After`, `--max_retries`), the
//!   per-key rate limits, heartbeat coalescing and idempotency (an event id ilert accepted
//!   is not sent again; the ids live in the SQLite file); it talks
//!   to ilert through [`ilert`], which only makes requests and classifies answers.
//! - [`queue`] keeps messages in SQLite until ilert has them (MQTT with `--mqtt_buffer`,
//!   the HTTP proxy) and holds the dead letters and the accepted idempotency ids;
//!   `ilagent queue` inspects and requeues them.
//! - [`observe`] is what operators see: log lines and metrics (one function per happening),
//!   readiness of every component, and the `/health`, `/ready`, `/metrics` endpoints.
//! - [`cli`] and [`config`] turn flags, environment variables and the configuration file
//!   (`config/file.rs`) into a validated configuration; [`commands`] runs each subcommand; the daemon runs every task under one
//!   supervisor and one shutdown token ([`shutdown`]).

pub mod action;
pub mod cli;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod ilert;
pub mod logging;
pub mod mapping;
pub mod message;
pub mod observe;
pub mod pipeline;
pub mod printable;
pub mod queue;
pub mod routes;
pub mod secret;
pub mod shutdown;
pub mod sources;
