//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), pure:
//! no clock, no I/O, so every rule is unit-tested here.
//!
//! Signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, the MAC
//! is HMAC-SHA256 with the base64-decoded bytes after `whsec_`, and
//! `webhook-signature` holds space-separated `v1,<base64>` entries. Any entry
//! matching any configured secret passes (several secrets during a
//! rotation). The comparison is `Mac::verify_slice`: constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a timestamp may be from now, either way: bounds replays of a
/// captured request, and tolerates clock skew.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The HMAC keys, decoded once at start-up. `Debug` never shows them.
#[derive(Clone)]
pub struct Secrets(Vec<Vec<u8>>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets([{} redacted])", self.0.len())
    }
}

/// Why a secret value was refused (never quotes the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("is not set")]
    Missing,
    #[error("entry {0} does not start with whsec_")]
    Prefix(usize),
    #[error("entry {0} is not base64 after whsec_ (or is empty)")]
    Base64(usize),
}

impl Secrets {
    /// One or more space-separated `whsec_<base64>` values.
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for (n, entry) in value.split_whitespace().enumerate() {
            let encoded = entry
                .strip_prefix("whsec_")
                .ok_or(SecretError::Prefix(n + 1))?;
            let key = STANDARD
                .decode(encoded)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or(SecretError::Base64(n + 1))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(SecretError::Missing);
        }
        Ok(Self(keys))
    }
}

