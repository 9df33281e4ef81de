//! Flags of `ilagent daemon` for its SQLite file (`-f`): how large it may grow.

use clap::Args;

use super::parse_size;

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct QueueFileArgs {
    /// Largest size of the SQLite file (-f) (bytes, KiB, MiB, GiB). When full, the proxy
    /// answers 503 and MQTT and Kafka wait, until deliveries make room.
    #[arg(long, env = "ILAGENT_QUEUE_MAX_SIZE", value_parser = parse_size, default_value = "1GiB")]
    pub queue_max_size: usize,
}
