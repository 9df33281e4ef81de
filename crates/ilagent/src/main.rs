//! The `ilagent` binary: parse the command line, set up logging, run the command.
//! Everything else lives in the library.

use std::process::ExitCode;

use ilagent::cli::Cli;
use ilagent::commands::{self, Exit};

fn main() -> ExitCode {
    one_malloc_arena();
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

/// glibc gives each thread that allocates an arena of its own (up to eight per core), and
/// memory freed in one arena is not reused by the others: with the runtime's workers,
/// librdkafka's threads and the SQLite thread, that kept about 4 MB more resident in the
/// Kafka benchmarks (45 MB instead of 49 MB peak in `kafka-0ms`) for no measurable gain in
/// throughput, since the agent's allocation rate is far below what one arena serves.
/// (mimalloc was tried too: 61 MB.) glibc's own `MALLOC_ARENA_MAX`, when set, wins: an
/// operator may trade memory for less lock contention between threads. Must run before any
/// other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread exists, and a refusal (return value 0) leaves glibc's defaults in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
