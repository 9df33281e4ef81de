//! `ilagent-bench`: runs the benchmark scenarios against the release build of the agent and
//! prints one row per scenario (and writes them as JSON). Exits non-zero if any message is
//! missing. Run it through `scripts/bench`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use bench::report::print_table;
use bench::scenario::KAFKA_SCENARIOS;

#[derive(Parser)]
#[command(about = "Measure ilagent's throughput, latency and memory against the ilert stand-in.")]
struct Args {
    /// Scenarios to run (repeatable); all when none is given.
    #[arg(long)]
    scenario: Vec<String>,
    /// The agent binary (release build).
    #[arg(long, default_value = "target/release/ilagent")]
    agent: PathBuf,
    /// Where to write the rows as JSON.
    #[arg(long, default_value = "bench-results/latest.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for scenario in KAFKA_SCENARIOS {
        if args.scenario.is_empty() || args.scenario.iter().any(|s| s == scenario.name) {
            rows.push(scenario.run(&args.agent).await?);
        }
    }
    print_table(&rows);
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&rows)?)?;
    let missing: usize = rows.iter().map(|r| r.missing).sum();
    if missing > 0 {
        anyhow::bail!("{missing} message(s) missing");
    }
    Ok(())
}
