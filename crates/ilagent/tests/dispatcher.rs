//! The key-ordered dispatcher under storms, with the deliverer against the ilert stand-in
//! over real HTTP and a recording settle step: a key that waits for its rate budget holds
//! no delivery slot, heartbeat pings coalesce instead of queueing behind their budget,
//! messages waiting behind their key without their mapped event are mapped again, and
//! idle keys leave no state behind (a producer sending a fresh integration key with every
//! message must not grow the agent without limit).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ilagent::action::{Action, Outcome};
use ilagent::config::{ConfigFile, Topics};
use ilagent::delivery::rate_limit::MAX_TRACKED_KEYS;
use ilagent::delivery::{Budget, Budgets, Deliverer, RetryPolicy};
use ilagent::ilert::{ClientSettings, Event, EventType, IlertClient};
use ilagent::mapping::{MappingConfig, MessageKind};
use ilagent::message::{Message, Metadata, SourceKind};
use ilagent::pipeline::{Dispatcher, Job, Limits, MessageRouter, Settle};
use ilagent::routes::RouteTable;
use ilagent::secret::Secret;
use ilagent::sources::route::{Routes, TopicSyntax};
use ilert_standin::{Behaviour, RecordedRequest, RequestKind, Scripted, StandIn};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Records each settled message's ticket and outcome, in settle order.
#[derive(Clone, Default)]
struct Recorder {
    settled: Arc<Mutex<Vec<(String, Outcome)>>>,
}

impl Settle for Recorder {
    type Ticket = String;

    async fn settle(&self, job: Job<String>, outcome: Outcome) {
        self.settled.lock().unwrap().push((job.ticket, outcome));
    }
}

