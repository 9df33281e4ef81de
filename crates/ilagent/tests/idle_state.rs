//! Idle state is pruned: the agent's memory follows what is pending and what is inside a
//! rate window, never how many distinct keys it has ever seen. A producer sending a fresh
//! integration key with every message must not grow the agent without limit.
//!
//! The deliverer and the dispatcher run with ilert's default budgets against the stand-in
//! over real HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ilagent::action::{Action, Outcome};
use ilagent::delivery::rate_limit::MAX_TRACKED_KEYS;
use ilagent::delivery::{Budgets, Deliverer, RetryPolicy};
use ilagent::ilert::{ClientSettings, Event, EventType, IlertClient};
use ilagent::message::{Message, Metadata, SourceKind};
use ilagent::pipeline::{Dispatcher, Job, Settle};
use ilagent::secret::Secret;
use ilert_standin::StandIn;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Counts delivered messages; anything else fails the test.
#[derive(Clone, Default)]
struct Counter {
    delivered: Arc<AtomicUsize>,
    other: Arc<AtomicUsize>,
}

impl Settle for Counter {
    type Ticket = ();

    async fn settle(&self, _job: Job<()>, outcome: Outcome) {
        match outcome {
            Outcome::Delivered { .. } => self.delivered.fetch_add(1, Ordering::Relaxed),
            _ => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn deliverer(stand_in: &StandIn) -> Deliverer {
    let url = reqwest::Url::parse(&stand_in.url()).unwrap();
    let client = IlertClient::new(&ClientSettings {
        api_url: url.clone(),
        beat_url: url,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
    })
    .unwrap();
    Deliverer::new(client, Budgets::default(), RetryPolicy::default(), None)
}

fn alert_for(integration_key: &str) -> Action {
    let mut event = Event::new(Secret::new(integration_key), EventType::Alert);
    event.summary = Some("disk full".into());
    Action::Event(Box::new(event))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_distinct_integration_keys_leave_no_state_once_delivered() {
    const KEYS: usize = 100_000;
    let stand_in = StandIn::start().await.unwrap();
    let counter = Counter::default();
    let deliverer = deliverer(&stand_in);
    // The production window for the default 256 deliveries in flight.
    let dispatcher = Dispatcher::new(
        deliverer.clone(),
        counter.clone(),
        256,
        CancellationToken::new(),
    );

    for n in 0..KEYS {
        let slot = dispatcher.reserve().await.expect("the window is open");
        dispatcher.submit(
            slot,
            Job {
                ticket: (),
                message: Message {
                    payload: Vec::new(),
                    meta: Metadata::new(SourceKind::Kafka, "events"),
                },
                action: alert_for(&format!("il1key{n:06}")),
            },
        );
    }
    tokio::time::timeout(Duration::from_secs(300), dispatcher.drained())
        .await
        .expect("every message is settled");

    assert_eq!(counter.delivered.load(Ordering::Relaxed), KEYS);
    assert_eq!(counter.other.load(Ordering::Relaxed), 0);
    assert_eq!(stand_in.requests().len(), KEYS, "one request per message");
    assert_eq!(
        dispatcher.active_keys(),
        0,
        "a key whose messages are settled holds no queue and no task"
    );
    // Inside the minute, the keys' requests still count against ilert's window...
    deliverer.prune_idle(Instant::now());
    let tracked = deliverer.tracked_keys();
    assert!(tracked > 0, "requests inside the window are remembered");
    assert!(
        tracked <= MAX_TRACKED_KEYS,
        "at most {MAX_TRACKED_KEYS} keys are remembered, not one per key ever seen: {tracked}"
    );
    // ...and once the window has passed with nothing new, nothing is left of them.
    deliverer.prune_idle(Instant::now() + Duration::from_secs(62));
    assert_eq!(
        deliverer.tracked_keys(),
        0,
        "no rate-limit state is left for keys idle for a window"
    );
}
