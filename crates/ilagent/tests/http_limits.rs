//! The proxy holds up: connections beyond `--http_max_connections` wait while idle ones
//! make room, slow clients are cut off by `--http_header_timeout` and
//! `--http_body_timeout`, and requests beyond `--http_max_in_flight` get 503 with
//! `Retry-After` and leave nothing behind. The agent runs as a process against the ilert
//! stand-in; slow and idle clients are raw TCP sockets. (The flags themselves: see
//! `http_limits_flags.rs`.)

mod common;
mod http_support;

use std::time::Duration;

use common::eventually;
use http_support::*;
use ilert_standin::StandIn;
use serde_json::Value;
use testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Opens `n` TCP connections to the agent that never send a byte.
async fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("idle connection {i}: {e} (is ulimit -n above {n}?)"));
        streams.push(stream);
    }
    streams
}

/// Whether the agent has closed `stream` (end of stream or a reset), without waiting.
fn closed_by_agent(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Writes `bytes` one a second, reading between them; returns what the agent sent back
/// until it closed the connection, how many bytes went out by then, and when it closed.
/// Gives up (returns `None` for the time) after the last byte plus 20 s.
async fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> (Vec<u8>, usize, Option<Instant>) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    let deadline = started + Duration::from_secs(bytes.len() as u64 + 20);
    while Instant::now() < deadline {
        // Once the agent has started answering, nothing more is sent.
        if answer.is_empty()
            && sent < bytes.len()
            && stream.write_all(&bytes[sent..=sent]).await.is_ok()
        {
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return (answer, sent, Some(Instant::now())),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    (answer, sent, None)
}

/// The head of a `POST /api/events` whose body has `len` bytes.
fn event_head(port: u16, len: usize) -> String {
    format!(
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// The JSON body of a raw HTTP answer.
fn json_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body.trim()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_thousand_idle_connections_leave_a_client_its_prompt_202s_and_every_event_arrives() {
    const IDLE: usize = 1000;
    const EVENTS: usize = 20;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idle.db3");
    let port = free_port();
    // The default cap (1024) is above 1,000. The header timeout is raised (never lowered)
    // so that the 1,000 stay open for the whole test however slow the machine; the default
    // closing idle connections is the next tests' subject.
    let agent = start_proxy(
        &stand_in.url(),
        &db,
        port,
        &["--http_header_timeout", "300s"],
    );
    wait_up(&agent, port).await;
    let idle = idle_connections(port, IDLE).await;
    // The agent holds them all (they are not waiting in the backlog).
    let held = |samples: &[Sample]| {
        value(
            samples,
            "ilagent_http_connections",
            &[("listener", "proxy")],
        )
    };
    let deadline = Instant::now() + WAIT;
    let mut open = 0.0;
    while Instant::now() < deadline {
        open = held(&scrape(port).await);
        if open > IDLE as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        open > IDLE as f64,
        "the agent holds {open} connections; log:\n{}",
        agent.log()
    );

    let client = client();
    let started = Instant::now();
    for seq in 0..EVENTS {
        let (status, body) = post_event(&client, port, &event(1, seq)).await;
        assert_eq!(status, 202, "{body}");
    }
    // Generous for 20 commits on a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "20 events took {:?}",
        started.elapsed()
    );
    assert!(
        wait_for_events(&stand_in, EVENTS, WAIT).await,
        "{} of {EVENTS} events arrived; log:\n{}",
        stand_in.events().len(),
        agent.log()
    );
    assert_each_once_in_order(&stand_in.events(), 1, EVENTS, &agent.log());
    let still_open = idle.iter().filter(|s| !closed_by_agent(s)).count();
    assert_eq!(
        still_open, IDLE,
        "idle connections under the cap are left alone"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn health_answers_while_the_connection_cap_is_full_of_idle_clients_because_they_make_room() {
    const CAP: usize = 20;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cap.db3");
    let port = free_port();
    // Idle connections would otherwise stay for 300 s: only making room frees them.
    let agent = start_proxy(
        &stand_in.url(),
        &db,
        port,
        &[
            "--http_max_connections",
            &CAP.to_string(),
            "--http_header_timeout",
            "300s",
        ],
    );
    wait_up(&agent, port).await;
    let idle = idle_connections(port, CAP).await;
    // Not a condition: a moment for the agent to accept them, so the probe comes last.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let health = client().get(url(port, "/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "/health waited {:?}",
        started.elapsed()
    );
    // All of them, unless the agent was so slow that the probe overtook the last idle
    // one in the backlog: then that one came in after the room was made.
    let closed = || idle.iter().filter(|s| closed_by_agent(s)).count();
    assert!(
        eventually(WAIT, || closed() >= CAP - 1).await,
        "{} of {CAP} idle connections were closed to make room; log:\n{}",
        closed(),
        agent.log()
    );
    assert!(
        agent.full_log().contains("--http_max_connections"),
        "reaching the cap is logged: {}",
        agent.log()
    );
    // The proxy works at the cap as below it.
    let (status, body) = post_event(&client(), port, &event(1, 0)).await;
    assert_eq!(status, 202, "{body}");
    assert!(wait_for_events(&stand_in, 1, WAIT).await, "{}", agent.log());
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_client_sending_its_headers_a_byte_a_second_is_disconnected_after_the_header_timeout() {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loris.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &["--http_header_timeout", "3s"]);
    wait_up(&agent, port).await;

    let head = event_head(port, 2);
    // Beside it, a connection that sends nothing at all: the same timer closes it.
    let idle = idle_connections(port, 1).await;
    // The agent's timer starts after this: a lower bound that holds on any machine.
    let before = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (answer, sent, closed_at) = trickle(&mut stream, head.as_bytes()).await;
    let closed_after = closed_at.expect("the agent never closed the connection") - before;
    assert!(
        answer.is_empty(),
        "no answer, the connection is closed: {answer:?}"
    );
    assert!(sent < head.len(), "closed mid-headers, after {sent} bytes");
    assert!(
        closed_after >= Duration::from_millis(2_900) && closed_after < Duration::from_secs(20),
        "closed after {closed_after:?}"
    );
    assert!(
        eventually(WAIT, || closed_by_agent(&idle[0])).await,
        "the idle connection is closed too"
    );
    let samples = scrape(port).await;
    assert!(
        value(
            &samples,
            "ilagent_http_header_timeouts_total",
            &[("listener", "proxy")]
        ) >= 2.0
    );
    // Others are served as before.
    assert_eq!(post_event(&client(), port, &event(1, 0)).await.0, 202);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_body_trickling_in_gets_408_and_a_closed_connection_after_the_body_timeout_and_nothing_is_stored()
 {
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("trickle.db3");
    let port = free_port();
    let agent = start_proxy(&stand_in.url(), &db, port, &["--http_body_timeout", "3s"]);
    wait_up(&agent, port).await;

    let body = event(1, 0).to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The agent's timer starts after this: a lower bound that holds on any machine.
    let before = Instant::now();
    stream
        .write_all(event_head(port, body.len()).as_bytes())
        .await
        .unwrap();
    let (answer, sent, closed_at) = trickle(&mut stream, body.as_bytes()).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let closed_after = closed_at.expect("the agent never closed the connection") - before;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let error = json_of(&answer);
    assert_eq!(
        (error["status"].as_u64(), error["code"].as_str()),
        (Some(408), Some("REQUEST_TIMEOUT")),
        "{answer}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("--http_body_timeout")),
        "{answer}"
    );
    assert!(sent < body.len(), "cut off mid-body, after {sent} bytes");
    assert!(
        closed_after >= Duration::from_millis(2_900) && closed_after < Duration::from_secs(20),
        "closed after {closed_after:?}"
    );
    // Refused means nothing stored and nothing sent; a whole body goes through.
    assert_eq!(queue_stat(&db, "queued").await, 0);
    assert_eq!(post_event(&client(), port, &event(1, 1)).await.0, 202);
    assert!(wait_for_events(&stand_in, 1, WAIT).await, "{}", agent.log());
    assert_eq!(arrivals(&stand_in.events()), [("key-1".to_string(), 1)]);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn beyond_the_in_flight_cap_requests_get_503_with_retry_after_and_only_the_202s_are_stored() {
    const CAP: usize = 4;
    const FLOOD: usize = 50;
    let stand_in = StandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("in-flight.db3");
    let port = free_port();
    // The body timeout is raised (never lowered) so that the held requests stay held
    // however slow the machine.
    let agent = start_proxy(
        &stand_in.url(),
        &db,
        port,
        &[
            "--http_max_in_flight",
            &CAP.to_string(),
            "--http_body_timeout",
            "300s",
        ],
    );
    wait_up(&agent, port).await;
    let client = client();

    // CAP requests whose bodies have not arrived yet hold every slot.
    let mut held = Vec::new();
    for key in 0..CAP {
        let body = event(100 + key, 0).to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (first, rest) = body.split_at(10);
        stream
            .write_all(event_head(port, body.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(first.as_bytes()).await.unwrap();
        held.push((stream, rest.to_string()));
    }
    // Once the agent has read their headers, they hold the slots (the probes are not
    // counted, so /metrics can say so).
    let in_flight = |samples: &[Sample]| value(samples, "ilagent_http_requests_in_flight", &[]);
    let deadline = Instant::now() + WAIT;
    while in_flight(&scrape(port).await) < CAP as f64 {
        assert!(
            Instant::now() < deadline,
            "the held requests never took the slots; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, refusal) = post_event(&client, port, &event(1, 0)).await;
    assert_eq!(status, 503, "{refusal}");
    assert_eq!(
        (refusal["status"].as_u64(), refusal["code"].as_str()),
        (Some(503), Some("OVERLOADED")),
        "{refusal}"
    );
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("--http_max_in_flight")),
        "{refusal}"
    );

    // A flood while the slots are taken: every request is refused at once, with Retry-After.
    let mut flood = Vec::new();
    for n in 0..FLOOD {
        let request = client.post(url(port, "/api/events")).json(&event(2, n));
        flood.push(tokio::spawn(request.send()));
    }
    for request in flood {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
    // The probes are not counted against the cap.
    assert_eq!(
        client
            .get(url(port, "/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(ready(port).await.0, 200);

    // The held bodies complete: their requests are accepted, and the slots are free again.
    let mut accepted = 0;
    for (stream, rest) in &mut held {
        stream.write_all(rest.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        accepted += 1;
    }
    for n in 0..10 {
        let (status, body) = post_event(&client, port, &event(3, n)).await;
        assert_eq!(status, 202, "{body}");
        accepted += 1;
    }
    assert_eq!(
        in_flight(&scrape(port).await),
        0.0,
        "every slot was given back"
    );

    // What ilert gets is exactly what was answered 202: a 503 left nothing behind.
    assert!(
        wait_for_stat(&db, "queued", |n| n == 0).await,
        "{}",
        agent.log()
    );
    assert!(
        wait_for_events(&stand_in, accepted, WAIT).await,
        "{}",
        agent.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stand_in.events().len(), accepted, "events at ilert = 202s");
    let samples = scrape(port).await;
    let refused = value(
        &samples,
        "ilagent_http_requests_total",
        &[("route", "overloaded"), ("status", "503")],
    );
    assert_eq!(refused, (FLOOD + 1) as f64);
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
