//! `Retry-After` from ilert, in both forms (delay-seconds, HTTP-date), against any clock,
//! and what the answer becomes: `classify_response` with the header on a 408/429/5xx and
//! the retry policy's wait, which must stay within its cap.
//!
//! Input: bytes 0-7 the clock (seconds after the epoch, little endian), byte 8 the status
//! (one of 408, 429, 500, 502, 503, 504); the rest is the header's value.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, StatusCode};
use ilagent::delivery::RetryPolicy;
use ilagent::ilert::Verdict;
use ilagent::ilert::classify::{classify_response, parse_retry_after};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

fuzz_target!(|data: &[u8]| {
    let Some((clock, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let [status, value @ ..] = rest else {
        return;
    };
    let now = UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::from_le_bytes(*clock)))
        .unwrap_or(UNIX_EPOCH);
    let status = STATUSES[usize::from(*status) % STATUSES.len()];

    if let Ok(text) = std::str::from_utf8(value) {
        let _ = parse_retry_after(text, now);
    }

    let Ok(header) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, header);
    let Ok(status) = StatusCode::from_u16(status) else {
        return;
    };
    let verdict = classify_response(status, &headers, b"{\"message\":\"slow down\"}", now);
    let Verdict::Transient { retry_after, .. } = verdict else {
        panic!("{status} must be transient, got {verdict:?}");
    };
    let policy = RetryPolicy::default();
    if let Some(wait) = policy.after_failure(1, Some(status.as_u16()), retry_after) {
        assert!(
            retry_after.is_none() || wait <= policy.max_retry_after,
            "waits {wait:?} beyond the cap {:?}",
            policy.max_retry_after
        );
    }
});
