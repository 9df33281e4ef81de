//! The soak: does the agent stay flat over hours of steady traffic? Benchmarks run for
//! seconds to minutes, so they cannot show a slow leak of memory, file descriptors or
//! SQLite pages; this runs every source at once for as long as asked, samples the agents
//! at a fixed interval and fits a slope to each series ([`fit`]).
//!
//! Set-up: tansu (3 partitions) and a Mosquitto of its own, the ilert stand-in in this
//! process (20 ms latency, ilert's 50-per-minute limit per integration key, one
//! integration key refused with 400), and two release agents as separate processes
//! ([`agents`]): `a` with Kafka (dead letters to a DLQ topic), MQTT direct and the HTTP
//! proxy, `b` with MQTT buffered; both ping an `-b` heartbeat. Each source gets a steady
//! stream ([`traffic`], [`senders`]) over a few hundred alert keys, malformed and refused
//! messages included. At the end the senders stop, the agents drain, and the run fails if
//! a valid message is missing at the stand-in, a dead letter is missing, an agent exited,
//! or a series grows ([`outcome`]).

pub mod agents;
pub mod fit;
pub mod outcome;
pub mod sample;
pub mod senders;
pub mod tally;
pub mod traffic;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RateLimit, StandIn};
use testkit::{Mosquitto, MosquittoConfig, Tansu};
use tokio::time::Instant;

use agents::Agent;
use outcome::Outcome;
use sample::Sample;
use senders::warmup_event;
use traffic::{Counters, REFUSED_KEY, Shape, Source};

const KAFKA_TOPIC: &str = "soak-events";
const DLQ_TOPIC: &str = "soak-dead-letters";
/// Agent a's MQTT topic is its Kafka topic (`-e` is shared); b's is its own.
const BUFFERED_TOPIC: &str = "soak-buffered";

pub struct Config {
    pub agent: PathBuf,
    pub duration: Duration,
    pub interval: Duration,
    pub shape: Shape,
    pub latency_ms: u64,
    /// The part of the run left out of the fit.
    pub warmup_fraction: f64,
    /// How long the agents get to deliver the rest once the senders stopped.
    pub drain_timeout: Duration,
}

