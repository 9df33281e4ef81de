//! `proxy-50clients`: 20,000 events posted by 50 concurrent HTTP clients to the agent's
//! local proxy (`ilagent daemon -p PORT`), accepted (202 only after the event is committed
//! to SQLite) and delivered to the stand-in (no added latency).
//!
//! Each client owns two of the 100 alert keys and posts their events in order, waiting for
//! each 202, so per-key order is defined by the clients. The row's messages/s is delivery
//! to the stand-in; the accept rate (202s per second, issue 5 targets 5,000) is a note.
//!
//! The documented API: `POST /api/events` with the ilert event body, answered 202 after the
//! commit. While the agent refuses `-p` (the proxy is not in every build yet), the scenario
//! is reported as skipped with the agent's own message.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use ilert_standin::Behaviour;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{AgentRun, generous_timeout};
use crate::collect::warm_up;
use crate::event::{Stream, warmup_event};
use crate::report::Row;

/// Attempts per event before a client gives up on it (anything but 202 is retried).
const ATTEMPTS: usize = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(20);

pub struct ProxyScenario {
    pub name: &'static str,
    pub messages: usize,
    pub clients: usize,
    pub stream: Stream,
}

pub const PROXY_50CLIENTS: ProxyScenario = ProxyScenario {
    name: "proxy-50clients",
    messages: 20_000,
    clients: 50,
    stream: Stream::keys(100),
};

/// What a client saw.
#[derive(Default)]
struct Posted {
    accepted: usize,
    refused: usize,
    given_up: usize,
}

impl ProxyScenario {
    pub async fn run(&self, agent_binary: &std::path::Path) -> Result<Row> {
        let stand_in = super::stand_in(Behaviour::default()).await?;
        let port = testkit::try_free_port()?;
        let port_arg = port.to_string();
        let mut agent = AgentRun::start(
            agent_binary,
            &stand_in,
            &["-p", &port_arg, "--rate_limit_events", "0"],
        )?;
        if let Some(reason) = wait_for_listener(&mut agent, port).await? {
            return Ok(Row::skipped(self.name, reason));
        }
        let client = testkit::http_client()
            .pool_max_idle_per_host(self.clients)
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        let url = format!("http://127.0.0.1:{port}/api/events");
        warm_up(
            &stand_in,
            Duration::from_millis(300),
            Duration::from_secs(60),
            || agent.alive(),
            |n| {
                let request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(warmup_event(n));
                async move {
                    request.send().await?.error_for_status()?;
                    Ok(())
                }
            },
        )
        .await?;
        eprintln!(
            "{}: {} clients posting {} events",
            self.name, self.clients, self.messages
        );
        let started = Instant::now();
        let mut clients = JoinSet::new();
        let (keys, per_key) = (
            self.stream.keys,
            self.messages.div_ceil(self.stream.keys.max(1)),
        );
        for c in 0..self.clients {
            let (client, url, stream, messages) =
                (client.clone(), url.clone(), self.stream, self.messages);
            let ids: Vec<usize> = (0..per_key)
                .flat_map(|seq| (c..keys).step_by(self.clients).map(move |k| seq * keys + k))
                .filter(|id| *id < messages)
                .collect();
            clients.spawn(async move {
                let mut posted = Posted::default();
                for id in ids {
                    let (_, body) = stream.event(id);
                    let mut done = false;
                    for _ in 0..ATTEMPTS {
                        let response = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        if matches!(&response, Ok(r) if r.status().as_u16() == 202) {
                            done = true;
                            break;
                        }
                        posted.refused += 1;
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    if done {
                        posted.accepted += 1;
                    } else {
                        posted.given_up += 1;
                    }
                }
                posted
            });
        }
        let mut posted = Posted::default();
        while let Some(result) = clients.join_next().await {
            let one = result.context("a proxy client panicked")?;
            posted.accepted += one.accepted;
            posted.refused += one.refused;
            posted.given_up += one.given_up;
        }
        let accept_seconds = started.elapsed().as_secs_f64();
        let timeout = generous_timeout(self.messages, 1_000.0);
        let mut row = agent
            .finish(self.name, &stand_in, self.messages, timeout, 0)
            .await?;
        row.notes.push(format!(
            "accepted (202) {} events from {} clients in {accept_seconds:.2} s = {:.0} \
             events/s; {} non-202 answers retried; {} given up",
            posted.accepted,
            self.clients,
            posted.accepted as f64 / accept_seconds.max(1e-9),
            posted.refused,
            posted.given_up
        ));
        Ok(row)
    }
}

/// Waits until the agent listens on `port`. `Some(reason)` when it exited instead because
/// it does not offer the proxy; an error when it exited for another reason or never
/// listened.
async fn wait_for_listener(agent: &mut AgentRun, port: u16) -> Result<Option<String>> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = agent.process.exit_status() {
            let log = agent.process.log_tail();
            let refused_port = log.contains("-p/--port") || log.contains("--port");
            if status.code() == Some(2) && refused_port {
                let message = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                return Ok(Some(format!(
                    "the agent refuses -p (exit 2): {message:?}; the HTTP proxy is not in \
                     this build yet"
                )));
            }
            anyhow::bail!("the agent exited ({status}) before listening on {port}:\n{log}");
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the agent did not listen on {address} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
