//! BambooHR webhook signatures, pure: no clock, no I/O.
//!
//! `X-BambooHR-Signature` is HMAC-SHA256, in hex, over the raw body bytes
//! followed by the bytes of `X-BambooHR-Timestamp` (unix seconds). The key
//! is the text of `BAMBOOHR_WEBHOOK_KEY`, as bytes. Hex is decoded and the
//! bytes compared with `Mac::verify_slice` (constant time); upper-case hex
//! is accepted, since it decodes to the same bytes and so proves the same.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::signature::TOLERANCE_SECS;

type HmacSha256 = Hmac<Sha256>;

/// The webhook's HMAC key. `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookKey(Vec<u8>);

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey(redacted)")
    }
}

impl WebhookKey {
    /// `None` for an empty or blank value (a key nobody could have meant).
    pub fn new(text: &str) -> Option<Self> {
        (!text.trim().is_empty()).then(|| Self(text.as_bytes().to_vec()))
    }
}

/// Why a request's signature does not pass: each is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("X-BambooHR-Timestamp is not unix seconds")]
    BadTimestamp,
    #[error("X-BambooHR-Timestamp is more than 5 minutes from now")]
    Stale,
    #[error("X-BambooHR-Signature is not hex")]
    NotHex,
    #[error("the signature does not match")]
    NoMatch,
}

/// The two headers as received (`None` when absent).
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks `body` (the raw bytes) at time `now` (unix seconds); the signed
/// timestamp when it passes.
pub fn verify(
    key: &WebhookKey,
    headers: Headers<'_>,
    body: &[u8],
    now: i64,
) -> Result<i64, SignatureError> {
    let timestamp = headers
        .timestamp
        .ok_or(SignatureError::MissingHeader("X-BambooHR-Timestamp"))?;
    let signature = headers
        .signature
        .ok_or(SignatureError::MissingHeader("X-BambooHR-Signature"))?;
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(sent) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let tag = decode_hex(signature.trim()).ok_or(SignatureError::NotHex)?;
    mac(key, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::NoMatch)?;
    Ok(sent)
}

