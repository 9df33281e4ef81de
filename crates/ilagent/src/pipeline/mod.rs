//! The part of the flow every source shares after it has received a message: route and
//! map, ordering by key, bounded parallel delivery, and the hand-over to the source's
//! settle step (with the one rule for retrying the writes that settle a message).

mod dispatcher;
mod order_key;
pub mod persist;
mod route;

pub use dispatcher::{Dispatcher, Job, Limits, Settle, Slot};
pub use order_key::OrderKey;
pub use route::{IDEMPOTENCY_KEY, MessageRouter};
