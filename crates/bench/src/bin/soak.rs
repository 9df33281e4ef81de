//! `ilagent-soak`: streams steady traffic through every source of two release agents for
//! a given time, samples their RSS, open file descriptors and SQLite file size, and fails
//! if a message is lost or a series grows without bound (a fitted slope after the
//! warm-up). Exists because the benchmarks are too short to show a slow leak. Run it
//! through `scripts/soak DURATION`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use bench::soak::traffic::Shape;
use bench::soak::{Config, run};

#[derive(Parser)]
#[command(about = "Soak ilagent: steady traffic through every source, sampled for growth.")]
struct Args {
    /// How long to send: `90s`, `60m`, `1h`, `1h30m`.
    #[arg(value_parser = parse_duration)]
    duration: Duration,
    /// Time between samples.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    interval: Duration,
    /// Messages per second per source (4 sources).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Alert keys per source.
    #[arg(long, default_value_t = 300)]
    keys: u64,
    /// Integration keys per source (each under ilert's 50 a minute at the default rate).
    #[arg(long, default_value_t = 100)]
    integration_keys: u64,
    /// Latency the ilert stand-in adds to every answer, in ms.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// The part of the run left out of the fit (the warm-up).
    #[arg(long, default_value_t = 0.2)]
    warmup_fraction: f64,
    /// How long the agents get to deliver the rest once the senders stop.
    #[arg(long, value_parser = parse_duration, default_value = "3m")]
    drain_timeout: Duration,
    /// The agent binary (release build).
    #[arg(long, default_value = "target/release/ilagent")]
    agent: PathBuf,
    /// Also write the samples and the verdict as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `90s`, `60m`, `1h`, `1h30m`, `500ms`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let (mut total, mut rest) = (Duration::ZERO, text);
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: expected a number before each unit"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit] {
            "h" => Duration::from_secs(number * 3600),
            "m" => Duration::from_secs(number * 60),
            "s" => Duration::from_secs(number),
            "ms" => Duration::from_millis(number),
            other => return Err(format!("{text:?}: unknown unit {other:?} (h, m, s, ms)")),
        };
        rest = &rest[unit..];
    }
    if total.is_zero() {
        return Err(format!("{text:?}: a duration above zero is needed"));
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = Config {
        agent: args.agent,
        duration: args.duration,
        interval: args.interval,
        shape: Shape {
            rate: args.rate,
            keys: args.keys,
            integration_keys: args.integration_keys,
        },
        latency_ms: args.latency_ms,
        warmup_fraction: args.warmup_fraction.clamp(0.0, 0.9),
        drain_timeout: args.drain_timeout,
    };
    let outcome = run(&config).await?;
    outcome.print();
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&outcome)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("soak: results written to {}", path.display());
    }
    if !outcome.passed() {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60m"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