/// Runs the soak; the outcome says whether it passed.
pub async fn run(config: &Config) -> Result<Outcome> {
    let tansu = Tansu::start().context("cannot start tansu (scripts/install-test-deps)")?;
    let bootstrap = tansu.bootstrap_servers();
    let broker = Mosquitto::start(MosquittoConfig {
        extra: "max_inflight_messages 20\nmax_queued_messages 100000\n".into(),
        ..MosquittoConfig::default()
    })
    .context("cannot start mosquitto (scripts/install-test-deps)")?;
    let mqtt_port = broker.port();
    let behaviour = Behaviour {
        latency_ms: config.latency_ms,
        rate_limit: Some(RateLimit {
            per_key: 50,
            window_ms: 60_000,
        }),
        key_status: [(REFUSED_KEY.to_string(), 400)].into(),
        ..Behaviour::default()
    };
    let stand_in = Arc::new(StandIn::start_with("127.0.0.1:0".parse()?, behaviour).await?);
    crate::kafka::ensure_topic(&bootstrap, KAFKA_TOPIC, 3).await?;
    crate::kafka::ensure_topic(&bootstrap, DLQ_TOPIC, 1).await?;
    let dir = tempfile::Builder::new().prefix("ilagent-soak-").tempdir()?;
    let (proxy_port, metrics_port) = (testkit::try_free_port()?, testkit::try_free_port()?);
    let args_a = words(&format!(
        "-p {proxy_port} -e {KAFKA_TOPIC} --kafka_brokers {bootstrap} --kafka_group_id soak \
         --kafka_auto_offset_reset earliest --kafka_property session.timeout.ms=6000 \
         --kafka_property heartbeat.interval.ms=500 --kafka_dlq_topic {DLQ_TOPIC} \
         -m 127.0.0.1 -q {mqtt_port} -n soak-agent-a --mqtt_qos 1 -b il1hbt-soak-a"
    ));
    let args_b = words(&format!(
        "--metrics_port {metrics_port} -e {BUFFERED_TOPIC} -m 127.0.0.1 -q {mqtt_port} \
         -n soak-agent-b --mqtt_qos 1 --mqtt_buffer -b il1hbt-soak-b"
    ));
    let mut a = Agent::start(
        "a",
        &config.agent,
        dir.path(),
        &stand_in,
        proxy_port,
        &args_a,
    )?;
    let mut b = Agent::start(
        "b",
        &config.agent,
        dir.path(),
        &stand_in,
        metrics_port,
        &args_b,
    )?;
    eprintln!(
        "soak: agents a (pid {}) and b (pid {}) in {}",
        a.process.pid(),
        b.process.pid(),
        dir.path().display()
    );

    let producer = crate::kafka::producer_with_linger(&bootstrap, 20)?;
    let every = Duration::from_millis(500);
    senders::warm_up(
        &stand_in,
        Source::Kafka,
        every,
        || a.process.exit_status().is_none(),
        |n| {
            let payload = warmup_event(Source::Kafka, n);
            let records = vec![(Some("warmup".to_string()), payload)];
            let producer = &producer;
            async move {
                crate::kafka::produce_all(producer, KAFKA_TOPIC, records, 1)
                    .await
                    .map(|_| ())
            }
        },
    )
    .await?;
    let port = broker.port();
    for (source, topic, agent) in [
        (Source::MqttDirect, KAFKA_TOPIC, &mut a),
        (Source::MqttBuffered, BUFFERED_TOPIC, &mut b),
    ] {
        senders::warm_up(
            &stand_in,
            source,
            every,
            || agent.process.exit_status().is_none(),
            |n| {
                crate::mqtt::publish_one(
                    port,
                    format!("soak-warmup-{n}"),
                    topic,
                    warmup_event(source, n),
                )
            },
        )
        .await?;
    }
    wait_for_port(proxy_port).await?;
    // No idle connections kept: see `Agent::metrics`.
    let client = testkit::http_client()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://127.0.0.1:{proxy_port}/api/events");
    senders::warm_up(
        &stand_in,
        Source::Proxy,
        every,
        || a.process.exit_status().is_none(),
        |n| {
            let request = client.post(&url).header("content-type", "application/json");
            let request = request.body(warmup_event(Source::Proxy, n));
            async move {
                request
                    .send()
                    .await?
                    .error_for_status()
                    .map(|_| ())
                    .map_err(Into::into)
            }
        },
    )
    .await?;
    eprintln!(
        "soak: every source is delivering; {} msg/s per source for {:?}",
        config.shape.rate, config.duration
    );

    let (tally, tally_task) = tally::Tally::start(Arc::clone(&stand_in));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let counters: Vec<Arc<Counters>> = Source::ALL.iter().map(|_| Arc::default()).collect();
    let acked: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::default()).collect();
    let shape = config.shape;
    let mut running = vec![
        senders::kafka(
            producer.clone(),
            KAFKA_TOPIC.into(),
            shape,
            stop.clone(),
            Arc::clone(&counters[0]),
        ),
        senders::mqtt(
            port,
            Source::MqttDirect,
            KAFKA_TOPIC.into(),
            shape,
            stop.clone(),
            Arc::clone(&counters[1]),
            Arc::clone(&acked[0]),
        ),
        senders::mqtt(
            port,
            Source::MqttBuffered,
            BUFFERED_TOPIC.into(),
            shape,
            stop.clone(),
            Arc::clone(&counters[2]),
            Arc::clone(&acked[1]),
        ),
        senders::proxy(url.clone(), shape, stop.clone(), Arc::clone(&counters[3])),
    ];

    let mut outcome = Outcome::new(config);
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started, config.interval);
    loop {
        ticks.tick().await;
        let t = started.elapsed();
        a.ensure_alive()?;
        b.ensure_alive()?;
        if let Some(sender) = running.iter_mut().find(|s| s.is_finished()) {
            sender.await.context("a sender panicked")??;
            anyhow::bail!("a sender stopped before the end");
        }
        let sample = Sample::take(t, &[&a, &b], &client, &counters, &tally).await;
        println!("{}", sample.line());
        outcome.samples.push(sample);
        if t + config.interval / 2 >= config.duration {
            break;
        }
    }
    let _ = stop_tx.send(true);
    for sender in running.drain(..) {
        sender.await.context("a sender panicked")??;
    }
    let drained = sample::drain(
        config.drain_timeout,
        &counters,
        &tally,
        &mut [&mut a, &mut b],
    )
    .await;
    outcome
        .finish(&[&a, &b], &client, &counters, &acked, &tally, drained)
        .await;
    tally_task.abort();
    for agent in [a, b] {
        agent.process.stop();
    }
    if !outcome.passed() {
        let kept = dir.keep();
        eprintln!(
            "soak: failed; the agents' logs and files are kept in {}",
            kept.display()
        );
    }
    drop((tansu, broker));
    Ok(outcome)
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// Waits until something listens on `port` (the proxy), for up to 30 s.
async fn wait_for_port(port: u16) -> Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            anyhow::bail!("the proxy did not listen on {address} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
