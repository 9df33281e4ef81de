//! Shared test equipment: the `ilagent` binary as a child process, and Kafka helpers
//! (topics, producing, reading back committed offsets and dead letters).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::process::{Child, Command};

/// Unique names per test, so tests never see each other's topics or groups.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running `ilagent` process; killed when dropped. Its stderr and stdout go to files
/// that failing assertions can show.
pub struct Agent {
    pub child: Child,
    log: PathBuf,
    stdout: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let stdout = dir.path().join("agent.stdout");
        let stdout_file = std::fs::File::create(&stdout).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ilagent"));
        // Its own working directory, so the default `-f ./ilagent.db3` is a file of its own
        // (daemons that open the file lock it for themselves).
        command
            .current_dir(dir.path())
            .args(args)
            .env_remove("RUST_LOG")
            .env("ILAGENT_BACKOFF_INITIAL", "50ms")
            .env("ILAGENT_BACKOFF_MAX", "500ms")
            .stdout(Stdio::from(stdout_file))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        Agent {
            child,
            log,
            stdout,
            _dir: dir,
        }
    }

    /// Everything the agent wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().map(|p| p as i32).unwrap_or(0)
    }

    pub fn signal(&self, signal: &str) {
        std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// SIGTERM, then the exit status (within 60 s).
    pub async fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        let code = match status {
            Ok(Ok(status)) => status.code(),
            _ => None,
        };
        (code, self.full_log())
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The flags every Kafka test agent gets: fast group joins on tansu, start from the
/// beginning of new topics.
pub fn kafka_args<'a>(bootstrap: &'a str, group: &'a str) -> Vec<&'a str> {
    vec![
        "daemon",
        "-vv",
        "--kafka_brokers",
        bootstrap,
        "--kafka_group_id",
        group,
        "--kafka_auto_offset_reset",
        "earliest",
        // Quick group joins on tansu, yet a session that survives a loaded CI machine.
        "--kafka_property",
        "session.timeout.ms=10000",
        "--kafka_property",
        "heartbeat.interval.ms=500",
        // A request to a broker that vanished mid-request is given up after 10 s, not 60.
        "--kafka_property",
        "socket.timeout.ms=10000",
        "--kafka_drain_timeout",
        "5s",
    ]
}

pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    payload: &[u8],
) {
    produce_with_headers(producer, topic, partition, key, payload, &[]).await;
}

pub async fn produce_with_headers(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(rdkafka::message::Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .payload(payload)
        .headers(owned);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The group's committed offsets for `partitions` of `topic` (-1001 when none).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => n,
                _ => -1001,
            },
        )
        .collect()
}

/// A record read back from a topic, for dead-letter assertions.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// A tombstone: the record has no value at all (not an empty one).
    pub tombstone: bool,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `count` records from the start of `topic` (all partitions), within `timeout`.
pub fn read_topic(bootstrap: &str, topic: &str, count: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < count && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                tombstone: m.payload().is_none(),
                headers,
            });
        }
    }
    records
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    condition()
}

/// One record for [`produce_all`]: an explicit partition (else the key decides), the key
/// and the payload.
pub type Outgoing = (Option<i32>, String, Vec<u8>);

/// Produces `records` to `topic` in order with all of them in flight at once (the local
/// queue is the only limit), then waits for every delivery report. Returns where each
/// record landed, `(partition, offset)`, in the order given.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[Outgoing],
) -> Vec<(i32, i64)> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let mut deliveries = Vec::with_capacity(records.len());
    for (partition, key, payload) in records {
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice());
            if let Some(partition) = partition {
                record = record.partition(*partition);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => panic!("producing to {topic} failed: {error}"),
            }
        }
    }
    let mut positions = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let delivered = delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        positions.push((delivered.partition, delivered.offset));
    }
    positions
}

/// Per partition `0..partitions`, one past the highest offset in `positions`: the offset
/// a group has committed once it has settled all of them (-1001, "none", for a partition
/// that got nothing).
pub fn end_offsets(positions: &[(i32, i64)], partitions: i32) -> Vec<i64> {
    (0..partitions)
        .map(|p| {
            positions
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap_or(-1001)
        })
        .collect()
}

/// Runs the binary once with `args` and `envs` (no `RUST_LOG` unless given); its exit code,
/// stdout and stderr. Fails the test if it runs longer than 60 s.
pub async fn run_ilagent(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ilagent"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ILERT_INTEGRATION_KEY")
        .env_remove("ILERT_API_KEY")
        .env("ILAGENT_BACKOFF_INITIAL", "50ms")
        .env("ILAGENT_BACKOFF_MAX", "200ms")
        .kill_on_drop(true);
    for (key, value) in envs {
        command.env(key, value);
    }
    let Ok(output) = tokio::time::timeout(Duration::from_secs(60), command.output()).await else {
        panic!("ilagent {args:?} did not finish within 60 s");
    };
    let output = output.expect("ilagent could not be run");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary once with `args`, writing `stdin` to its standard input; its exit code,
/// stdout and stderr. Fails the test if it runs longer than 60 s.
pub async fn run_ilagent_with_input(
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: &str,
) -> (Option<i32>, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_ilagent"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ILAGENT_KAFKA_BROKERS")
        .env_remove("ILAGENT_MQTT_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("ilagent could not be run");
    let mut input = child.stdin.take().expect("stdin is piped");
    let text = stdin.to_string();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(text.as_bytes()).await;
    });
    let Ok(output) = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await
    else {
        panic!("ilagent {args:?} did not finish within 60 s");
    };
    let _ = writer.await;
    let output = output.expect("ilagent could not be waited for");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `ilagent -f DB queue ARGS`; returns the exit code and stdout.
pub async fn queue_command(db: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ilagent"))
        .arg("-f")
        .arg(db)
        .arg("queue")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// One number from `ilagent queue status` (`queued`, `retrying`, `dead_letters`); an
/// unreadable status reads as `u64::MAX`, so it never passes for an empty queue.
pub async fn queue_stat(db: &std::path::Path, name: &str) -> u64 {
    let (_, out) = queue_command(db, &["status"]).await;
    out.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// Waits (up to 60 s) until `ilagent queue status` reports `name` satisfying `holds`.
pub async fn wait_for_stat(db: &std::path::Path, name: &str, holds: impl Fn(u64) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if holds(queue_stat(db, name).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Writes `text` as `ilagent.toml` in `dir` (a configuration file for `--config`).
pub fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("ilagent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the agent with `args` against `stand_in` (events and heartbeats), with
/// `extra_env` besides.
pub fn start_against(
    stand_in: &ilert_standin::StandIn,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Agent {
    let url = stand_in.url();
    let mut env = vec![
        ("ILERT_API_URL", url.as_str()),
        ("ILAGENT_ILERT_BEAT_URL", url.as_str()),
    ];
    env.extend_from_slice(extra_env);
    Agent::start(args, &env)
}
