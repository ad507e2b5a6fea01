//! How long Zoom (or a proxy in front of it) asked us to wait: the
//! `Retry-After` and `X-RateLimit-Reset` headers.
//!
//! These values come off the network, so any of them may be huge, negative,
//! malformed or in the past. None of them may panic a worker, and none may
//! hold calls back for longer than [`MAX_SERVER_WAIT`]: every sum is checked
//! and every wait is capped.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The longest wait a server can impose. Zoom's longest limit is the daily
/// one, which resets within a day; anything longer is a broken header, and
/// waiting it out would stall the daemon for good.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the server asked us to wait: `Retry-After` (delta-seconds,
/// HTTP-date or ISO-8601 date-time), else `X-RateLimit-Reset` (epoch seconds
/// or a date-time). `None` when neither is present or readable; otherwise at
/// most [`MAX_SERVER_WAIT`].
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    header("retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| header("x-ratelimit-reset").and_then(|v| parse_rate_limit_reset(v, now)))
}

/// `Retry-After` in any of the three forms Zoom and proxies send.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Some(seconds) = parse_seconds(value) {
        return Some(Duration::from_secs(seconds).min(MAX_SERVER_WAIT));
    }
    parse_date_time(value).map(|at| until(at, now))
}

/// Digits only; a number past `u64` is as large as a `u64` (and so capped),
/// not "no header".
fn parse_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

/// `X-RateLimit-Reset`: Unix epoch seconds, or a date-time.
pub fn parse_rate_limit_reset(value: &str, now: SystemTime) -> Option<Duration> {
    if let Some(epoch) = parse_seconds(value) {
        // An epoch past what `SystemTime` can hold is as far away as allowed.
        return Some(
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(epoch))
                .map_or(MAX_SERVER_WAIT, |at| until(at, now)),
        );
    }
    parse_date_time(value).map(|at| until(at, now))
}

/// An HTTP-date or an RFC 3339 date-time. Built from epoch seconds with a
/// checked sum rather than `SystemTime::from`, so no year can overflow it.
fn parse_date_time(value: &str) -> Option<SystemTime> {
    if let Ok(at) = httpdate::parse_http_date(value) {
        return Some(at);
    }
    let at = OffsetDateTime::parse(value, &Rfc3339).ok()?;
    // Before 1970 is in the past, which means "now" anyway.
    let seconds = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::new(seconds, at.nanosecond()))
        .or(Some(SystemTime::UNIX_EPOCH))
}

/// Zoom's daily limits reset at 00:00 UTC: the wait until the next one (a
/// whole day at midnight itself), for a daily-limit 429 that names no wait.
pub fn until_next_utc_midnight(now: SystemTime) -> Duration {
    const DAY: u64 = 24 * 60 * 60;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let into_day = Duration::new(since_epoch.as_secs() % DAY, since_epoch.subsec_nanos());
    MAX_SERVER_WAIT.saturating_sub(into_day)
}

/// A moment in the past means "now"; one too far ahead means the cap.
fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_SERVER_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;

    fn now() -> SystemTime {
        // 2026-11-26T09:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_683_600)
    }

    #[test]
    fn retry_after_in_all_three_forms() {
        assert_eq!(parse_retry_after("2", now()), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 09:00:05 GMT", now()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("2026-11-26T09:00:07Z", now()),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("2026-11-26T10:00:07+01:00", now()),
            Some(Duration::from_secs(7))
        );
        // Zoom's daily limit resets at midnight UTC.
        assert_eq!(
            parse_retry_after("2026-11-27T00:00:00Z", now()),
            Some(Duration::from_secs(15 * 3600))
        );
        assert_eq!(
            parse_retry_after("2026-11-26T08:00:00Z", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn rate_limit_reset_is_used_when_retry_after_is_absent() {
        let mut headers = HeaderMap::new();
        assert_eq!(server_wait(&headers, now()), None);
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1795683603"));
        assert_eq!(server_wait(&headers, now()), Some(Duration::from_secs(3)));
        headers.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(server_wait(&headers, now()), Some(Duration::from_secs(1)));
    }

    #[test]
    fn huge_negative_zero_past_and_malformed_waits_never_panic() {
        let huge = "18446744073709551615";
        for value in [
            huge,
            "-1",
            "0",
            "1.5",
            "",
            " ",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ] {
            let wait = parse_retry_after(value, now());
            assert!(
                wait.is_none_or(|w| w <= MAX_SERVER_WAIT),
                "Retry-After {value:?}: {wait:?}"
            );
            let mut headers = HeaderMap::new();
            headers.insert("x-ratelimit-reset", HeaderValue::from_str(value).unwrap());
            let wait = server_wait(&headers, now());
            assert!(
                wait.is_none_or(|w| w <= MAX_SERVER_WAIT),
                "X-RateLimit-Reset {value:?}: {wait:?}"
            );
        }
    }

    #[test]
    fn each_odd_value_means_what_it_should() {
        let reset = |v| parse_rate_limit_reset(v, now());
        let retry = |v| parse_retry_after(v, now());
        assert_eq!(retry("18446744073709551615"), Some(MAX_SERVER_WAIT));
        assert_eq!(reset("18446744073709551615"), Some(MAX_SERVER_WAIT));
        // Past what a u64 holds: still a number of seconds, as far as allowed.
        assert_eq!(retry("99999999999999999999"), Some(MAX_SERVER_WAIT));
        assert_eq!(reset("99999999999999999999"), Some(MAX_SERVER_WAIT));
        assert_eq!(retry("9999-12-31T23:59:59Z"), Some(MAX_SERVER_WAIT));
        assert_eq!(retry("0"), Some(Duration::ZERO));
        assert_eq!(reset("0"), Some(Duration::ZERO), "1970: in the past");
        assert_eq!(retry("-1"), None);
        assert_eq!(reset("-1"), None);
        assert_eq!(retry("1.5"), None);
        assert_eq!(reset("soon"), None);
    }

    #[test]
    fn the_next_utc_midnight_is_within_a_day() {
        // 2026-11-26T09:00:00Z → 15 h; exactly midnight → a whole day.
        assert_eq!(
            until_next_utc_midnight(now()),
            Duration::from_secs(15 * 3600)
        );
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_737_600);
        assert_eq!(until_next_utc_midnight(midnight), MAX_SERVER_WAIT);
    }

    /// Strings a server might plausibly send, and arbitrary ones.
    fn header_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[0-9]{15,40}",
            "[+-]?[0-9]{1,4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})",
        ]
    }

    proptest! {
        #[test]
        fn any_retry_after_is_none_or_bounded(value in header_text()) {
            let wait = parse_retry_after(&value, now());
            prop_assert!(wait.is_none_or(|w| w <= MAX_SERVER_WAIT));
        }

        #[test]
        fn any_rate_limit_reset_is_none_or_bounded(value in header_text()) {
            let wait = parse_rate_limit_reset(&value, now());
            prop_assert!(wait.is_none_or(|w| w <= MAX_SERVER_WAIT));
        }

        #[test]
        fn any_headers_give_none_or_a_bounded_wait(
            retry in header_text(),
            reset in header_text(),
            epoch in any::<u64>(),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in [("retry-after", &retry), ("x-ratelimit-reset", &reset)] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            // Any "now" a clock could report, too.
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch % (1 << 40));
            let wait = server_wait(&headers, now);
            prop_assert!(wait.is_none_or(|w| w <= MAX_SERVER_WAIT));
        }
    }
}
