//! The `ilagent` binary: parse the command line, set up logging, run the command.
//! Everything else lives in the library.

use std::process::ExitCode;

use ilagent::cli::Cli;
use ilagent::commands::{self, Exit};

fn main() -> ExitCode {
    let (cli, ignored) = Cli::parse_from_env();
    ilagent::logging::init(cli.global.verbose, cli.global.log_format);
    for variable in ignored {
        tracing::debug!(
            variable,
            "ignored: it holds a Kubernetes service link, not a port"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return Exit::Failed(format!("cannot start the async runtime: {error}")).report();
        }
    };
    runtime.block_on(commands::run(cli)).report()
}
