//! A full disk behaves like a full queue: with the SQLite file on a small tmpfs, the proxy
//! answers 503 with `Retry-After` and the MQTT buffer stops acknowledging, also while
//! another file takes every last byte (then SQLite's own writes fail with "disk full");
//! the agent stays up, the file stays intact, and once there is space again everything
//! accepted is delivered and new messages are taken.
//!
//! The tests mount a tmpfs, which needs root (as CI runs).

mod common;
mod http_support;
mod mqtt_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Agent, eventually, unique};
use http_support::{
    assert_each_once_in_order, client, event, post_with_retry_after as post, start_proxy,
    wait_for_events,
};
use ilert_standin::{Behaviour, StandIn};
use mqtt_support::{
    agent_args, assert_all_arrive_in_order, keyed_event, publish, queue_stat, start_agent,
    wait_for_stat, wait_subscribed,
};
use serde_json::{Value, json};
use testkit::{Mosquitto, MosquittoConfig, free_port};

const WAIT: Duration = Duration::from_secs(120);
/// The agent keeps 8 MiB of the disk for draining; this leaves it about as much again.
const DISK: &str = "16m";
const MIB: usize = 1 << 20;
const PAD: usize = 96 << 10;
const FILLED: &str = "new messages are refused";

/// A tmpfs of [`DISK`] mounted under a temp dir, unmounted when dropped.
struct Tmpfs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        Tmpfs::mount_of(DISK)
    }

    fn mount_of(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "this test mounts a {size} tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { mount, _dir: dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mount.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

/// Writes a file until the disk is full: every last byte is taken.
fn fill_disk(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
    let _ = file.sync_all();
}

fn integrity(db: &Path) -> String {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// ilert does not answer: every attempt times out (after `--request_timeout`), so the
/// rows stay and few attempts eat into the per-key rate limit before ilert is back.
fn unresponsive() -> Behaviour {
    Behaviour {
        latency_ms: 600_000,
        ..Behaviour::default()
    }
}

fn alive(agent: &mut Agent) -> bool {
    matches!(agent.child.try_wait(), Ok(None))
}

fn big_event(key: usize, seq: usize) -> Value {
    let mut body = event(key, seq);
    // An integration key per alert key: ilert's budget of 50 a minute is per key.
    body["integrationKey"] = json!(format!("il1api-proxy-{key}"));
    body["details"] = json!("x".repeat(PAD));
    body
}

#[tokio::test]
async fn the_proxy_on_a_full_disk_answers_503_stays_up_and_delivers_every_accepted_event() {
    const KEYS: usize = 3;
    let disk = Tmpfs::mount();
    let db = disk.path("proxy.db3");
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(unresponsive());
    let port = free_port();
    let mut agent = start_proxy(&stand_in.url(), &db, port, &[]);
    http_support::wait_up(&agent, port).await;
    let client = client();

    let mut accepted = 0;
    let (status, retry_after, body) = loop {
        let (status, retry_after, body) =
            post(&client, port, &big_event(accepted % KEYS, accepted / KEYS)).await;
        if status != 202 {
            break (status, retry_after, body);
        }
        accepted += 1;
        assert!(
            accepted < 400,
            "the disk never filled; log:\n{}",
            agent.log()
        );
    };
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("QUEUE_FULL")),
        "{body}"
    );
    assert!(retry_after.is_some());
    assert!(accepted >= 10, "only {accepted} events fit");

    // Someone else takes the rest of the disk: SQLite's own writes (the failed attempts
    // recorded in the rows) now fail with "disk full". Nothing is accepted, nothing
    // crashes.
    let filler = disk.path("filler");
    fill_disk(&filler);
    for _ in 0..3 {
        let (status, _, body) = post(&client, port, &big_event(0, 9999)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("QUEUE_FULL")),
            "{body}"
        );
    }
    // A while for the worker's writes to meet the full disk.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(alive(&mut agent), "{}", agent.log());
    assert_eq!(queue_stat(&db, "queued").await, accepted as u64);

    // Space returns and ilert is back: everything accepted arrives, and new events are
    // accepted again.
    std::fs::remove_file(&filler).unwrap();
    stand_in.set_behaviour(Behaviour::default());
    assert!(
        wait_for_events(&stand_in, accepted, WAIT).await,
        "{} of {accepted} arrived; log:\n{}",
        stand_in.events().len(),
        agent.log()
    );
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);
    let mut total = accepted;
    while total % KEYS != 0 || total == accepted {
        let (status, _, body) = post(&client, port, &big_event(total % KEYS, total / KEYS)).await;
        assert_eq!(status, 202, "{body}");
        total += 1;
    }
    assert!(wait_for_events(&stand_in, total, WAIT).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = stand_in.events();
    assert_eq!(events.len(), total, "each accepted event once");
    assert_each_once_in_order(&events, KEYS, total / KEYS, &agent.log());

    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches(FILLED).count(), 1, "{log}");
    assert_eq!(integrity(&db), "ok");
}