/// Why a request's signature does not pass: each is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not unix seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes from now")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// The three headers as received (`None` when absent).
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks `body` (the raw bytes) against the headers at time `now` (unix
/// seconds).
pub fn verify(
    secrets: &Secrets,
    headers: Headers<'_>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let id = headers
        .id
        .ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let timestamp = headers
        .timestamp
        .ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signature = headers
        .signature
        .ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(sent) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    // A header of thousands of entries must not cost thousands of hashes of
    // the body: at most MAX_SIGNATURES entries are looked at, only those of
    // an HMAC-SHA256's length, and the body is hashed once per secret.
    let candidates: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .take(MAX_SIGNATURES)
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter(|tag| tag.len() == 32)
        .collect();
    for key in &secrets.0 {
        let expected = mac(key, id, timestamp, body);
        for candidate in &candidates {
            if expected.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// Signatures one request may carry (a rotation needs two or three).
const MAX_SIGNATURES: usize = 16;

/// The `v1,<base64>` entry for a request (for senders and tests).
pub fn sign(secrets: &Secrets, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = secrets.0.first().map(Vec::as_slice).unwrap_or_default();
    let tag = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this never fails.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NEW: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"event_id":"e1","email":"a@b.c","new_department":"Sales"}"#;

    fn secrets(value: &str) -> Secrets {
        Secrets::parse(value).unwrap()
    }

    /// The Standard Webhooks reference libraries' own test vectors
    /// (`fixtures/vendor/standard-webhooks/vectors.json`, each naming its
    /// file): every vector's verdict is ours, except where the fixture says
    /// `project_valid` (what the libraries accept and we deliberately do
    /// not: a secret without `whsec_`, an unpadded one, a timestamp written
    /// with a leading zero).
    #[test]
    fn the_standard_webhooks_test_vectors_pass() {
        let fixture = zds_vendor_fixtures::Fixture::load("standard-webhooks/vectors.json");
        let vectors = fixture.rest["vectors"].as_array().expect("vectors");
        assert!(vectors.len() >= 20, "{}", vectors.len());
        let mut valid = 0;
        for v in vectors {
            let name = v["name"].as_str().expect("name");
            let expected = v
                .get("project_valid")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or_else(|| v["valid"].as_bool().expect("valid"));
            let secret = v["secret"].as_str().expect("secret");
            let timestamp = v["timestamp"].as_i64().expect("timestamp");
            let header = v
                .get("timestamp_header")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| timestamp.to_string(), str::to_owned);
            let verdict = Secrets::parse(secret).is_ok_and(|secrets| {
                let headers = Headers {
                    id: v["id"].as_str(),
                    timestamp: Some(&header),
                    signature: v["signature_header"].as_str(),
                };
                let payload = v["payload"].as_str().expect("payload").as_bytes();
                verify(&secrets, headers, payload, timestamp).is_ok()
            });
            assert_eq!(verdict, expected, "vector {name}");
            valid += usize::from(verdict);
        }
        assert!(valid >= 6, "the valid vectors are reached: {valid}");
        // The reference vector, signed by us, is the libraries' header.
        let reference = &vectors[0];
        assert_eq!(reference["name"], "reference");
        let ours = sign(
            &secrets(reference["secret"].as_str().unwrap()),
            reference["id"].as_str().unwrap(),
            &reference["timestamp"].to_string(),
            reference["payload"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(ours, reference["signature_header"].as_str().unwrap());
    }

    fn check(
        secrets: &Secrets,
        id: &str,
        ts: &str,
        sig: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let headers = Headers {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        };
        verify(secrets, headers, body, NOW)
    }

    #[test]
    fn a_good_signature_passes() {
        let s = secrets(OLD);
        let sig = sign(&s, "msg_1", "1700000000", BODY);
        assert_eq!(check(&s, "msg_1", "1700000000", &sig, BODY), Ok(()));
    }

    #[test]
    fn the_standard_webhooks_reference_vector_passes() {
        // From the Standard Webhooks reference libraries' tests.
        let s = secrets(OLD);
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let headers = Headers {
            id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            timestamp: Some("1614265330"),
            signature: Some(sig),
        };
        assert_eq!(verify(&s, headers, body, 1_614_265_330), Ok(()));
    }

    #[test]
    fn any_changed_byte_fails() {
        let s = secrets(OLD);
        let sig = sign(&s, "msg_1", "1700000000", BODY);
        for i in 0..BODY.len() {
            let mut body = BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(
                check(&s, "msg_1", "1700000000", &sig, &body),
                Err(SignatureError::NoMatch),
                "body byte {i}"
            );
        }
        assert_eq!(
            check(&s, "msg_2", "1700000000", &sig, BODY),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(&s, "msg_1", "1700000001", &sig, BODY),
            Err(SignatureError::NoMatch)
        );
        let mut tampered = sig.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            check(&s, "msg_1", "1700000000", &tampered, BODY),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stale_or_future_timestamps_fail() {
        let s = secrets(OLD);
        for ts in [NOW - TOLERANCE_SECS - 1, NOW + TOLERANCE_SECS + 1] {
            let ts = ts.to_string();
            let sig = sign(&s, "msg_1", &ts, BODY);
            assert_eq!(
                check(&s, "msg_1", &ts, &sig, BODY),
                Err(SignatureError::Stale),
                "{ts}"
            );
        }
        for ts in [NOW - TOLERANCE_SECS, NOW + TOLERANCE_SECS] {
            let ts = ts.to_string();
            let sig = sign(&s, "msg_1", &ts, BODY);
            assert_eq!(check(&s, "msg_1", &ts, &sig, BODY), Ok(()), "{ts}");
        }
        let sig = sign(&s, "msg_1", "soon", BODY);
        assert_eq!(
            check(&s, "msg_1", "soon", &sig, BODY),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn missing_headers_fail() {
        let s = secrets(OLD);
        let sig = sign(&s, "msg_1", "1700000000", BODY);
        let full = Headers {
            id: Some("msg_1"),
            timestamp: Some("1700000000"),
            signature: Some(&sig),
        };
        let cases = [
            (Headers { id: None, ..full }, "webhook-id"),
            (
                Headers {
                    timestamp: None,
                    ..full
                },
                "webhook-timestamp",
            ),
            (
                Headers {
                    signature: None,
                    ..full
                },
                "webhook-signature",
            ),
        ];
        for (headers, name) in cases {
            assert_eq!(
                verify(&s, headers, BODY, NOW),
                Err(SignatureError::MissingHeader(name))
            );
        }
        assert_eq!(
            check(&s, "msg_1", "1700000000", "", BODY),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_rotated_secret_accepts_either() {
        let both = secrets(&format!("{OLD} {NEW}"));
        for one in [OLD, NEW] {
            let sig = sign(&secrets(one), "msg_1", "1700000000", BODY);
            assert_eq!(
                check(&both, "msg_1", "1700000000", &sig, BODY),
                Ok(()),
                "{one}"
            );
        }
        let other = sign(&secrets("whsec_b3RoZXI="), "msg_1", "1700000000", BODY);
        assert_eq!(
            check(&both, "msg_1", "1700000000", &other, BODY),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let s = secrets(OLD);
        let good = sign(&s, "msg_1", "1700000000", BODY);
        let wrong = sign(&secrets(NEW), "msg_1", "1700000000", BODY);
        let header = format!("v2,abc {wrong} v1,not-base64! {good}");
        assert_eq!(check(&s, "msg_1", "1700000000", &header, BODY), Ok(()));
        assert_eq!(
            check(&s, "msg_1", "1700000000", &format!("{wrong} v1,"), BODY),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert_eq!(Secrets::parse("").unwrap_err(), SecretError::Missing);
        assert_eq!(Secrets::parse("  ").unwrap_err(), SecretError::Missing);
        assert_eq!(Secrets::parse("abc").unwrap_err(), SecretError::Prefix(1));
        assert_eq!(
            Secrets::parse(&format!("{OLD} whsec_!!")).unwrap_err(),
            SecretError::Base64(2)
        );
        assert_eq!(
            Secrets::parse("whsec_").unwrap_err(),
            SecretError::Base64(1)
        );
        assert!(!format!("{:?}", secrets(OLD)).contains("MfKQ"));
    }

    #[test]
    fn only_the_first_signatures_are_looked_at() {
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let good = sign(&secrets, "msg_1", "1000", b"{}");
        let padding = vec!["v1,AAAA"; MAX_SIGNATURES].join(" ");
        fn headers(signature: &str) -> Headers<'_> {
            Headers {
                id: Some("msg_1"),
                timestamp: Some("1000"),
                signature: Some(signature),
            }
        }
        let late = format!("{padding} {good}");
        assert!(verify(&secrets, headers(&late), b"{}", 1000).is_err());
        let early = format!("{good} {padding}");
        assert!(verify(&secrets, headers(&early), b"{}", 1000).is_ok());
    }

    /// One change to a byte string: a byte replaced, inserted or deleted.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Edit {
        Replace(Index, u8),
        Insert(Index, u8),
        Delete(Index),
    }

    pub(crate) fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
            (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
            any::<Index>().prop_map(Edit::Delete),
        ]
    }

    /// Header values stay text: edits of them write ASCII bytes only.
    pub(crate) const ASCII: u8 = 0x7f;
    pub(crate) const ANY_BYTE: u8 = 0xff;

    impl Edit {
        /// The edited copy, writing only bytes within `mask`. It always
        /// differs from `bytes`: a byte replaced by itself becomes the next
        /// one, and a deletion from nothing inserts instead.
        pub(crate) fn apply(self, bytes: &[u8], mask: u8) -> Vec<u8> {
            let mut out = bytes.to_vec();
            match self {
                Edit::Replace(at, b) if !out.is_empty() => {
                    let i = at.index(out.len());
                    let b = b & mask;
                    out[i] = if b == out[i] {
                        b.wrapping_add(1) & mask
                    } else {
                        b
                    };
                }
                Edit::Delete(at) if !out.is_empty() => {
                    out.remove(at.index(out.len()));
                }
                Edit::Insert(at, b) => out.insert(at.index(out.len() + 1), b & mask),
                Edit::Replace(_, b) => out.push(b & mask),
                Edit::Delete(_) => out.push(b'0'),
            }
            out
        }

        pub(crate) fn apply_text(self, text: &str) -> String {
            String::from_utf8(self.apply(text.as_bytes(), ASCII)).expect("ASCII edits of ASCII")
        }
    }

    /// A request to sign: any key, id and body, a timestamp within the
    /// tolerance.
    fn signed_request() -> impl Strategy<Value = (Secrets, String, String, Vec<u8>)> {
        (
            prop::collection::vec(any::<u8>(), 1..64),
            "[ -~]{1,40}",
            -TOLERANCE_SECS..=TOLERANCE_SECS,
            prop::collection::vec(any::<u8>(), 0..256),
        )
            .prop_map(|(key, id, skew, body)| {
                let secrets = Secrets::parse(&format!("whsec_{}", STANDARD.encode(key))).unwrap();
                (secrets, id, (NOW + skew).to_string(), body)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The signature `sign` makes passes, and one changed byte anywhere
        /// in the body, the id or the timestamp makes it fail. Of the
        /// signature header's changes only a space added at either end
        /// passes: the entries are space separated, so that adds an empty
        /// entry beside the same signature.
        #[test]
        fn any_changed_byte_of_a_signed_request_fails(
            (secrets, id, ts, body) in signed_request(),
            edit in edit(),
        ) {
            let sig = sign(&secrets, &id, &ts, &body);
            let verify = |id: &str, ts: &str, sig: &str, body: &[u8]| {
                let headers = Headers { id: Some(id), timestamp: Some(ts), signature: Some(sig) };
                verify(&secrets, headers, body, NOW)
            };
            prop_assert_eq!(verify(&id, &ts, &sig, &body), Ok(()));
            let body_changed = edit.apply(&body, ANY_BYTE);
            prop_assert_eq!(verify(&id, &ts, &sig, &body_changed), Err(SignatureError::NoMatch));
            let id_changed = edit.apply_text(&id);
            prop_assert_eq!(verify(&id_changed, &ts, &sig, &body), Err(SignatureError::NoMatch));
            let ts_changed = edit.apply_text(&ts);
            prop_assert!(verify(&id, &ts_changed, &sig, &body).is_err(), "{:?}", ts_changed);
            let sig_changed = edit.apply_text(&sig);
            let padded = sig_changed.strip_prefix(' ').or(sig_changed.strip_suffix(' '));
            if padded == Some(sig.as_str()) {
                prop_assert_eq!(verify(&id, &ts, &sig_changed, &body), Ok(()));
            } else {
                prop_assert_eq!(
                    verify(&id, &ts, &sig_changed, &body),
                    Err(SignatureError::NoMatch),
                    "{:?}", sig_changed
                );
            }
        }
    }
}
