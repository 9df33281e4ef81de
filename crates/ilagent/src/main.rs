//! The `ilagent` binary: parse the command line, set up logging, run the command.
//! Everything else lives in the library.

use std::process::ExitCode;

use ilagent::cli::{Cli, Command};
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
    if matches!(cli.command, Command::Daemon(_)) {
        spawn_allocator_gauges();
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

/// jemalloc instead of glibc's allocator, for every allocation in the process (librdkafka's,
/// SQLite's and OpenSSL's, which librdkafka uses, too). Measured in `scripts/bench` (3 runs each): glibc with one
/// arena (chosen for memory) serialised the runtime's workers and librdkafka's threads on its
/// lock (a message allocated on the poll thread is freed on a worker), so `kafka-0ms` ran at
/// 20,000-23,000 msg/s for 2.4 s of CPU; jemalloc's per-thread caches take it to about
/// 35,000 for 1.5 s, at the same peak RSS.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation; `MALLOC_CONF` in the environment
/// overrides them. One arena (the per-thread caches take the contention away; more arenas
/// kept 1-2 MB more resident), and freed pages given back to the system at once instead of
/// after 10 s, so that resident memory follows what is in use.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a constant string that nothing writes.
unsafe impl Sync for MallocConf {}

#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0".as_ptr());

/// How often the allocator's figures are read.
const ALLOCATOR_GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes jemalloc's own figures every few seconds: the bytes the agent's objects take
/// (`ilagent_memory_allocated_bytes`) and the bytes the allocator keeps resident for them
/// (`ilagent_memory_resident_bytes`). A resident memory that grows while the allocated
/// bytes stay flat is the allocator's (fragmentation); one that grows with them is the
/// agent's. Here rather than in the library, which does not know the allocator. On a
/// thread of its own: reading the figures is a blocking call.
fn spawn_allocator_gauges() {
    use tikv_jemalloc_ctl::{epoch, stats};
    let spawned = std::thread::Builder::new()
        .name("allocator-gauges".into())
        .spawn(|| {
            loop {
                // The figures are a snapshot taken at each epoch.
                if epoch::advance().is_ok() {
                    if let Ok(bytes) = stats::allocated::read() {
                        metrics::gauge!("ilagent_memory_allocated_bytes").set(bytes as f64);
                    }
                    if let Ok(bytes) = stats::resident::read() {
                        metrics::gauge!("ilagent_memory_resident_bytes").set(bytes as f64);
                    }
                }
                std::thread::sleep(ALLOCATOR_GAUGES_EVERY);
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the allocator's gauges; the agent runs without them");
    }
}
