//! STUB: replaced by the quarantine branch's control client.

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResumeError(String);

pub async fn request_resume(listen: std::net::SocketAddr) -> Result<String, ResumeError> {
    Err(ResumeError(format!("no control endpoint on {listen}")))
}

/// Where to reach a daemon listening on `listen`: an unspecified address
/// (0.0.0.0, ::) means this host.
pub fn local(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}
