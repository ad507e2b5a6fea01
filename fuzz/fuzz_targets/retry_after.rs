//! Any text as a `Retry-After` or `X-RateLimit-Reset` value: the parsers
//! never panic, never ask for more than `MAX_SERVER_WAIT`, and read plain
//! delta-seconds as exactly that many seconds (capped).
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use zoom_dept_sync::zoom::wait::{MAX_SERVER_WAIT, parse_rate_limit_reset, parse_retry_after};

fuzz_target!(|bytes: &[u8]| {
    // Header values are bytes; the daemon only ever passes text.
    let value = String::from_utf8_lossy(bytes);
    // 2026-11-26T09:00:00Z, as in the unit tests.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_683_600);
    let retry = parse_retry_after(&value, now);
    let reset = parse_rate_limit_reset(&value, now);
    for wait in [retry, reset] {
        assert!(
            wait.is_none_or(|w| w <= MAX_SERVER_WAIT),
            "{value:?}: {wait:?}"
        );
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value
            .parse::<u64>()
            .map_or(MAX_SERVER_WAIT, Duration::from_secs);
        assert_eq!(retry, Some(seconds.min(MAX_SERVER_WAIT)), "{value:?}");
    }
});
