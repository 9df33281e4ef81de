//! The agent's HTTP server, for the proxy's port (`-p`) and `--metrics_port`: hyper's
//! HTTP/1 connections under an accept loop of our own. It replaces `axum::serve`, which
//! takes a listener and a router and has no setting for any of the limits below (its
//! connections run without a timer, so hyper's header timeout never fires there).
//!
//! - **Connections** (`--http_max_connections`, per port): at the cap the loop stops
//!   accepting, so further clients wait in the kernel's listen backlog, as with nginx,
//!   HAProxy or Go's `LimitListener`, rather than being refused; and every idle
//!   keep-alive connection is asked to close (nginx does the same with its "reusable"
//!   connections), so sockets that do nothing cannot keep a client out for long.
//! - **Headers** (`--http_header_timeout`): hyper's header read timer. It runs from the
//!   moment a connection is ready for a request (just opened, or its previous answer
//!   written) until the request's head is complete, so it closes both a slow-loris client
//!   and an idle keep-alive connection. hyper has no separate idle timer.
//! - **Bodies** (`--http_body_timeout`): every request body gets a deadline
//!   ([`DeadlineBody`]); the handler answers 408.
//!
//! Shutdown is what `axum::serve`'s graceful shutdown did: once `stop` is cancelled the
//! listener is closed, idle connections close at once, busy ones after their answer, and
//! the future returns when all are gone (the supervisor bounds that wait). Connections are
//! tasks of the future's own `JoinSet`, so dropping the future aborts them.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::limits::DeadlineBody;
use crate::observe::events;

/// After an accept error other than a vanished client (typically: out of file
/// descriptors), wait this long before accepting again, as hyper 0.14 and axum do.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The warning that a port is at `--http_max_connections` comes at most this often.
const AT_CAP_WARN_EVERY: Duration = Duration::from_secs(60);

/// `--http_max_connections`, `--http_header_timeout`, `--http_body_timeout`: the same for
/// every port the agent serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`, then lets open requests finish. `name`
/// (`proxy` or `metrics`) labels the port's log lines and metrics.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    name: &'static str,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    // Cancelled (and replaced) each time the cap is reached: the connections that hold it
    // close if idle, or after their answer if busy.
    let mut reclaim = CancellationToken::new();
    let mut warned_at_cap: Option<Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                events::http_accept_failed(name, &error, limits.max_connections);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        if connections.len() >= limits.max_connections {
            // This one waits, accepted but not served, and the backlog holds the rest,
            // until a connection ends; the idle ones are asked to end now.
            if warned_at_cap.is_none_or(|at| at.elapsed() >= AT_CAP_WARN_EVERY) {
                events::http_connections_at_cap(name, limits.max_connections);
                warned_at_cap = Some(Instant::now());
            }
            reclaim.cancel();
            reclaim = CancellationToken::new();
            tokio::select! {
                () = stop.cancelled() => break,
                _ = connections.join_next() => {}
            }
        }
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            http.clone(),
            router.clone(),
            limits.body_timeout,
            name,
            [stop.clone(), reclaim.clone()],
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// A client that went away between its connect and our accept: nothing to do.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection until the client closes it, a timeout closes it, or one of `close_when`
/// is cancelled: then it finishes the request under way (if any) and closes.
async fn serve_connection(
    stream: TcpStream,
    http: http1::Builder,
    router: Router,
    body_timeout: Duration,
    name: &'static str,
    close_when: [CancellationToken; 2],
) {
    let _open = OpenConnection::new(name);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        // The body's deadline starts now, with the headers complete.
        let request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
        // A `Router` is always ready: `call` needs no `poll_ready` before it.
        router.clone().call(request)
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let [first, second] = close_when;
    let finished = tokio::select! {
        result = connection.as_mut() => Some(result),
        () = first.cancelled() => None,
        () = second.cancelled() => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match result {
        Ok(()) => {}
        Err(error) if error.is_timeout() => events::http_header_timeout(name),
        // The client reset the connection, sent garbage (hyper answered 400), or left
        // mid-request: its own business, not the agent's.
        Err(error) => tracing::debug!(listener = name, %error, "HTTP connection ended"),
    }
}

/// Counts a connection in `ilagent_http_connections` while it is open.
struct OpenConnection(&'static str);

impl OpenConnection {
    fn new(name: &'static str) -> Self {
        events::http_connections(name, 1.0);
        OpenConnection(name)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        events::http_connections(self.0, -1.0);
    }
}
