//! Tools around ilagent that are not the agent: a producer for demos, the benchmark
//! runner and the soak (real brokers, the ilert stand-in in-process, the release agent as
//! a separate process). Nothing here is linked into the agent.
//!
//! # Layout
//! - [`scenario`]: one module per delivery path (`ceiling`, `kafka`, `mqtt`, `proxy`,
//!   `latency`), each driving its stream through the agent into the stand-in;
//! - [`event`]: the events (key, per-key sequence, send time) and how to read them back;
//! - [`collect`]: waiting at the stand-in for every event, and the warm-up;
//! - [`report`]: a row from the stand-in's log, the table; [`targets`]: issue 6's targets;
//! - [`agent_process`]: the agent process and its /proc figures;
//! - [`kafka`], [`mqtt`]: producing and publishing; [`reference`]: a bare consumer beside
//!   the agent, to tell what the agent adds from what the broker path costs;
//! - [`soak`]: hours of steady traffic through every source, sampled for growth.

pub mod agent_process;
pub mod collect;
pub mod event;
pub mod kafka;
pub mod mqtt;
pub mod reference;
pub mod report;
pub mod scenario;
pub mod soak;
pub mod targets;