impl Recorder {
    fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.settled.lock().unwrap().clone()
    }

    async fn wait_for(&self, ticket: &str, timeout: Duration) -> Option<Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some((_, outcome)) = self.outcomes().into_iter().find(|(t, _)| t == ticket) {
                return Some(outcome);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

fn deliverer(stand_in: &StandIn, budgets: Budgets) -> Deliverer {
    let url = reqwest::Url::parse(&stand_in.url()).unwrap();
    let client = IlertClient::new(&ClientSettings {
        api_url: url.clone(),
        beat_url: url,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
    })
    .unwrap();
    Deliverer::new(client, budgets, RetryPolicy::default(), None)
}

fn dispatcher(
    deliverer: Deliverer,
    recorder: &Recorder,
    max_in_flight: usize,
) -> Dispatcher<Recorder> {
    Dispatcher::with_limits(
        deliverer,
        recorder.clone(),
        Limits {
            max_in_flight,
            max_buffered: 10_000,
            max_buffered_bytes: 16 * 1024 * 1024,
        },
        CancellationToken::new(),
    )
}

fn alert(integration_key: &str, alert_key: &str) -> Action {
    let mut event = Event::new(Secret::new(integration_key), EventType::Alert);
    event.summary = Some(format!("{alert_key} is down"));
    event.alert_key = Some(alert_key.to_string());
    Action::Event(Box::new(event))
}

fn submit(dispatcher: &Dispatcher<Recorder>, ticket: &str, action: Action) {
    let slot = dispatcher.try_reserve().expect("the window has room");
    dispatcher.submit(
        slot,
        Job {
            ticket: ticket.to_string(),
            message: Message {
                payload: Vec::new(),
                meta: Metadata::new(SourceKind::Kafka, "events"),
            },
            action,
        },
    );
}

/// Submits `message` with the action `router` makes of it, as a source does.
fn submit_mapped(
    dispatcher: &Dispatcher<Recorder>,
    router: &MessageRouter,
    ticket: &str,
    message: Message,
) {
    let action = router.action_for(&message);
    let slot = dispatcher.try_reserve().expect("the window has room");
    dispatcher.submit(
        slot,
        Job {
            ticket: ticket.to_string(),
            message,
            action,
        },
    );
}

#[tokio::test]
async fn alert_keys_waiting_for_their_integration_keys_budget_hold_no_delivery_slot() {
    let stand_in = StandIn::start().await.unwrap();
    // One request a minute per integration key, one request on the wire at a time: the
    // hot key's first alert goes out, its other three wait about a minute each.
    let budgets = Budgets {
        integration: Budget::per_minute(1),
        ..Budgets::default()
    };
    let recorder = Recorder::default();
    let dispatcher = dispatcher(deliverer(&stand_in, budgets), &recorder, 1);
    for host in 0..4 {
        submit(
            &dispatcher,
            &format!("hot-{host}"),
            alert("il1hot", &format!("host-{host}")),
        );
    }
    submit(&dispatcher, "quiet", alert("il1quiet", "db"));

    let quiet = recorder.wait_for("quiet", Duration::from_secs(20)).await;
    assert!(
        matches!(quiet, Some(Outcome::Delivered { .. })),
        "the quiet key is not held up by the hot key's waiting alert keys: {quiet:?}"
    );
    let sent: Vec<String> = stand_in
        .requests()
        .iter()
        .filter_map(|r| r.key.clone())
        .collect();
    assert_eq!(
        sent.iter().filter(|k| *k == "il1hot").count(),
        1,
        "the hot key stays inside its budget: {sent:?}"
    );
    assert_eq!(sent.iter().filter(|k| *k == "il1quiet").count(), 1);
}

#[tokio::test]
async fn pings_of_a_heartbeat_with_a_ping_in_flight_are_coalesced() {
    let stand_in = StandIn::start().await.unwrap();
    // The first ping takes two seconds to answer.
    stand_in.script([Scripted::Delay { ms: 2_000 }]);
    let recorder = Recorder::default();
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 16);
    for ping in 0..5 {
        submit(
            &dispatcher,
            &format!("ping-{ping}"),
            Action::Heartbeat(Secret::new("il1hbt-plc")),
        );
    }
    assert!(
        matches!(
            recorder.wait_for("ping-0", Duration::from_secs(20)).await,
            Some(Outcome::Delivered { .. })
        ),
        "{:?}",
        recorder.outcomes()
    );
    tokio::time::timeout(Duration::from_secs(10), dispatcher.drained())
        .await
        .expect("every ping settled");
    let outcomes = recorder.outcomes();
    let coalesced = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Coalesced { .. }))
        .count();
    assert_eq!(coalesced, 4, "{outcomes:?}");
    let pings = stand_in
        .requests()
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                RequestKind::HeartbeatPing | RequestKind::HeartbeatLegacy
            )
        })
        .count();
    assert_eq!(pings, 1, "ilert saw one ping");
}

#[tokio::test]
async fn pings_beyond_a_heartbeats_budget_are_coalesced_at_once_instead_of_waiting() {
    let stand_in = StandIn::start().await.unwrap();
    let recorder = Recorder::default();
    // ilert's default: five pings a minute per heartbeat key.
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 16);
    for ping in 0..8 {
        let ticket = format!("ping-{ping}");
        submit(
            &dispatcher,
            &ticket,
            Action::Heartbeat(Secret::new("il1hbt-pump")),
        );
        // One after the other, so none is coalesced for being in flight.
        let outcome = recorder.wait_for(&ticket, Duration::from_secs(10)).await;
        assert!(
            outcome.is_some(),
            "ping {ping} settled without waiting for the budget"
        );
    }
    let outcomes = recorder.outcomes();
    let delivered = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Delivered { .. }))
        .count();
    let coalesced = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Coalesced { .. }))
        .count();
    assert_eq!((delivered, coalesced), (5, 3), "{outcomes:?}");
}

