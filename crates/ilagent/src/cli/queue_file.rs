//! Flags of `ilagent daemon` for its SQLite file (`-f`): how large it may grow, and how
//! many idempotency ids it keeps.

use std::time::Duration;

use clap::Args;

use super::{parse_duration, parse_size};

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct QueueFileArgs {
    /// Largest size of the SQLite file (-f) (bytes, KiB, MiB, GiB). When full, the proxy
    /// answers 503 and MQTT and Kafka wait, until deliveries make room.
    #[arg(long, env = "ILAGENT_QUEUE_MAX_SIZE", value_parser = parse_size, default_value = "1GiB")]
    pub queue_max_size: usize,

    /// Most idempotency ids kept (a route's `dedupe`, the proxy's Idempotency-Key), about
    /// 60 bytes each in -f; beyond it those nearest the end of their window are dropped.
    #[arg(long, env = "ILAGENT_DEDUPE_MAX_IDS", default_value_t = 1_000_000)]
    pub dedupe_max_ids: u64,

    /// How long the proxy's Idempotency-Key suppresses a request with the same key once
    /// ilert accepted it (0: the header is ignored).
    #[arg(long, env = "ILAGENT_HTTP_IDEMPOTENCY_WINDOW", value_parser = parse_duration, default_value = "24h", help_heading = "HTTP proxy")]
    pub http_idempotency_window: Duration,
}
