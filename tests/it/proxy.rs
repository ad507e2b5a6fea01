//! A TCP proxy between the daemon and the broker whose connections a test
//! can cut, as a network failure or a broker restart would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    current: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    accepted: Arc<AtomicUsize>,
    /// Every connection attempt, refused ones (while blocked) included.
    attempts: Arc<AtomicUsize>,
    blocked: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let current = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let accepted = Arc::new(AtomicUsize::new(0));
        let blocked = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let tried = Arc::clone(&attempts);
        let (conns, stopped, count, refuse) = (
            Arc::clone(&current),
            stop.clone(),
            Arc::clone(&accepted),
            Arc::clone(&blocked),
        );
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                tried.fetch_add(1, Ordering::Relaxed);
                if refuse.load(Ordering::Relaxed) {
                    drop(inbound);
                    continue;
                }
                count.fetch_add(1, Ordering::Relaxed);
                let cut = conns.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.cancelled() => {}
                    }
                    // Dropping both streams resets the connection.
                });
            }
        });
        Self {
            addr,
            current,
            stop,
            accepted,
            attempts,
            blocked,
        }
    }

    /// Connection attempts so far, refused ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::Relaxed)
    }

    /// While blocked, new connections are closed at once (the broker is
    /// "down"); open ones are not touched (use [`Proxy::cut`]).
    pub fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Connections passed to the broker so far (each reconnection adds one).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Drops every open connection; new ones are accepted again.
    pub fn cut(&self) {
        let mut current = self.current.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.current.lock().unwrap().cancel();
    }
}

/// The broker's address in an `amqp://` URL.
pub fn broker_addr(amqp_url: &str) -> SocketAddr {
    let url = url::Url::parse(amqp_url).expect("AMQP URL");
    let host = url.host_str().expect("host").to_owned();
    let port = url.port().unwrap_or(5672);
    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .expect("resolve broker")
        .next()
        .expect("broker address")
}

/// The same URL, pointed at `via`.
pub fn url_via(amqp_url: &str, via: SocketAddr) -> String {
    let mut url = url::Url::parse(amqp_url).expect("AMQP URL");
    url.set_host(Some(&via.ip().to_string())).expect("set host");
    url.set_port(Some(via.port())).expect("set port");
    url.to_string()
}
