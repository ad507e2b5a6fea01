//! The HTTP server both listeners run (`http.listen`, and the receiver's
//! `ingest.listen` and `ingest.probe_listen`): axum's router on hyper's
//! HTTP/1 connections, with limits `axum::serve` lacks.
//!
//! - `idle_timeout`: a connection with no request (just accepted, or
//!   answered) is closed when the first byte of the next one does not
//!   arrive in time.
//! - `header_read_timeout`: from that first byte, the request's headers
//!   must all arrive in time (a client sending them a byte at a time is
//!   closed).
//! - `request_timeout`: the handling of one request (its body included) is
//!   answered `408 Request Timeout` and the connection closed.
//! - `max_connections`: see [`registry`]; a full server closes its oldest
//!   connection that has been waiting for a request for a while, and
//!   answers with `Connection: close` (no keep-alive while full).
//!
//! At shutdown the server stops accepting, closes every connection that has
//! no request in flight, and gives the ones handling a request at most
//! [`SHUTDOWN_GRACE`] to answer: a client that never finishes cannot keep
//! the process alive.

mod conn;
pub mod limits;
mod registry;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A listener that could not be opened: the setting's key and address name
/// which one, so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {key} = {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{key} = {addr}: {source}")]
    LocalAddr {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `addr` (named by the setting `key`) and reads back the address it
/// got (port 0 becomes a free port).
pub async fn bind(
    addr: SocketAddr,
    key: &'static str,
) -> Result<(TcpListener, SocketAddr), ListenError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { key, addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ListenError::LocalAddr { key, addr, source })?;
    Ok((listener, local))
}
use tower::ServiceExt;

use conn::{ConnState, Phase, Watched};
use registry::{Entry, Registry};

/// Requests in flight at shutdown are given this long to be answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// hyper's read buffer per connection (the request head must fit): bounds
/// the memory a connection can pin (hyper's default is about 400 KiB).
const MAX_BUF: usize = 64 * 1024;

/// One listener's limits (config: `[http]` and `[ingest]`, see
/// [`limits::Keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown`; the task ends once every
/// connection is closed (at most [`SHUTDOWN_GRACE`] after `shutdown`).
pub fn spawn(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let registry = Registry::new(limits.max_connections);
        let tracker = TaskTracker::new();
        while let Some((stream, peer)) = accept(&listener, &registry, &shutdown).await {
            // Every place may have begun handling a request since `room`
            // returned: this one connection waits for one to finish.
            let entry = tokio::select! {
                _ = shutdown.cancelled() => break,
                entry = registry.admit_when_room() => entry,
            };
            let connection = Connection {
                entry,
                registry: Arc::clone(&registry),
                app: app.clone(),
                limits,
                peer,
            };
            tracker.spawn(connection.run(stream, shutdown.clone()));
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
    })
}

/// The next connection once there is room for it; `None` at shutdown.
async fn accept(
    listener: &TcpListener,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = async {
                registry.room().await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            // Out of file descriptors (EMFILE) or a connection reset
            // before it was taken: the listener itself is fine.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Connection {
    entry: Entry,
    registry: Arc<Registry>,
    app: Router,
    limits: Limits,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, stream: TcpStream, shutdown: CancellationToken) {
        let state = Arc::clone(&self.entry.state);
        let limits = self.limits;
        let io = TokioIo::new(Watched {
            inner: stream,
            state: Arc::clone(&state),
        });
        let service = {
            let (state, registry, app, peer) = (
                Arc::clone(&state),
                Arc::clone(&self.registry),
                self.app.clone(),
                self.peer,
            );
            hyper::service::service_fn(move |request| {
                let handling = Handling {
                    state: Arc::clone(&state),
                    registry: Arc::clone(&registry),
                    within: limits.request_timeout,
                };
                handling.answer(request, app.clone(), peer)
            })
        };
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            // hyper's clock starts when it waits for a request: a backstop
            // for ours, which start at the request's first byte.
            .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
            .max_buf_size(MAX_BUF)
            .serve_connection(io, service);
        tokio::pin!(connection);
        loop {
            let deadline = state.deadline(&limits);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = state.evict.cancelled() => return,
                _ = sleep_until(deadline) => {
                    if state.deadline(&limits).is_some_and(|d| d <= tokio::time::Instant::now()) {
                        tracing::debug!(peer = %self.peer, phase = ?state.phase(), "closing a connection that took too long");
                        return;
                    }
                }
                _ = state.changed() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if state.is_waiting() {
            return;
        }
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One request's handling: its phase, and its timeout.
struct Handling {
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    within: Duration,
}

impl Handling {
    async fn answer(
        self,
        request: Request<Incoming>,
        app: Router,
        peer: SocketAddr,
    ) -> Result<Response, Infallible> {
        self.state.set(Phase::Handling);
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut response = match tokio::time::timeout(self.within, app.oneshot(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => too_slow(self.within),
        };
        if self.registry.is_full() {
            // Make room by closing after this answer, which the client
            // reads, rather than later, while it may be reusing it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.state.set(Phase::KeepAlive);
        self.registry.freed();
        Ok(response)
    }
}

/// 408, and the connection is closed (the request's body is unread).
fn too_slow(within: Duration) -> Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request was not received and handled within {} s\n",
            within.as_secs_f32()
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
