//! The stand-in's own accept loop. `axum::serve` cannot abandon a connection mid-request, but
//! the stand-in must be able to close a socket without answering (to imitate network faults),
//! so each connection is served by hyper directly and raced against a per-connection token
//! that handlers can cancel. Dropping the connection future closes the socket.

use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;

use crate::state::Shared;
use crate::{control, routes};

/// Put into every request's extensions; lets a handler close its connection unanswered.
#[derive(Clone)]
pub(crate) struct ConnectionControl(CancellationToken);

impl ConnectionControl {
    pub(crate) fn drop_connection(&self) {
        self.0.cancel();
    }
}

/// Control endpoints first; everything else is treated as an ilert request.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    control::router()
        .fallback(routes::handle)
        .with_state(shared)
}

/// Accepts connections until `cancel` fires; each connection runs as a tracked task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tracker.spawn(serve_connection(
                    stream,
                    router.clone(),
                    cancel.child_token(),
                ));
            }
            Err(error) => {
                // Typically EMFILE under load: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, token: CancellationToken) {
    let service = Extension(ConnectionControl(token.clone())).layer(router);
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        // Dropping `connection` here closes the socket without writing anything.
        _ = token.cancelled() => {}
    }
}
