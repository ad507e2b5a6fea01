//! One connection's phase, which its three clocks read: waiting for a
//! request (idle), receiving a request's headers, or handling a request.
//!
//! hyper starts its header clock as soon as it waits for the next request,
//! so on its own it cannot tell a quiet keep-alive connection from a client
//! sending its headers a byte at a time. The first byte of a request ends
//! the idle phase here ([`Watched`]), hyper's call of the service begins
//! handling, and the answer ends it.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Limits;

/// Headers begun and unfinished this long: closed first at the cap. Longer
/// than a client's pause between two segments of one request's headers.
pub const HALF_SENT_EVICTABLE_AFTER: Duration = Duration::from_millis(250);
/// Connected and silent this long: closed next at the cap.
pub const SILENT_EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// Kept alive after an answer and unused this long: closed last at the cap.
pub const KEPT_ALIVE_EVICTABLE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, not yet read from (a busy server may take a moment).
    New,
    /// Read from, no byte of a request yet.
    Idle,
    /// Answered, kept alive, no byte of the next request yet.
    KeepAlive,
    /// Some bytes of a request, not yet all of its headers.
    Headers,
    /// A request is being handled (its body read, its answer made).
    Handling,
}

/// What the accept loop, the connection's task and its IO share.
pub struct ConnState {
    /// Accept order: the oldest waiting connection is evicted first.
    pub seq: u64,
    phase: Mutex<(Phase, Instant)>,
    /// Wakes the connection's task to read its new deadline.
    changed: Notify,
    /// Cancelled to close the connection (evicted for a newer one).
    pub evict: CancellationToken,
}

impl ConnState {
    pub fn new(seq: u64) -> Self {
        Self {
            seq,
            phase: Mutex::new((Phase::New, Instant::now())),
            changed: Notify::new(),
            evict: CancellationToken::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.lock().0
    }

    /// Waiting for a request (idle or mid-headers).
    pub fn is_waiting(&self) -> bool {
        self.phase() != Phase::Handling
    }

    /// Where this one stands to be closed to make room at the cap (lower
    /// first), or `None` if it may not be. Only a connection that has waited
    /// long enough in its phase: half-sent headers (the slow client's mark)
    /// after [`HALF_SENT_EVICTABLE_AFTER`], a silent one after
    /// [`SILENT_EVICTABLE_AFTER`] (a client may take a moment to write once
    /// connected), a kept-alive one after [`KEPT_ALIVE_EVICTABLE_AFTER`] (a
    /// client may be reusing it right now).
    pub fn eviction_rank(&self, now: Instant) -> Option<(u8, u64)> {
        let (phase, since) = *self.lock();
        let (rank, after) = match phase {
            Phase::Headers => (0, HALF_SENT_EVICTABLE_AFTER),
            Phase::Idle => (1, SILENT_EVICTABLE_AFTER),
            Phase::KeepAlive => (2, KEPT_ALIVE_EVICTABLE_AFTER),
            Phase::New | Phase::Handling => return None,
        };
        (now.saturating_duration_since(since) >= after).then_some((rank, self.seq))
    }

    pub fn set(&self, phase: Phase) {
        *self.lock() = (phase, Instant::now());
        self.changed.notify_one();
    }

    /// When this phase's clock runs out; `None` while handling (the
    /// request's own timeout bounds that).
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let (phase, since) = *self.lock();
        match phase {
            Phase::New | Phase::Idle | Phase::KeepAlive => Some(since + limits.idle_timeout),
            Phase::Headers => Some(since + limits.header_read_timeout),
            Phase::Handling => None,
        }
    }

    /// Until the phase changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Instant)> {
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The socket, noting the first byte of each request.
pub struct Watched<S> {
    pub inner: S,
    pub state: std::sync::Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let phase = self.state.phase();
        if buf.filled().len() > before {
            if matches!(phase, Phase::New | Phase::Idle | Phase::KeepAlive) {
                self.state.set(Phase::Headers);
            }
        } else if phase == Phase::New {
            // Its clock for eviction starts once the server has looked.
            self.state.set(Phase::Idle);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
