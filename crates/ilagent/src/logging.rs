//! Log setup: `-v` picks the level, `RUST_LOG` overrides it, `--log_format json` makes
//! every line a JSON object for log shippers. Logs go to stderr; stdout is for results.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The filter for a `-v` count: the agent's own lines get the chosen level, libraries
/// stay one step quieter until the most verbose setting.
pub fn filter_for(verbosity: u8) -> &'static str {
    match verbosity {
        0 | 1 => "warn",
        2 => "warn,ilagent=info",
        3 => "info,ilagent=debug",
        _ => "debug,ilagent=trace",
    }
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(verbosity: u8, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in files and pipes they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // try_init: a second call (tests) keeps the first subscriber instead of failing.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