fn big_message(key: usize, seq: usize) -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&keyed_event(&format!("il1api-disk-{key}"), key, seq)).unwrap();
    body["details"] = json!("x".repeat(PAD));
    body.to_string().into_bytes()
}

#[tokio::test]
async fn the_mqtt_buffer_on_a_full_disk_stops_acknowledging_and_loses_nothing() {
    const KEYS: usize = 5;
    const PER_KEY: usize = 21;
    let disk = Tmpfs::mount();
    let db = disk.path("buffer.db3");
    let broker = Mosquitto::start(MosquittoConfig::default()).unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(unresponsive());
    let topic = unique("events");
    let mut args = agent_args(broker.port(), &unique("agent"), &db);
    args.extend(["-e", &topic, "--mqtt_buffer"].map(str::to_string));
    let mut agent = start_agent(&stand_in, &args, &[]);
    wait_subscribed(&agent).await;

    // About 10 MiB for a disk with about 8 MiB to give.
    let messages: Vec<(String, Vec<u8>)> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |key| (seq, key)))
        .map(|(seq, key)| (topic.clone(), big_message(key, seq)))
        .collect();
    publish(broker.port(), &messages).await;
    assert!(
        eventually(WAIT, || agent.full_log().contains(FILLED)).await,
        "{}",
        agent.log()
    );
    // And then every last byte is taken by someone else.
    let filler = disk.path("filler");
    fill_disk(&filler);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(alive(&mut agent), "{}", agent.log());
    assert!(queue_stat(&db, "queued").await < messages.len() as u64);

    std::fs::remove_file(&filler).unwrap();
    stand_in.set_behaviour(Behaviour::default());
    assert_all_arrive_in_order(&stand_in, &agent, KEYS, PER_KEY).await;
    assert!(wait_for_stat(&db, "queued", |n| n == 0).await);

    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(integrity(&db), "ok");
}

/// A queue row of `bytes` payload.
fn row(bytes: usize) -> ilagent::queue::NewRow {
    ilagent::queue::NewRow {
        source: ilagent::message::SourceKind::Http,
        topic: "/api/events".into(),
        payload: vec![b'x'; bytes],
        meta: ilagent::queue::StoredMeta::default(),
        order_key: None,
        created_at_ms: ilagent::queue::now_ms(),
    }
}

#[test]
fn a_write_that_runs_out_of_disk_rolls_back_whole_and_the_file_recovers_once_space_returns() {
    use ilagent::queue::{Limits, QueueError, Store};
    let disk = Tmpfs::mount_of("32m");
    let db = disk.path("store.db3");
    let mut store = Store::open_with(&db, Limits::UNLIMITED).unwrap();
    // 12 MiB of rows, delivered: free pages in the file, which new rows may reuse, so the
    // agent's own check lets the next write through...
    let ids: Vec<i64> = (0..12)
        .flat_map(|_| store.insert(&[row(MIB)]).unwrap())
        .collect();
    let checkpoint = |db: &Path| {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap()
    };
    checkpoint(&db);
    store.delete_many(&ids).unwrap();
    checkpoint(&db);
    // ...but its WAL needs disk, and another file has taken all of it.
    let filler = disk.path("filler");
    fill_disk(&filler);
    let error = store.insert(&[row(MIB), row(MIB)]).unwrap_err();
    assert!(matches!(error, QueueError::Full(_)), "{error}");
    assert!(error.to_string().contains("disk is full"), "{error}");
    assert_eq!(store.stats().unwrap().queued, 0, "nothing half-way");
    assert_eq!(integrity(&db), "ok");

    std::fs::remove_file(&filler).unwrap();
    store.insert(&[row(MIB), row(MIB)]).unwrap();
    assert_eq!(store.stats().unwrap().queued, 2);
    drop(store);
    assert_eq!(integrity(&db), "ok");
}
