//! Reads a Zoom answer's body with a size cap.
//!
//! Zoom's answers are small JSON documents; a misbehaving server or proxy
//! must not make a worker buffer an unbounded body in memory.

use reqwest::StatusCode;

use super::error::{ErrorKind, ZoomError};

/// The most of one body read into memory. Zoom's largest answers (a user
/// record, an error) are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A body read up to a cap.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    /// The answer went on past the cap; `bytes` holds its first part only.
    pub truncated: bool,
}

impl Body {
    /// A success answer's body, unless it went past the cap: then it is not
    /// what Zoom's API answers, and counts as a transient server failure.
    pub fn into_success(self, status: StatusCode) -> Result<Vec<u8>, ZoomError> {
        if self.truncated {
            return Err(ZoomError::local(
                ErrorKind::Transient,
                Some(status.as_u16()),
                format!("answer body over {MAX_BODY_BYTES} bytes; not read"),
            ));
        }
        Ok(self.bytes)
    }
}

/// Reads chunks until the body ends or passes `cap`; past the cap it stops
/// reading (the rest is dropped with the response).
pub async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Body, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(bytes.len());
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Body {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    async fn read(body: Vec<u8>, cap: usize) -> Body {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_body_bytes(body))
            .mount(&server)
            .await;
        let mut response = reqwest::get(server.uri()).await.unwrap();
        read_capped(&mut response, cap).await.unwrap()
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let body = read(vec![b'x'; 1000], 1000).await;
        assert_eq!((body.bytes.len(), body.truncated), (1000, false));
    }

    #[tokio::test]
    async fn a_body_past_the_cap_is_cut_at_the_cap() {
        let body = read(vec![b'x'; 3 * MAX_BODY_BYTES], MAX_BODY_BYTES).await;
        assert_eq!((body.bytes.len(), body.truncated), (MAX_BODY_BYTES, true));
    }
}
