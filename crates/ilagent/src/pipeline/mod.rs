//! The part of the flow every source shares after it has received a message: ordering
//! by key, bounded parallel delivery, and the hand-over to the source's settle step.

mod dispatcher;
mod order_key;

pub use dispatcher::{Dispatcher, Job, Limits, Settle, Slot};
pub use order_key::OrderKey;
