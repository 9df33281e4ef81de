//! Flags of `ilagent queue`: look into the SQLite file (-f) and act on its dead letters,
//! also while a daemon is running on it.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum QueueCommand {
    /// Depth of the queue and number of dead letters, one `name value` pair per line.
    Status,
    /// Messages waiting in the queue, oldest first, one tab-separated line each:
    /// id, created_at, source, topic, attempts, next_attempt_at, last_error.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Dead letters, oldest first, one tab-separated line each:
    /// id, failed_at, source, topic, kind, attempts, reason.
    DeadLetters {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line, with the payload.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back into the queue with their attempts reset; the running
    /// daemon delivers them within its idle poll interval (10 s).
    Requeue {
        /// Dead-letter ids (see `dead_letters`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good.
    Purge {
        /// Dead-letter ids (see `dead_letters`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}
