//! `ilagent-chaos`: runs the fault suite against an agent binary and prints one figure line
//! per (source, fault); exits 1 if any run lost an event, broke a key's order, crashed the
//! agent or failed to set a malformed message aside. `scripts/chaos` builds and runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use chaos::run::{Ctx, plan, run};
use chaos::size::Size;
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "ilagent's fault suite: SIGKILL loops, ilert outages, broker restarts, malformed corpora, rebalances"
)]
struct Args {
    /// The agent binary (a release build).
    #[arg(long)]
    agent: PathBuf,
    /// `small` (a few minutes, what CI runs) or `large` (the README's figures).
    #[arg(long, default_value = "large")]
    size: String,
    /// Only runs whose "source fault" name contains this (e.g. `kafka`, `kill-loop`,
    /// `mqtt-direct broker`).
    #[arg(long)]
    only: Vec<String>,
    /// Also write every outcome as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(size) = Size::parse(&args.size) else {
        eprintln!("ilagent-chaos: --size {:?}: give small or large", args.size);
        return ExitCode::from(2);
    };
    let ctx = Ctx {
        agent: args.agent,
        size,
    };
    let selected: Vec<_> = plan()
        .into_iter()
        .filter(|(kind, fault)| {
            let name = format!("{} {}", kind.name(), fault.name());
            args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    eprintln!(
        "ilagent-chaos: {} runs at size {}",
        selected.len(),
        size.name
    );
    let mut outcomes = Vec::new();
    for (kind, fault) in selected {
        eprintln!("== {} {}", kind.name(), fault.name());
        let outcome = run(&ctx, kind, fault).await;
        println!("{outcome}");
        for note in &outcome.notes {
            eprintln!("   {note}");
        }
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if let Some(path) = args.json
        && let Err(error) = std::fs::write(
            &path,
            serde_json::to_string_pretty(&outcomes).unwrap_or_default(),
        )
    {
        eprintln!("ilagent-chaos: cannot write {}: {error}", path.display());
    }
    println!(
        "chaos: {} runs, {} failed, {} events sent, {} missing, {} duplicates",
        outcomes.len(),
        failed,
        outcomes.iter().map(|o| o.sent).sum::<usize>(),
        outcomes.iter().map(|o| o.missing).sum::<usize>(),
        outcomes.iter().map(|o| o.duplicates).sum::<usize>()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
