//! `ilagent-produce`: sends JSON lines from stdin (or `--message`) to a Kafka topic, creating
//! the topic if needed. Used by `scripts/demo`; handy for trying the agent by hand.

use std::io::BufRead;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Produce JSON messages to a Kafka topic (one per stdin line, or --message).")]
struct Args {
    /// Bootstrap brokers, e.g. 127.0.0.1:9092.
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Partitions when the topic is created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Record key (keeps one alert key on one partition).
    #[arg(long)]
    key: Option<String>,
    /// A message to send instead of reading stdin (repeatable).
    #[arg(long)]
    message: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    bench::kafka::ensure_topic(&args.brokers, &args.topic, args.partitions).await?;
    let producer = bench::kafka::producer(&args.brokers)?;
    let lines: Vec<String> = if args.message.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        args.message
    };
    let records = lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (args.key.clone(), l.into_bytes()));
    let sent = bench::kafka::produce_all(&producer, &args.topic, records, 64).await?;
    eprintln!("produced {sent} message(s) to {}", args.topic);
    Ok(())
}