#[tokio::test]
async fn after_shutdown_interrupts_a_keys_message_no_later_message_of_the_key_goes_out() {
    let stand_in = StandIn::start().await.unwrap();
    // The ALERT fails and ilert asks for 30 s; the RESOLVE of the same alert key waits.
    stand_in.script([Scripted::RetryAfterSeconds {
        status: 503,
        seconds: 30,
    }]);
    let recorder = Recorder::default();
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 16);
    submit(&dispatcher, "alert", alert("il1api-k", "pump-3"));
    let mut resolve = Event::new(Secret::new("il1api-k"), EventType::Resolve);
    resolve.alert_key = Some("pump-3".into());
    submit(&dispatcher, "resolve", Action::Event(Box::new(resolve)));
    assert!(
        eventually(|| stand_in.requests().len() == 1).await,
        "the ALERT was tried"
    );

    dispatcher.stop_waiting();
    tokio::time::timeout(Duration::from_secs(10), dispatcher.drained())
        .await
        .expect("both settled at once");
    let outcomes = recorder.outcomes();
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Interrupted { .. })),
        "both are left for the restart: {outcomes:?}"
    );
    assert_eq!(
        stand_in.requests().len(),
        1,
        "the RESOLVE did not overtake its ALERT"
    );
}

/// Settles like [`Recorder`], with a ticket that its source can revoke.
#[derive(Clone, Default)]
struct RevocableRecorder {
    settled: Arc<Mutex<Vec<(String, Outcome)>>>,
}

impl Settle for RevocableRecorder {
    type Ticket = (String, CancellationToken);

    async fn settle(&self, job: Job<(String, CancellationToken)>, outcome: Outcome) {
        self.settled.lock().unwrap().push((job.ticket.0, outcome));
    }

    fn revoked(&self, ticket: &(String, CancellationToken)) -> Option<CancellationToken> {
        Some(ticket.1.clone())
    }
}

#[tokio::test]
async fn a_revoked_message_stops_waiting_and_is_left_unsettled() {
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script([Scripted::RetryAfterSeconds {
        status: 503,
        seconds: 30,
    }]);
    let recorder = RevocableRecorder::default();
    let dispatcher = Dispatcher::new(
        deliverer(&stand_in, Budgets::default()),
        recorder.clone(),
        16,
        CancellationToken::new(),
    );
    let revoke = CancellationToken::new();
    let slot = dispatcher.try_reserve().unwrap();
    dispatcher.submit(
        slot,
        Job {
            ticket: ("m1".to_string(), revoke.clone()),
            message: Message {
                payload: Vec::new(),
                meta: Metadata::new(SourceKind::Kafka, "events"),
            },
            action: alert("il1api-k", "pump-3"),
        },
    );
    assert!(eventually(|| stand_in.requests().len() == 1).await);
    // The partition moved to another consumer: this one must not deliver it any more.
    revoke.cancel();
    tokio::time::timeout(Duration::from_secs(10), dispatcher.drained())
        .await
        .expect("settled at once");
    let settled = recorder.settled.lock().unwrap().clone();
    assert!(
        matches!(settled[..], [(_, Outcome::Interrupted { .. })]),
        "{settled:?}"
    );
    assert_eq!(stand_in.requests().len(), 1);
}

async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn messages_waiting_behind_their_key_are_mapped_again_and_delivered_as_mapped_in_order() {
    let stand_in = StandIn::start().await.unwrap();
    let recorder = Recorder::default();
    let router = MessageRouter::fixed(MessageKind::Event, Arc::new(MappingConfig::default()));
    // One delivery at a time: every message after the first waits behind its key, and
    // waits without its mapped event.
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 1)
        .remapping(router.clone());
    for seq in 0..20 {
        let payload = serde_json::json!({
            "integrationKey": "il1remap",
            "eventType": if seq == 19 { "RESOLVE" } else { "ALERT" },
            "summary": format!("pump 7 pressure {seq}"),
            "alertKey": "pump-7",
            "customDetails": {"seq": seq, "bar": 9.5},
        });
        let message = Message {
            payload: payload.to_string().into_bytes(),
            meta: Metadata::new(SourceKind::Kafka, "events"),
        };
        submit_mapped(&dispatcher, &router, &format!("m{seq}"), message);
    }
    assert!(
        recorder
            .wait_for("m19", Duration::from_secs(20))
            .await
            .is_some()
    );

    let events = stand_in.events();
    assert_eq!(events.len(), 20);
    for (seq, event) in events.iter().enumerate() {
        assert_eq!(
            event["summary"],
            format!("pump 7 pressure {seq}"),
            "in order"
        );
        assert_eq!(event["customDetails"]["seq"], seq, "{event}");
        assert_eq!(event["alertKey"], "pump-7");
    }
    assert_eq!(events[19]["eventType"], "RESOLVE");
    assert!(
        recorder
            .outcomes()
            .iter()
            .all(|(_, outcome)| matches!(outcome, Outcome::Delivered { .. }))
    );
}