/// The lower-case hex signature of a request (for tests and relays).
pub fn sign(key: &WebhookKey, timestamp: &str, body: &[u8]) -> String {
    let tag = mac(key, timestamp, body).finalize().into_bytes();
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(key: &WebhookKey, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this never fails.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// Hex (either case) to bytes; `None` for an odd length or a non-hex digit.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::{ANY_BYTE, edit};
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;
    const TS: &str = "1700000000";
    const BODY: &[u8] =
        br#"{"type":"employee.updated","data":{"id":"42","changedFields":["department"]}}"#;

    fn key() -> WebhookKey {
        WebhookKey::new("bamboo-secret").unwrap()
    }

    fn check(ts: &str, sig: &str, body: &[u8]) -> Result<i64, SignatureError> {
        let headers = Headers {
            timestamp: Some(ts),
            signature: Some(sig),
        };
        verify(&key(), headers, body, NOW)
    }

    #[test]
    fn a_good_signature_passes() {
        let sig = sign(&key(), TS, BODY);
        assert_eq!(sig.len(), 64);
        assert_eq!(check(TS, &sig, BODY), Ok(NOW));
    }

    #[test]
    fn a_known_vector_passes() {
        // printf '%s%s' 'body' '1700000000' | openssl dgst -sha256 -hmac 'bamboo-secret'
        let sig = sign(&key(), TS, b"body");
        let mut expected = <HmacSha256 as Mac>::new_from_slice(b"bamboo-secret").unwrap();
        expected.update(b"body1700000000");
        let expected: String = expected
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, expected);
    }

    #[test]
    fn any_changed_byte_fails() {
        let sig = sign(&key(), TS, BODY);
        for i in 0..BODY.len() {
            let mut body = BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(check(TS, &sig, &body), Err(SignatureError::NoMatch), "{i}");
        }
        assert_eq!(
            check("1700000001", &sig, BODY),
            Err(SignatureError::NoMatch)
        );
        for i in 0..sig.len() {
            let mut changed = sig.clone().into_bytes();
            changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(changed).unwrap();
            assert_eq!(
                check(TS, &changed, BODY),
                Err(SignatureError::NoMatch),
                "{i}"
            );
        }
        let other = sign(&WebhookKey::new("other").unwrap(), TS, BODY);
        assert_eq!(check(TS, &other, BODY), Err(SignatureError::NoMatch));
    }

    #[test]
    fn stale_or_future_timestamps_fail() {
        for ts in [NOW - TOLERANCE_SECS - 1, NOW + TOLERANCE_SECS + 1] {
            let ts = ts.to_string();
            let sig = sign(&key(), &ts, BODY);
            assert_eq!(check(&ts, &sig, BODY), Err(SignatureError::Stale), "{ts}");
        }
        let ts = (NOW - TOLERANCE_SECS).to_string();
        let sig = sign(&key(), &ts, BODY);
        assert!(check(&ts, &sig, BODY).is_ok());
        let sig = sign(&key(), "soon", BODY);
        assert_eq!(check("soon", &sig, BODY), Err(SignatureError::BadTimestamp));
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let sig = sign(&key(), TS, BODY).to_uppercase();
        assert_eq!(check(TS, &sig, BODY), Ok(NOW));
    }

    #[test]
    fn missing_or_malformed_signatures_fail() {
        let sig = sign(&key(), TS, BODY);
        let none = Headers {
            timestamp: Some(TS),
            signature: None,
        };
        assert_eq!(
            verify(&key(), none, BODY, NOW),
            Err(SignatureError::MissingHeader("X-BambooHR-Signature"))
        );
        let none = Headers {
            timestamp: None,
            signature: Some(&sig),
        };
        assert_eq!(
            verify(&key(), none, BODY, NOW),
            Err(SignatureError::MissingHeader("X-BambooHR-Timestamp"))
        );
        assert_eq!(check(TS, "", BODY), Err(SignatureError::NoMatch));
        assert_eq!(check(TS, &sig[1..], BODY), Err(SignatureError::NotHex));
        assert_eq!(check(TS, "zz", BODY), Err(SignatureError::NotHex));
        assert_eq!(check(TS, &sig[..62], BODY), Err(SignatureError::NoMatch));
    }

    #[test]
    fn keys_are_text_and_redacted() {
        assert!(WebhookKey::new("  ").is_none());
        assert!(!format!("{:?}", key()).contains("bamboo"));
    }

    fn any_key() -> impl Strategy<Value = WebhookKey> {
        "[ -~]{1,40}".prop_filter_map("blank key", |k| WebhookKey::new(&k))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any key, body and in-tolerance timestamp: the signature `sign`
        /// makes passes, and one changed byte anywhere in the body or the
        /// timestamp makes it fail. Of the signature's changes, only those
        /// that decode to the same bytes pass: a hex letter's case
        /// (documented above) and white space around the value (HTTP drops
        /// it anyway); any other fails.
        #[test]
        fn any_changed_byte_of_a_signed_request_fails(
            key in any_key(),
            skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
            body in prop::collection::vec(any::<u8>(), 0..256),
            edit in edit(),
        ) {
            let ts = (NOW + skew).to_string();
            let sig = sign(&key, &ts, &body);
            let verify = |ts: &str, sig: &str, body: &[u8]| {
                let headers = Headers { timestamp: Some(ts), signature: Some(sig) };
                verify(&key, headers, body, NOW)
            };
            prop_assert_eq!(verify(&ts, &sig, &body), Ok(NOW + skew));
            let body_changed = edit.apply(&body, ANY_BYTE);
            prop_assert_eq!(verify(&ts, &sig, &body_changed), Err(SignatureError::NoMatch));
            let ts_changed = edit.apply_text(&ts);
            prop_assert!(verify(&ts_changed, &sig, &body).is_err(), "{:?}", ts_changed);
            let sig_changed = edit.apply_text(&sig);
            let result = verify(&ts, &sig_changed, &body);
            if sig_changed.trim().eq_ignore_ascii_case(&sig) {
                prop_assert_eq!(result, Ok(NOW + skew));
            } else {
                prop_assert!(result.is_err(), "{:?}", sig_changed);
            }
        }
    }
}
