//! `ilagent-bench`: runs the benchmark scenarios against the release build of the agent,
//! prints one row per scenario and the targets they meet or miss, and writes the same rows
//! as JSON. Exits non-zero if any message is missing or a scenario could not run to the
//! end; a missed performance target is reported, not fatal. Run it through `scripts/bench`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use clap::Parser;
use serde_json::json;

use bench::report::{Row, print_table, set_ratios};
use bench::scenario::{self, ALL};
use bench::targets::{evaluate, print_checks};

#[derive(Parser)]
#[command(about = "Measure ilagent's throughput, latency and memory against the ilert stand-in.")]
struct Args {
    /// Scenarios to run (repeatable): ceiling, ceiling-50ms, kafka-0ms, kafka-0ms-routes, kafka-0ms-dedupe, kafka-50ms,
    /// kafka-ratelimited, mqtt-qos1-50ms, mqtt-buffered-50ms, proxy-50clients,
    /// latency-steady, storm, backlog. All but backlog when none is given. The ceiling runs too unless --no-ceiling, since every row is a ratio to it.
    #[arg(long)]
    scenario: Vec<String>,
    /// Do not add the ceiling to a selection of scenarios.
    #[arg(long)]
    no_ceiling: bool,
    /// The agent binary (release build).
    #[arg(long, default_value = "target/release/ilagent")]
    agent: PathBuf,
    /// Also write each scenario's arrival log (one CSV line per event request) here.
    #[arg(long)]
    dump_dir: Option<PathBuf>,
    /// A flag appended to every agent's command line (repeatable; give flag and value as
    /// two), to try a setting, e.g. --agent-arg=--kafka_max_buffered --agent-arg=16384.
    #[arg(long, allow_hyphen_values = true)]
    agent_arg: Vec<String>,
    /// Where to write the rows as JSON.
    #[arg(long, default_value = "bench-results/latest.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    bench::scenario::set_extra_agent_args(args.agent_arg.clone());
    if let Some(dir) = &args.dump_dir {
        bench::report::set_dump_dir(dir.clone());
    }
    for name in &args.scenario {
        if !ALL.contains(&name.as_str()) {
            anyhow::bail!("unknown scenario {name:?}; known: {}", ALL.join(", "));
        }
    }
    let selected: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|name| {
            (args.scenario.is_empty() && !scenario::ON_REQUEST.contains(name))
                || args.scenario.iter().any(|s| s == name)
                || (*name == "ceiling" && !args.no_ceiling)
        })
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    for name in selected {
        eprintln!("== {name} (load average {})", load());
        let started = std::time::Instant::now();
        match scenario::run(name, &args.agent).await {
            Ok(row) => rows.push(row),
            Err(error) => {
                eprintln!("== {name} failed: {error:#}");
                rows.push(Row::failed(name, format!("{error:#}")));
            }
        }
        eprintln!("== {name} took {:.1} s", started.elapsed().as_secs_f64());
    }
    set_ratios(&mut rows);
    let checks = evaluate(&rows);
    print_table(&rows);
    print_checks(&checks);
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let report = json!({
        "commit": git_commit(),
        "finished_at_ms": bench::event::now_ms(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows,
        "targets": checks,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("rows written to {}", args.json.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.scenario.as_str())
        .collect();
    let missing: usize = rows.iter().map(|r| r.missing).sum();
    if missing > 0 || !failed.is_empty() {
        anyhow::bail!(
            "{missing} message(s) missing; scenarios that failed: {}",
            if failed.is_empty() {
                "none".to_string()
            } else {
                failed.join(", ")
            }
        );
    }
    Ok(())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `git describe`-like: the commit, with `-dirty` when the tree has changes.
fn git_commit() -> Option<String> {
    let output = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
