//! Everything that speaks the ilert API: the event model, the HTTP client, and the
//! classification of each response into delivered, transient or permanent.
//!
//! Nothing here retries or waits; that policy lives in [`crate::delivery`].

pub mod classify;
pub mod client;
pub mod event;

pub use classify::Verdict;
pub use client::{ClientSettings, EventPath, IlertClient};
pub use event::{CustomDetails, Event, EventType, Priority};
