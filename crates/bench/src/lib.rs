//! Tools around ilagent that are not the agent: a producer for demos, and the benchmark
//! runner (real broker, the ilert stand-in, the release agent as a separate process).
//! Nothing here is linked into the agent.

pub mod agent_process;
pub mod kafka;
pub mod report;
pub mod scenario;
