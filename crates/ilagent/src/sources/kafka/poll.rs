//! The poll thread: the only place that reads from librdkafka.
//!
//! It runs on its own OS thread because librdkafka's calls block (the rebalance callback
//! waits for in-flight messages to drain and commits synchronously), and blocking belongs
//! off the async runtime.
//!
//! Backpressure: when the in-flight window is full the thread holds the one message it
//! has and waits for a slot without polling, so librdkafka's own bounded prefetch queue
//! keeps filling and nothing is refetched. If the window stays full for longer than
//! [`PAUSE_AFTER`] (a key waiting out an outage), it pauses the partitions and polls
//! again, so the consumer keeps serving rebalances and never exceeds
//! `max.poll.interval.ms`. (Pausing at every full window would be simpler, but librdkafka
//! drops its prefetched messages on pause and refetches on resume, which costs a fetch
//! round trip each time the window fills: a tenfold loss of throughput.)
//!
//! While paused, the thread polls with messages still waiting for a slot, so a rebalance
//! can revoke and assign their partitions again before they are handed over. Each message
//! carries the generation of the assignment it was read in, and the ledger refuses it
//! once that assignment is gone (see [`super::ledger`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use tokio_util::sync::CancellationToken;

use super::KafkaTicket;
use super::context::{AgentContext, commit_stored};
use super::ledger::Ledgers;
use super::settle::KafkaSettler;
use crate::message::{Message, Metadata, SourceKind};
use crate::observe::events;
use crate::pipeline::{Dispatcher, Job, MessageRouter};

const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the window may stay full before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(5);
/// Commit stored offsets at least this often while messages settle.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// After the drain deadline, how long interrupted deliveries get to finish.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// What the poll thread needs; moved onto it.
pub struct PollLoop {
    pub consumer: Arc<BaseConsumer<AgentContext>>,
    pub ledgers: Arc<Ledgers>,
    pub dispatcher: Dispatcher<KafkaSettler>,
    /// Route and map.
    pub router: MessageRouter,
    /// Cancelled on SIGINT/SIGTERM: stop taking messages and drain.
    pub shutdown: CancellationToken,
    /// Cancelled by this loop when the drain deadline passes.
    pub abort: CancellationToken,
    pub shutdown_timeout: Duration,
    /// Commit once the commit points have moved over this many messages (the delivery
    /// concurrency).
    pub commit_every: usize,
}

impl PollLoop {
    pub fn run(self) {
        let mut waiting: VecDeque<(KafkaTicket, Message)> = VecDeque::new();
        let mut paused = false;
        let mut full_since: Option<Instant> = None;
        let mut committer = Committer::new(self.commit_every);
        let mut topics = TopicNames::default();
        while !self.shutdown.is_cancelled() {
            committer.maybe_commit(&self.consumer, &self.ledgers);
            while let Some((ticket, message)) = waiting.pop_front() {
                match self.dispatcher.try_reserve_for(message.payload.len()) {
                    Some(slot) => self.submit(slot, ticket, message),
                    None => {
                        waiting.push_front((ticket, message));
                        break;
                    }
                }
            }
            if waiting.is_empty() {
                full_since = None;
                if paused {
                    self.set_paused(false);
                    paused = false;
                }
            } else {
                let since = *full_since.get_or_insert_with(Instant::now);
                if since.elapsed() < PAUSE_AFTER {
                    // Wait for a slot without polling: librdkafka keeps its prefetch.
                    let size = waiting.front().map_or(0, |(_, m)| m.payload.len());
                    if let Some(slot) = self.dispatcher.reserve_blocking(size, POLL_TIMEOUT)
                        && let Some((ticket, message)) = waiting.pop_front()
                    {
                        self.submit(slot, ticket, message);
                    }
                    continue;
                }
                if !paused {
                    self.set_paused(true);
                    paused = true;
                }
            }
            match self.consumer.poll(POLL_TIMEOUT) {
                None => {}
                Some(Err(error)) => events::source_error(SourceKind::Kafka, &error),
                Some(Ok(record)) => {
                    waiting.push_back(convert(&record, &self.ledgers, &mut topics));
                    if paused {
                        // A rebalance may have assigned partitions after the pause: pause
                        // the whole assignment again, so the waiting list stays short.
                        self.set_paused(true);
                    }
                }
            }
        }
        self.drain();
    }

    /// Maps the message and hands it to the dispatcher, unless its partition was revoked
    /// while it waited, even if it was assigned again since (then its owner reads it
    /// again from the last commit; submitting it would settle an old offset into the new
    /// assignment).
    fn submit(&self, slot: crate::pipeline::Slot, mut ticket: KafkaTicket, message: Message) {
        let Some(revoked) = self
            .ledgers
            .take(&ticket.tp, ticket.generation, ticket.offset)
        else {
            return;
        };
        ticket.revoked = Some(revoked);
        events::received(&message.meta, self.router.topic_label(&message));
        let action = self.router.action_for(&message);
        self.dispatcher.submit(
            slot,
            Job {
                ticket,
                message,
                action,
            },
        );
    }

