//! How big a chaos run is. `small` keeps the whole suite within a few minutes for CI;
//! `large` is the default of `scripts/chaos` and the size of the README's figures.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub name: &'static str,
    /// Events per Kafka run.
    pub kafka_events: usize,
    /// Events per MQTT or proxy run.
    pub other_events: usize,
    /// Events per second the feeds send (Kafka, others).
    pub kafka_rate: usize,
    pub other_rate: usize,
    /// SIGKILLs per kill-loop run.
    pub kills: usize,
    /// How long ilert (or a broker) stays away in an outage run.
    pub outage: Duration,
    /// Messages of the malformed corpus sent per source (cycling through the kinds).
    pub malformed: usize,
}

pub const SMALL: Size = Size {
    name: "small",
    kafka_events: 1_500,
    other_events: 1_000,
    kafka_rate: 400,
    other_rate: 250,
    kills: 3,
    outage: Duration::from_secs(4),
    malformed: 60,
};

pub const LARGE: Size = Size {
    name: "large",
    kafka_events: 50_000,
    other_events: 20_000,
    kafka_rate: 1_000,
    // Mosquitto queues at most 1,000 messages (its default `max_queued_messages`) for a
    // client that is away, and the agent is away about two seconds per SIGKILL: at 500/s
    // the broker drops messages (seen: "Outgoing messages are being dropped"). 200/s keeps
    // a restart within the stock broker's queue.
    other_rate: 200,
    kills: 20,
    outage: Duration::from_secs(60),
    malformed: 2_000,
};

impl Size {
    pub fn parse(name: &str) -> Option<Size> {
        match name {
            "small" => Some(SMALL),
            "large" => Some(LARGE),
            _ => None,
        }
    }

    /// How long a feed of `events` at `rate` takes.
    pub fn feed_duration(events: usize, rate: usize) -> Duration {
        Duration::from_secs_f64(events as f64 / rate.max(1) as f64)
    }
}
