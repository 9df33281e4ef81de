//! What mapping decides to do with one message, and what delivery made of it.
//!
//! `Action` is the contract between [`crate::mapping`] (which produces it from bytes) and
//! [`crate::delivery`] (which carries it out); `Outcome` is the contract between delivery
//! and a source's settle step. Neither knows where a message came from.

use std::sync::Arc;
use std::time::Duration;

use crate::ilert::Event;
use crate::secret::Secret;

/// An event's idempotency id: ilert gets an event with this id at most once per window
/// (see [`crate::delivery`]). From a route's `dedupe` expression, or from the
/// `Idempotency-Key` header of a request to the HTTP proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupeId {
    /// Where ids are unique, for metrics and messages: the route's name, or `http` for
    /// the proxy.
    pub scope: Arc<str>,
    /// The id as the message gave it, for messages.
    pub id: Box<str>,
    /// What is stored and compared: a digest of where the id is unique and of the id, so
    /// that every id costs the same few bytes in the file whatever its length.
    pub key: [u8; 16],
    /// How long an accepted id suppresses its duplicates.
    pub window: Duration,
}

impl DedupeId {
    /// An id of the route named `route`: unique among that route's events.
    pub fn of_route(route: &Arc<str>, id: String, window: Duration) -> Self {
        DedupeId {
            key: digest(&["route", route, &id]),
            scope: Arc::clone(route),
            id: id.into_boxed_str(),
            window,
        }
    }

    /// An `Idempotency-Key` of a request to the proxy: unique per integration key, so
    /// that two applications choosing the same key do not suppress each other's events.
    pub fn of_request(integration_key: &str, id: String, window: Duration) -> Self {
        DedupeId {
            key: digest(&["http", integration_key, &id]),
            scope: Arc::from("http"),
            id: id.into_boxed_str(),
            window,
        }
    }
}

/// The first 16 bytes of the SHA-256 of the parts, each prefixed with its length (so that
/// no two different lists of parts read alike).
fn digest(parts: &[&str]) -> [u8; 16] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&context.finish().as_ref()[..16]);
    key
}

/// Move one user onto one level of the escalation policy with a routing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub email: String,
    pub routing_key: String,
    /// Zero-based escalation level.
    pub level: u32,
}

/// The decision for one message.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Event(Box<Event>),
    Heartbeat(Secret),
    PolicyUpdate(PolicyUpdate),
    /// Not for ilert (a filter did not match): settle without delivering.
    Skip(String),
    /// Can never be delivered as it is: set aside with this reason.
    Invalid(String),
}

/// What delivery made of an action. A deliverer that retries ([`crate::delivery::Deliverer`]
/// by default) never returns a transient failure: it keeps trying until the action is
/// delivered, becomes permanent (retries exhausted, deadline passed) or shutdown interrupts
/// the wait. Only a single-attempt deliverer (the SQLite queue's, whose row keeps the
/// attempt count) returns [`Outcome::Failed`], and its settle step schedules the retry by
/// the same [`crate::delivery::RetryPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// ilert accepted it.
    Delivered {
        status: u16,
        attempts: u32,
        correlation_id: Option<String>,
    },
    /// Mapping decided it is not for ilert.
    Skipped { reason: String },
    /// ilert already accepted an event with its idempotency id inside the id's window.
    Duplicate { reason: String },
    /// A heartbeat ping that would change nothing at ilert: a ping of the same heartbeat is
    /// in flight, or its rate budget is used up by recent pings. Settled at once.
    Coalesced { reason: String },
    /// It will never be delivered; the source sets it aside (dead-letter) and settles.
    Rejected {
        kind: RejectKind,
        reason: String,
        status: Option<u16>,
        attempts: u32,
    },
    /// One attempt failed transiently (single-attempt deliverers only): the caller decides
    /// when to try again, from `status` and ilert's `Retry-After`.
    Failed {
        status: Option<u16>,
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// Shutdown came before a transient failure cleared: leave it unsettled so that the
    /// source redelivers it after the restart.
    Interrupted { attempts: u32 },
}

/// Why a message was rejected: sources count and report these apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// Mapping found the payload unusable.
    Invalid,
    /// ilert answered with a permanent error (4xx other than 408 and 429).
    Permanent,
    /// Transient failures went on past `--max_retries` or the deadline.
    Exhausted,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Invalid => "invalid",
            RejectKind::Permanent => "permanent",
            RejectKind::Exhausted => "exhausted",
        }
    }
}

impl Outcome {
    /// Delivered, skipped, duplicate, coalesced and rejected messages are done with;
    /// interrupted and failed ones are not.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Outcome::Interrupted { .. } | Outcome::Failed { .. })
    }
}
