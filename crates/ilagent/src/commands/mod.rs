//! Runs one subcommand and says how the process should exit.
//!
//! Exit statuses, the same for every command:
//! - 0: done (ilert accepted the event or ping; the daemon stopped cleanly);
//! - 1: ilert rejected it for good (4xx), or the agent failed at run time;
//! - 2: invalid flags or configuration (nothing was sent);
//! - 3: transient failures went on until `--timeout` or `--max_retries` (try again later);
//! - 130: interrupted by SIGINT or SIGTERM before it was done.

mod daemon;
mod event;
mod heartbeat;
mod offline;
mod oneshot;
mod produce;
mod queue;
mod replay;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::UsageError;

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    Usage(UsageError),
    Rejected(String),
    GaveUp(String),
    Interrupted,
    Failed(String),
}

impl From<UsageError> for Exit {
    fn from(error: UsageError) -> Self {
        Exit::Usage(error)
    }
}

impl Exit {
    pub fn code(&self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Rejected(_) | Exit::Failed(_) => 1,
            Exit::Usage(_) => 2,
            Exit::GaveUp(_) => 3,
            Exit::Interrupted => 130,
        }
    }

    /// Prints the one line that says why (to stderr) and returns the exit status.
    pub fn report(self) -> ExitCode {
        match &self {
            Exit::Success => {}
            Exit::Usage(error) => eprintln!("error: {error}"),
            Exit::Rejected(why) | Exit::GaveUp(why) | Exit::Failed(why) => {
                eprintln!("error: {why}")
            }
            Exit::Interrupted => eprintln!("error: interrupted before ilert confirmed"),
        }
        ExitCode::from(self.code())
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Event(args) => event::run(&cli.global, args).await,
        Command::Heartbeat(args) => heartbeat::run(&cli.global, args).await,
        Command::Daemon(args) => daemon::run(&cli.global, &args).await,
        Command::Queue(args) => queue::run(&cli.global, args).await,
        Command::Map(args) => offline::map::run(&cli.global, args),
        Command::Check(args) => offline::check::run(&cli.global, args),
        Command::Produce(args) => produce::run(*args).await,
        Command::Replay(args) => replay::run(*args).await,
    }
}