/// The route of the test below: a condition, an event type from a value, a summary and
/// custom details that read the message's metadata.
const PLC_ROUTE: &str = r#"
[[route]]
name = "plc"
source = "kafka"
topics = ["plc"]
when = '.kind != "ACK"'
[route.fields]
integration_key = '.ik'
event_type = 'if .kind == "CLEARED" then "RESOLVE" else "ALERT" end'
summary = '"\(.machine): \(.text) (offset \($offset))"'
alert_key = '.machine'
custom_details = '{seq: .seq, partition: $partition}'
"#;

/// A configured route's messages also wait without their mapped event (it costs more
/// memory than the payload) and are mapped again by the route when their turn comes: what
/// ilert gets is what the route made of each message, with its own metadata, in order.
#[tokio::test]
async fn routed_messages_waiting_behind_their_key_are_mapped_again_by_their_route_in_order() {
    let stand_in = StandIn::start().await.unwrap();
    let recorder = Recorder::default();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("routes.toml");
    std::fs::write(&path, PLC_ROUTE).unwrap();
    let mapping = Arc::new(MappingConfig::default());
    let file = ConfigFile::read(&path).unwrap();
    let table = Arc::new(RouteTable::of_file(&file, &mapping).unwrap());
    let topics = Topics {
        events: Vec::new(),
        heartbeats: Vec::new(),
        policies: Vec::new(),
        routed: table.topics_for(SourceKind::Kafka),
    };
    let router = MessageRouter::by_topic(Routes::new(&topics, TopicSyntax::Kafka), mapping)
        .with_routes(table);
    // One delivery at a time: every message after the first waits behind its key.
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 1)
        .remapping(router.clone());
    for seq in 0..20_i64 {
        let payload = serde_json::json!({
            "ik": "il1route",
            "kind": if seq == 19 { "CLEARED" } else { "FAULT" },
            "machine": "press-3",
            "text": format!("jam {seq}"),
            "seq": seq,
        });
        let mut meta = Metadata::new(SourceKind::Kafka, "plc");
        meta.partition = Some(2);
        meta.offset = Some(100 + seq);
        let message = Message {
            payload: payload.to_string().into_bytes(),
            meta,
        };
        submit_mapped(&dispatcher, &router, &format!("m{seq}"), message);
    }
    assert!(
        recorder
            .wait_for("m19", Duration::from_secs(20))
            .await
            .is_some()
    );

    let events = stand_in.events();
    assert_eq!(events.len(), 20);
    for (seq, event) in events.iter().enumerate() {
        assert_eq!(
            event["summary"],
            format!("press-3: jam {seq} (offset {})", 100 + seq),
            "in order, mapped by the route"
        );
        assert_eq!(event["customDetails"]["seq"], seq, "{event}");
        assert_eq!(event["customDetails"]["partition"], 2, "{event}");
        assert_eq!(event["alertKey"], "press-3");
        assert_eq!(event["integrationKey"], "il1route");
    }
    assert_eq!(events[0]["eventType"], "ALERT");
    assert_eq!(events[19]["eventType"], "RESOLVE");
}

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
    let deliverer = deliverer(&stand_in, Budgets::default());
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

