//! Per-request limits of the proxy: how many `/api/*` requests run at once
//! (`--http_max_in_flight`) and how long a request body may take to arrive
//! (`--http_body_timeout`).
//!
//! Both exist so that a flood or a slow client costs the agent a bounded amount of memory,
//! tasks and SQLite work, and is told so at once, instead of requests piling up until
//! clients time out. The operations endpoints are outside the in-flight limit on purpose:
//! an orchestrator's probe must not fail because of a flood on `/api`.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::reply::error;
use crate::observe::events;

/// What a client is told to wait after a 503 for too many requests: most requests are
/// done within milliseconds (one SQLite commit), so a second is plenty and keeps clients
/// from hammering.
const RETRY_AFTER_SECONDS: &str = "1";

/// `--http_max_in_flight`: slots for `/api/*` requests, shared by every route.
#[derive(Clone)]
pub(crate) struct InFlight {
    slots: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    pub(crate) fn new(max: usize) -> Self {
        InFlight {
            // Semaphore::new panics above MAX_PERMITS; no proxy gets near it anyway.
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }
}

/// Middleware: a request runs only if a slot is free, else it gets 503 with `Retry-After`
/// at once. Nothing has been read or stored then, so the client simply sends it again.
/// The slot is held until the handler has answered (the answer bodies are small and
/// already complete by then).
pub(crate) async fn limit_in_flight(
    State(limit): State<InFlight>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = Arc::clone(&limit.slots).try_acquire_owned() else {
        events::http_overloaded(limit.max);
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            &format!(
                "the agent is handling {} requests already (--http_max_in_flight): send it again after the Retry-After seconds",
                limit.max
            ),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        return response;
    };
    let _slot = Slot::taken(permit);
    next.run(request).await
}

/// A slot while it is taken, counted in `ilagent_http_requests_in_flight`; given back when
/// the request is answered or its client goes away (hyper drops the handler then).
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn taken(permit: OwnedSemaphorePermit) -> Self {
        events::http_in_flight(1.0);
        Slot { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        events::http_in_flight(-1.0);
    }
}

/// The error a request body yields when `--http_body_timeout` passed before it was all
/// there. [`timed_out_body`] finds it behind the extractors' rejections.
#[derive(Debug)]
pub(crate) struct BodyTimedOut(Duration);

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the body did not arrive within {} (--http_body_timeout): send it faster, or raise the flag",
            humantime::format_duration(self.0)
        )
    }
}

impl StdError for BodyTimedOut {}

/// The [`BodyTimedOut`] somewhere in `error`'s chain of sources, if that is why reading the
/// body failed.
pub(crate) fn timed_out_body<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a BodyTimedOut> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return Some(timed_out);
        }
        next = error.source();
    }
    None
}

/// A request body with a deadline for all of it, counted from the end of the headers.
///
/// Not `tower_http::timeout::RequestBodyTimeout`: that one restarts its timer with every
/// frame, so a client sending one byte a second would never be cut off. Data that is
/// already there is handed on even past the deadline; only waiting beyond it fails.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    expired: bool,
}

impl<B> DeadlineBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            expired: false,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired = true;
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    /// `len` bytes, one every `every`.
    struct Trickle {
        len: usize,
        every: Duration,
        next: Pin<Box<Sleep>>,
    }

    fn trickle(len: usize, every: Duration) -> Trickle {
        Trickle {
            len,
            every,
            next: Box::pin(tokio::time::sleep(every)),
        }
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            if this.len == 0 {
                return Poll::Ready(None);
            }
            match this.next.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.len -= 1;
                    let every = this.every;
                    this.next
                        .as_mut()
                        .reset(tokio::time::Instant::now() + every);
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
                }
            }
        }
    }

    async fn read(
        body: impl Body<Data = Bytes, Error = std::io::Error> + Unpin + Send + 'static,
        timeout: Duration,
    ) -> Result<Bytes, axum::extract::rejection::BytesRejection> {
        let request = Request::new(axum::body::Body::new(DeadlineBody::new(body, timeout)));
        Bytes::from_request(request, &()).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_a_byte_a_second_fails_at_the_deadline_not_later() {
        let started = tokio::time::Instant::now();
        let rejection = read(trickle(100, Duration::from_secs(1)), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let timed_out = timed_out_body(&rejection).expect("the rejection says why");
        assert!(
            timed_out.to_string().contains("5s (--http_body_timeout)"),
            "{timed_out}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_in_time_is_read_whole() {
        let body = read(trickle(4, Duration::from_secs(1)), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&body[..], b"xxxx");
    }

    #[test]
    fn other_body_errors_are_not_timeouts() {
        let other = std::io::Error::other("connection reset");
        assert!(timed_out_body(&other).is_none());
    }
}
