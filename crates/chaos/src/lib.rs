//! The fault suite: what ilagent's "nothing lost" promise has to survive, run against the
//! release agent as a separate process, real brokers (tansu, Mosquitto, librdkafka's mock
//! cluster where a Kafka broker must go down and come back with its data) and the ilert
//! stand-in, in this process.
//!
//! # Layout
//! - [`run`]: one module per fault (SIGKILL loop, ilert outage, broker restart, malformed
//!   corpus, SIGKILL during a rebalance); each sets up a [`source`], injects its fault while
//!   a [`feed`] streams events, waits for the stand-in and returns an [`outcome`];
//! - [`agent`]: the agent process that the runs kill and start again on one SQLite file;
//! - [`ilert`]: the stand-in, which a run can take away (connection refused) or turn to 503;
//! - [`corpus`]: the malformed messages;
//! - [`size`]: the small size (CI) and the large one (the default of `scripts/chaos`).

pub mod agent;
pub mod corpus;
pub mod feed;
pub mod ilert;
pub mod outcome;
pub mod run;
pub mod size;
pub mod source;
