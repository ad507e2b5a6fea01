//! Zoom's answers, classified once as SPEC's failure table says.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::wait;

/// Zoom's error code for an expired or invalid access token.
pub const CODE_INVALID_TOKEN: i64 = 124;

/// What kind of failure an answer is; decides retry, refresh or dead-letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429: wait (as told) and retry; slows every call to the account.
    RateLimited,
    /// 5xx, timeout, connection error: retry with backoff.
    Transient,
    /// 401 or code 124: refresh the token and retry once.
    Unauthorized,
    /// 403: a scope problem of the app, never the event's fault.
    Forbidden,
    /// The token endpoint refused the app's credentials.
    Credentials,
    /// 400, 404, other 4xx: the event cannot be applied as it is.
    Rejected,
    /// Not sent: the event was stopped (session lost, shutting down).
    Stopped,
}

/// One failed Zoom answer (or a failure to get one).
#[derive(Debug, Clone)]
pub struct ZoomError {
    pub kind: ErrorKind,
    /// `None` when no answer came (timeout, connection error).
    pub status: Option<u16>,
    /// Zoom's `code` from the JSON body.
    pub code: Option<i64>,
    /// Zoom's `message` from the body, or else a description (the raw body,
    /// or what went wrong without an answer).
    pub message: String,
    /// Whether `message` is Zoom's own `message` field.
    pub message_from_zoom: bool,
    /// What `Retry-After` / `X-RateLimit-Reset` asked for.
    pub server_wait: Option<Duration>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

/// Keeps dead-letter headers and log lines a sane size.
const MAX_MESSAGE_CHARS: usize = 512;

impl ZoomError {
    /// Classifies a non-success answer of the REST API.
    pub fn from_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
        let code = parsed.as_ref().and_then(|b| b.code);
        let zoom_message = parsed.and_then(|b| b.message);
        let message_from_zoom = zoom_message.is_some();
        let message = zoom_message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let kind = match status.as_u16() {
            429 => ErrorKind::RateLimited,
            401 => ErrorKind::Unauthorized,
            _ if code == Some(CODE_INVALID_TOKEN) => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            s if s >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Rejected,
        };
        let server_wait = (kind == ErrorKind::RateLimited || status.is_server_error())
            .then(|| wait::server_wait(headers, SystemTime::now()))
            .flatten();
        Self {
            kind,
            status: Some(status.as_u16()),
            code,
            message: truncate(message),
            message_from_zoom,
            server_wait,
        }
    }

    /// A failure described by the daemon, not by a Zoom error body.
    pub fn local(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            code: None,
            message: truncate(message.into()),
            message_from_zoom: false,
            server_wait: None,
        }
    }

    /// No answer at all: timeouts and connection errors are transient.
    pub fn from_transport(error: &reqwest::Error) -> Self {
        let what = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        // reqwest's Display carries the URL, never a header; its sources
        // say why (a name that does not resolve, a refused connection).
        Self::local(
            ErrorKind::Transient,
            None,
            format!("{what}: {}", with_causes(error)),
        )
    }

    /// As [`ZoomError::from_transport`] for a request to `url`, whose
    /// error carries no URL (it had a secret in its query): the message
    /// names the URL without its query or user info.
    pub fn from_transport_to(error: &reqwest::Error, url: &str) -> Self {
        let mut named = Self::from_transport(error);
        named.message = truncate(format!("{} ({})", named.message, safe_url(url)));
        named
    }
}

pub use zds_http_client::with_causes;

pub use zds_http_client::safe_url;

impl ZoomError {
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::RateLimited | ErrorKind::Transient)
    }

    /// 401/403/credentials: the daemon's problem, not the event's.
    pub fn is_auth(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unauthorized | ErrorKind::Forbidden | ErrorKind::Credentials
        )
    }
}

/// Zoom's message, one line, at most [`MAX_MESSAGE_CHARS`], with what a
/// terminal would act on escaped ([`zds_core::printable`]): it reaches logs,
/// `/readyz`, dead letters and the toolbox's output.
fn truncate(message: String) -> String {
    let one_line = message.trim().replace(['\n', '\r'], " ");
    let mut message = zds_core::printable::printable(&one_line);
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
    }
    message
}

impl ZoomError {
    /// The answer in the domain's terms, for a dead letter.
    pub fn answer(&self) -> zds_core::outcome::ZoomAnswer {
        zds_core::outcome::ZoomAnswer {
            status: self.status,
            code: self.code,
            message: self.message.clone(),
            message_from_zoom: self.message_from_zoom,
        }
    }
}