/// The most requests the stand-in had in service at once, when it answers each after
/// `latency` (a request is counted from its arrival until `latency` later, less a margin
/// for the answer's way back).
fn most_in_service(requests: &[RecordedRequest], latency: Duration) -> usize {
    let in_service_ms = latency.as_millis() as u64 - 5;
    let mut arrivals: Vec<u64> = requests.iter().map(|r| r.received_at_ms).collect();
    arrivals.sort_unstable();
    (0..arrivals.len())
        .map(|i| {
            let since = arrivals[i].saturating_sub(in_service_ms);
            arrivals[..=i].iter().filter(|&&t| t > since).count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn with_ilert_answering_steadily_requests_in_parallel_grow_from_16_to_every_ready_key() {
    const KEYS: usize = 100;
    const MESSAGES_PER_KEY: usize = 4;
    let latency = Duration::from_millis(200);
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: latency.as_millis() as u64,
        ..Behaviour::default()
    });
    let recorder = Recorder::default();
    // Production defaults: ilert's budgets, the Kafka ceiling of 128.
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 128);

    for message in 0..MESSAGES_PER_KEY {
        for key in 0..KEYS {
            let action = alert(&format!("il1api-{key}"), &format!("host-{key}"));
            submit(&dispatcher, &format!("{key}-{message}"), action);
        }
    }
    let requests = stand_in
        .wait_for_requests(KEYS * MESSAGES_PER_KEY, Duration::from_secs(60))
        .await;

    assert_eq!(requests.len(), KEYS * MESSAGES_PER_KEY);
    let before_the_first_answer: Vec<_> = requests
        .iter()
        .filter(|r| r.received_at_ms < requests[0].received_at_ms + 150)
        .cloned()
        .collect();
    assert_eq!(
        most_in_service(&before_the_first_answer, latency),
        16,
        "the limit starts at 16"
    );
    let most = most_in_service(&requests, latency);
    assert!(
        most >= KEYS - 5,
        "once answers came back steadily, every ready key had a request out: {most} of {KEYS} at most"
    );
}

#[tokio::test]
async fn with_ilert_failing_with_503_the_agent_backs_off_to_one_request_at_a_time_and_delivers_all_once_it_recovers()
 {
    const KEYS: usize = 64;
    let latency = Duration::from_millis(100);
    let stand_in = StandIn::start().await.unwrap();
    stand_in.set_behaviour(Behaviour {
        latency_ms: latency.as_millis() as u64,
        error_rate: 1.0,
        ..Behaviour::default()
    });
    let recorder = Recorder::default();
    let dispatcher = dispatcher(deliverer(&stand_in, Budgets::default()), &recorder, 128);

    for key in 0..KEYS {
        let action = alert(&format!("il1api-{key}"), &format!("host-{key}"));
        submit(&dispatcher, &key.to_string(), action);
    }
    let started = stand_in.wait_for_requests(1, Duration::from_secs(10)).await[0].received_at_ms;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late: Vec<_> = stand_in
        .requests()
        .into_iter()
        .filter(|r| r.received_at_ms >= started + 1_500)
        .collect();
    assert!(!late.is_empty(), "the keys kept retrying");
    assert!(late.iter().all(|r| r.status == 503));
    let most = most_in_service(&late, latency);
    assert!(
        most <= 2,
        "after a few failed answers, at most 2 requests at once, not {KEYS}: {most}"
    );

    stand_in.set_behaviour(Behaviour::default());
    assert!(
        eventually(|| recorder.outcomes().len() == KEYS).await,
        "every message is settled once ilert recovers"
    );
    assert!(
        recorder
            .outcomes()
            .iter()
            .all(|(_, outcome)| matches!(outcome, Outcome::Delivered { .. })),
        "and every one delivered: nothing is lost to the outage"
    );
}
