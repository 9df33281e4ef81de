//! What routing and mapping one message costs, without any I/O: the flag mapping (`-e`
//! and the default field names) against a configured route with jq expressions (the
//! route of `scripts/bench`'s `kafka-0ms-routes`), on the payloads `scripts/bench` sends.
//! Where `scripts/bench` shows a routed backlog slower than a flag-mapped one, this says
//! how much of it is the mapping itself, on one core and free of broker and network noise.
//!
//!   cargo bench -p ilagent --bench route_and_map          # every case
//!   cargo bench -p ilagent --bench route_and_map -- route # the cases whose name has "route"
//!
//! Prints nanoseconds per message for each case over several rounds (best, median and
//! worst). In the daemon a message that waits behind its key is mapped twice, whatever
//! maps it (at intake and again when its turn comes: only its payload waits): the `as the
//! Kafka source does` rows count that.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bench::scenario::kafka::{KAFKA_0MS, ROUTE};

use ilagent::config::ConfigFile;
use ilagent::config::Topics;
use ilagent::mapping::MappingConfig;
use ilagent::message::{Message, Metadata, SourceKind};
use ilagent::pipeline::MessageRouter;
use ilagent::routes::RouteTable;
use ilagent::sources::route::{Routes, TopicSyntax};

/// The agent's allocator (main.rs), so that allocations cost here what they cost there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A case: its name, its messages and what it does with each.
type Case<'a> = (&'a str, &'a [Message], fn(&MessageRouter, &Message));

const MESSAGES: usize = 50_000;
const ROUNDS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let path = scratch.path().join("bench.toml");
    std::fs::write(&path, ROUTE.replace("TOPIC", "routed"))?;
    let file = ConfigFile::read(&path)?;
    let mapping = Arc::new(MappingConfig::default());
    let table = Arc::new(RouteTable::of_file(&file, &mapping)?);
    let topics = Topics {
        events: vec!["flags".into()],
        heartbeats: Vec::new(),
        policies: Vec::new(),
        routed: table.topics_for(SourceKind::Kafka),
    };
    let router = MessageRouter::by_topic(Routes::new(&topics, TopicSyntax::Kafka), mapping)
        .with_routes(table);

    let flags = messages("flags");
    let routed = messages("routed");
    let cases: [Case; 4] = [
        ("flag mapping, once", &flags, |r, m| {
            black_box(r.action_for(m));
        }),
        ("route, once", &routed, |r, m| {
            black_box(r.action_for(m));
        }),
        ("flag mapping, as the Kafka source does", &flags, |r, m| {
            black_box(r.action_for(m));
            black_box(r.action_for(m));
        }),
        ("route, as the Kafka source does", &routed, |r, m| {
            black_box(r.action_for(m));
            black_box(r.action_for(m));
        }),
    ];
    // Cargo passes `--bench`; any other argument picks cases by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    println!(
        "{MESSAGES} messages per round, {ROUNDS} rounds: ns per message (best / median / worst)"
    );
    for (name, messages, run) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let mut rounds: Vec<f64> = (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                for message in messages {
                    run(&router, message);
                }
                started.elapsed().as_nanos() as f64 / messages.len() as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "{name:<42} {:>7.0} {:>7.0} {:>7.0}",
            rounds[0],
            rounds[ROUNDS / 2],
            rounds[ROUNDS - 1]
        );
    }
    Ok(())
}

/// `kafka-0ms`'s events on `topic`, spread over its three partitions as the producer's
/// key hash would.
fn messages(topic: &str) -> Vec<Message> {
    let stream = KAFKA_0MS.stream;
    (0..MESSAGES)
        .map(|id| {
            let (key, payload) = stream.event(id);
            let mut meta = Metadata::new(SourceKind::Kafka, topic);
            meta.partition = Some((id % stream.keys % 3) as i32);
            meta.offset = Some(id as i64);
            meta.key = Some(key);
            Message { payload, meta }
        })
        .collect()
}
