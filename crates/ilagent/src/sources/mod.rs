//! Sources receive messages and settle them; everything between is shared
//! ([`crate::mapping`], [`crate::pipeline`], [`crate::delivery`]).

pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod route;
