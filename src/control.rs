//! The client side of the control endpoint: `zoom-dept-sync resume` asks the
//! running daemon, over its HTTP port, to lift a quarantine.
//!
//! The daemon accepts `POST /resume` only from a loopback peer, so the client
//! always calls it on this host, whatever interface `http.listen` names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long the daemon may take to answer: it only flips a flag.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why `resume` did not lift a quarantine.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// No daemon answered (not running, another port, a firewall).
    #[error("cannot reach the daemon at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon was consuming: there was nothing to resume.
    #[error("the daemon was not quarantined: {0}")]
    NotQuarantined(String),
    /// Any other answer (403 when the call did not come from this host, or
    /// looked like a browser's).
    #[error("the daemon answered HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

/// Asks the daemon listening on `listen` (its `http.listen`) to lift its
/// quarantine. `Ok` carries the daemon's answer, e.g. what it resumed from.
pub async fn request_resume(listen: SocketAddr) -> Result<String, ResumeError> {
    post_control(listen, "resume").await
}

/// Asks the daemon to stop holding after `brake refuse` moved the held
/// burst away, without the release window `resume` opens.
pub async fn request_brake_clear(listen: SocketAddr) -> Result<String, ResumeError> {
    post_control(listen, "brake/clear").await
}

async fn post_control(listen: SocketAddr, path: &str) -> Result<String, ResumeError> {
    let url = format!("http://{}/{path}", local_address(listen));
    let unreachable = |source| ResumeError::Unreachable {
        url: url.clone(),
        source,
    };
    // No proxy: the endpoint answers only local peers, and an HTTP_PROXY
    // set for other tools must not carry the call off this host.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .map_err(unreachable)?;
    // JSON and no `Origin`: the daemon refuses anything a web page could
    // send (see `http::control_allowed`).
    let response = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    let body = body.trim().to_owned();
    match status {
        200 => Ok(body),
        409 => Err(ResumeError::NotQuarantined(body)),
        status => Err(ResumeError::Refused { status, body }),
    }
}

/// The daemon's `/readyz` (status and text), if one answers at `listen`.
pub async fn readiness(listen: SocketAddr) -> Option<(u16, String)> {
    try_readiness(listen).await.ok()
}

/// No answer from the daemon's `/readyz`, with the URL that was called.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the daemon at {url}: {why}")]
pub struct ReadyzError {
    pub url: String,
    why: String,
}

/// As [`readiness`], saying where and why there was no answer.
pub async fn try_readiness(listen: SocketAddr) -> Result<(u16, String), ReadyzError> {
    let url = format!("http://{}/readyz", local_address(listen));
    let failed = |e: reqwest::Error| ReadyzError {
        url: url.clone(),
        why: zds_http_client::with_causes(&e.without_url()),
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .map_err(failed)?;
    let response = client.get(&url).send().await.map_err(failed)?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// Whether the daemon's `/readyz` (as [`readiness`] returns it) says the
/// brake holds: then its consumer is cancelled, and the toolbox may read or
/// move the held events without taking deliveries from it.
pub fn brake_engaged(readyz: Option<&(u16, String)>) -> bool {
    readyz.is_some_and(|(code, text)| {
        *code == 503 && text.trim_start().starts_with(crate::brake::ENGAGED_TEXT)
    })
}

/// Where to call a daemon listening on `listen`: an unspecified address
/// (`0.0.0.0`, `::`) means every interface, so loopback reaches it.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_called_on_loopback() {
        let cases = [
            ("0.0.0.0:9464", "127.0.0.1:9464"),
            ("[::]:9464", "[::1]:9464"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("10.1.2.3:9464", "10.1.2.3:9464"),
        ];
        for (listen, called) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(local_address(listen).to_string(), called);
        }
    }
}