/// Shown as the domain's [`zds_core::outcome::ZoomAnswer`] is: one format.
/// No `source`: the cause (a reqwest error) is already in `message`.
impl std::error::Error for ZoomError {}

impl fmt::Display for ZoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.answer().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zoom_error_is_a_std_error_so_callers_can_chain_it() {
        fn chain(e: &dyn std::error::Error) -> String {
            e.to_string()
        }
        let e = ZoomError::local(ErrorKind::Rejected, Some(400), "bad");
        assert!(chain(&e).contains("bad"));
    }
    use reqwest::header::HeaderValue;

    #[test]
    fn a_url_in_a_message_keeps_no_user_info_or_query() {
        assert_eq!(
            safe_url("https://u:pw@zoom.example/oauth/token?account_id=acct#x"),
            "https://zoom.example/oauth/token"
        );
        assert_eq!(safe_url("not a url"), "(not a URL)");
        // Found by the review: without a scheme, `user:password@host`
        // parses as scheme `user` with the password in its path.
        for hostless in [
            "guest:S3CRET@host",
            "mailto:S3CRET@example.com",
            "data:S3CRET",
        ] {
            assert_eq!(safe_url(hostless), "(not a URL)", "{hostless}");
        }
    }

    #[tokio::test]
    async fn a_transport_error_says_why_and_where() {
        // Port 9 of loopback (discard) has no listener here: refused.
        let error = reqwest::Client::new()
            .post("http://127.0.0.1:9/oauth/token")
            .send()
            .await
            .unwrap_err();
        let named = ZoomError::from_transport_to(
            &error.without_url(),
            "http://127.0.0.1:9/oauth/token?account_id=a",
        );
        assert!(
            named.message.contains("(http://127.0.0.1:9/oauth/token)"),
            "{}",
            named.message
        );
        assert!(
            named.message.to_lowercase().contains("connect"),
            "{}",
            named.message
        );
        assert!(!named.message.contains("account_id"), "{}", named.message);
    }

    fn classify(status: u16, body: &str) -> ZoomError {
        ZoomError::from_answer(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn follows_the_failure_table() {
        assert_eq!(classify(429, "").kind, ErrorKind::RateLimited);
        for status in [500, 502, 503, 504] {
            assert_eq!(classify(status, "").kind, ErrorKind::Transient);
        }
        assert_eq!(classify(401, "").kind, ErrorKind::Unauthorized);
        assert_eq!(
            classify(400, r#"{"code":124,"message":"Invalid access token."}"#).kind,
            ErrorKind::Unauthorized
        );
        assert_eq!(classify(403, "").kind, ErrorKind::Forbidden);
        for status in [400, 404, 409, 422] {
            assert_eq!(classify(status, "").kind, ErrorKind::Rejected);
        }
    }

    #[test]
    fn reads_zoom_code_and_message() {
        let e = classify(404, r#"{"code":4130,"message":"Group does not exist: x."}"#);
        assert_eq!((e.status, e.code), (Some(404), Some(4130)));
        assert_eq!(e.message, "Group does not exist: x.");
        assert!(e.message_from_zoom);
        let e = classify(502, "<html>bad gateway</html>");
        assert_eq!(e.code, None);
        assert_eq!(e.message, "<html>bad gateway</html>");
        assert!(!e.message_from_zoom);
        assert_eq!(
            classify(400, &"x".repeat(5000)).message.len(),
            MAX_MESSAGE_CHARS
        );
    }

    #[test]
    fn a_429_carries_the_server_wait() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let e = ZoomError::from_answer(StatusCode::TOO_MANY_REQUESTS, &headers, b"{}");
        assert_eq!(e.server_wait, Some(Duration::from_secs(3)));
        assert!(e.is_retryable());
    }

    /// Found by the review: Zoom's message reaches logs, `/readyz`, dead
    /// letters and the toolbox's output, so what a terminal acts on is
    /// escaped once, here.
    #[test]
    fn zoom_messages_lose_what_a_terminal_acts_on() {
        let message =
            truncate("bad group \u{1b}]0;PWNED\u{7}\u{1b}[2J\u{9b}31m\u{202e}x\ny".into());
        assert!(
            !message.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{message:?}"
        );
        assert!(
            message.starts_with("bad group \\u{1b}]0;PWNED"),
            "{message:?}"
        );
    }
}
