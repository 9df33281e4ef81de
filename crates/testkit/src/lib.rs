//! Test harness for ilagent's integration tests.
//!
//! The agent's worth is in what happens between real brokers and a real HTTP API, so its tests
//! talk to real processes over real sockets on loopback. This crate starts those processes —
//! a tansu broker (Kafka-compatible) and extra Mosquitto instances with their own config — on
//! fresh ports, waits until they accept connections, and kills and reaps them on `Drop`, so every
//! test owns its broker and leaves nothing behind. It also generates TLS certificates at test
//! time for the TLS and mTLS tests.
//!
//! External programs are found at run time; `scripts/install-test-deps` installs them.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod certs;
mod http;
mod mosquitto;
mod ports;
mod process;
mod tansu;

pub use certs::{CLIENT_COMMON_NAME, TestCerts};
pub use http::http_client;
pub use mosquitto::{Mosquitto, MosquittoConfig, TlsFiles};
pub use ports::{free_port, try_free_port, wait_for_port};
pub use tansu::{Tansu, tansu_binary};