    fn set_paused(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) if pause => tracing::debug!("in-flight window full: fetching paused"),
            Ok(()) => tracing::debug!("in-flight window has room: fetching resumed"),
            Err(error) => events::source_error(SourceKind::Kafka, &error),
        }
    }

    /// Stops taking messages, lets in-flight ones finish until the deadline, commits what
    /// is settled and leaves the group.
    fn drain(self) {
        self.set_paused(true);
        // Deliveries waiting for a budget or a backoff stop now and stay uncommitted.
        self.dispatcher.stop_waiting();
        let PollLoop {
            consumer,
            ledgers,
            dispatcher,
            abort,
            shutdown_timeout,
            ..
        } = self;
        tracing::info!(in_flight = dispatcher.in_flight(), timeout = ?shutdown_timeout, "kafka source stopping: finishing in-flight messages");
        let deadline = Instant::now() + shutdown_timeout;
        // Keep polling so that heartbeats, commits and rebalances are served; whatever
        // arrives is not taken and stays uncommitted.
        while dispatcher.in_flight() > 0 && Instant::now() < deadline {
            let _ = consumer.poll(POLL_TIMEOUT);
        }
        if dispatcher.in_flight() > 0 {
            tracing::warn!(
                in_flight = dispatcher.in_flight(),
                "--shutdown_timeout passed: the remaining messages stay uncommitted and are delivered after the restart"
            );
            abort.cancel();
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        commit_stored(&consumer, assigned);
        // The delivery tasks hold the consumer through the settle step. Once they are gone,
        // dropping the last handle here closes the consumer on this thread (its close
        // blocks: final revoke, commit, leaving the group), never on the async runtime.
        drop(dispatcher);
        let grace = Instant::now() + ABORT_GRACE;
        while Arc::strong_count(&consumer) > 1 && Instant::now() < grace {
            let _ = consumer.poll(POLL_TIMEOUT);
        }
        drop(ledgers);
        drop(consumer);
        tracing::info!("kafka source stopped");
    }
}

/// A record's key kept once: as text in the metadata when it is UTF-8 (mappings read it as
/// `$key`), else as bytes in the ticket for the dead-letter copy ([`KafkaTicket::raw_key`]).
fn split_key(key: Option<&[u8]>) -> (Option<String>, Option<Box<[u8]>>) {
    match key.map(|k| (k, std::str::from_utf8(k))) {
        None => (None, None),
        Some((_, Ok(text))) => (Some(text.to_string()), None),
        Some((bytes, Err(_))) => (None, Some(Box::from(bytes))),
    }
}

/// The topics' names, one shared copy each: every message of a topic in the window points
/// at it (in its metadata and its ticket) instead of carrying two copies of its own. As
/// many as the consumer's subscription has topics.
#[derive(Default)]
struct TopicNames(HashSet<Arc<str>>);

impl TopicNames {
    fn shared(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

/// Commits stored offsets asynchronously once the commit points have moved over
/// `max_in_flight` messages (at most every 100 ms), or a second has passed with anything
/// stored. After a crash, what is delivered again is what settled since the last commit
/// (about `max_in_flight` messages, more only at rates above ten times that per second)
/// plus what was delivered behind a still-unsettled message of its partition (with even
/// latencies, within the buffer).
struct Committer {
    stored: usize,
    threshold: usize,
    last: Instant,
}

/// The shortest gap between two commits triggered by volume.
const MIN_COMMIT_GAP: Duration = Duration::from_millis(100);

impl Committer {
    fn new(threshold: usize) -> Self {
        Committer {
            stored: 0,
            threshold: threshold.max(1),
            last: Instant::now(),
        }
    }

    fn maybe_commit(&mut self, consumer: &BaseConsumer<AgentContext>, ledgers: &Ledgers) {
        self.stored += ledgers.take_stored_count();
        let since = self.last.elapsed();
        let due = (self.stored >= self.threshold && since >= MIN_COMMIT_GAP)
            || (self.stored > 0 && since >= COMMIT_INTERVAL);
        if !due {
            return;
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Async) {
            events::kafka_commit(&Err(error.to_string()), 0);
        }
        self.stored = 0;
        self.last = Instant::now();
    }
}

/// The message and its ticket, stamped with the generation of its partition's assignment
/// now (the rebalance callbacks run inside `poll` on this thread, so what `poll` returns
/// belongs to the current assignment).
fn convert(
    record: &BorrowedMessage<'_>,
    ledgers: &Ledgers,
    topics: &mut TopicNames,
) -> (KafkaTicket, Message) {
    let topic = topics.shared(record.topic());
    let mut meta = Metadata::new(SourceKind::Kafka, Arc::clone(&topic));
    meta.partition = Some(record.partition());
    meta.offset = Some(record.offset());
    let (utf8_key, non_utf8_key) = split_key(record.key());
    meta.key = utf8_key;
    meta.timestamp = record
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    meta.received_at = SystemTime::now();
    if let Some(headers) = record.headers() {
        meta.headers = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                )
            })
            .collect();
    }
    let tp = (topic, record.partition());
    let ticket = KafkaTicket {
        generation: ledgers.generation(&tp),
        tp,
        offset: record.offset(),
        non_utf8_key,
        revoked: None,
        tombstone: record.payload().is_none(),
    };
    let message = Message {
        payload: record.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        meta,
    };
    (ticket, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dead-letter copy keeps the record's key byte for byte, UTF-8 or not, though a
    /// message in the window holds it only once.
    #[test]
    fn a_dead_letter_copy_keeps_the_records_key_byte_for_byte() {
        for key in [
            None,
            Some(&b""[..]),
            Some(b"db-1/disk"),
            Some(&[0xff, 0xfe, 0x00][..]),
        ] {
            let (utf8_key, non_utf8_key) = split_key(key);
            let mut meta = Metadata::new(SourceKind::Kafka, "events");
            meta.key = utf8_key;
            let message = Message {
                payload: vec![],
                meta,
            };
            let ticket = KafkaTicket {
                tp: ("events".into(), 0),
                generation: 1,
                offset: 0,
                non_utf8_key,
                revoked: None,
                tombstone: false,
            };
            assert_eq!(ticket.raw_key(&message), key, "{key:?}");
            assert_eq!(
                message.meta.key.is_some(),
                key.is_some_and(|k| std::str::from_utf8(k).is_ok()),
                "$key is the text of a UTF-8 key only: {key:?}"
            );
        }
    }
}
