//! `ilert-standin`: runs the ilert stand-in as its own process, for benchmarks, scripts and
//! the README demo. Configure misbehaviour by flags at start or later through the
//! `/__standin/` control endpoints.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use ilert_standin::{Behaviour, RateLimit, StandIn};
use tokio::sync::broadcast::error::RecvError;

#[derive(Parser, Debug)]
#[command(
    name = "ilert-standin",
    version,
    about = "A local stand-in for the ilert API (events, heartbeats, escalation policies)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Delay added to every ilert request before answering.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Share of requests (0.0 to 1.0) answered 503 at random.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, value_name = "SHARE")]
    error_rate: f64,
    /// Requests allowed per key per window; more are answered 429 with Retry-After.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Rate-limit window length (ilert uses one minute).
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    rate_window_ms: u64,
    /// Require `Authorization: Bearer <KEY>` on escalation-policy endpoints.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Print one line per request to stdout.
    #[arg(long)]
    print: bool,
    /// No log output on stderr (the "listening" line and --print lines still appear).
    #[arg(short, long)]
    quiet: bool,
}

fn parse_share(value: &str) -> Result<f64, String> {
    let share: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err("must be between 0.0 and 1.0".to_owned())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.quiet {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
    }
    let behaviour = Behaviour {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        rate_limit: args.rate_limit.map(|per_key| RateLimit {
            per_key,
            window_ms: args.rate_window_ms,
        }),
        api_key: args.api_key,
        ..Behaviour::default()
    };
    let behaviour_note = format!(
        "latency_ms={} error_rate={} rate_limit={:?} api_key={}",
        behaviour.latency_ms,
        behaviour.error_rate,
        behaviour.rate_limit,
        if behaviour.api_key.is_some() {
            "required"
        } else {
            "any"
        },
    );
    let standin = StandIn::start_with(args.bind, behaviour)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
    if args.print {
        let mut feed = standin.subscribe();
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(request) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{}", request.summary_line());
                        let _ = out.flush();
                    }
                    Err(RecvError::Lagged(missed)) => {
                        eprintln!("ilert-standin: {missed} requests not printed (output too slow)");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    {
        // Always printed: with `--bind 127.0.0.1:0` it is how a script learns the port.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ilert-standin listening on {}", standin.url())?;
        out.flush()?;
    }
    tracing::info!(behaviour = %behaviour_note, "ready; stop with Ctrl-C");
    wait_for_signal().await;
    standin.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
