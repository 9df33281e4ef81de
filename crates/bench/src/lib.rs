//! Tools around ilagent that are not the agent: producers for demos and load generation,
//! and the benchmark runner. Nothing here is linked into the agent.

pub mod kafka;
