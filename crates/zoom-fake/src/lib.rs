//! `zoom-fake`: a stateful stand-in for Zoom's group-member APIs, for demos
//! and benchmarks of the daemon without a Zoom account. It keeps groups and
//! users in memory, answers with Zoom's bodies and error codes, enforces
//! Zoom's per-account rate limits by category, and injects latency and
//! faults from its seed. The library form runs it in-process (tests, a
//! benchmark); `src/bin/zoom-fake.rs` is the same thing as a program.

mod account;
mod auth;
mod counters;
mod endpoint;
mod faults;
mod limits;
mod paging;
mod requests;
mod routes;
mod seed;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use account::FakeState;
pub use counters::{Counters, Counts};
pub use faults::{FaultsConfig, ScriptedFault};
pub use limits::{Category, Limits, PerCategory};
pub use requests::{KEPT as REQUESTS_KEPT, ReceivedRequest};
pub use seed::{AuthConfig, FakeConfig, SeedError, SeedGroup, SeedProblem, SeedUser, TomlError};
pub use state::{GroupState, UserState};

use account::Account;
use faults::Lasting;
use requests::RequestLog;

/// How long [`FakeHandle::shutdown`] lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What every handler shares. One std mutex: each call holds it for a few
/// map operations and never across an await.
struct Shared {
    account: Mutex<Account>,
    /// Apart from the account: recording a request never waits on a
    /// decision, nor a decision on the log.
    requests: Mutex<RequestLog>,
    shutdown: CancellationToken,
}

impl Shared {
    /// A panic in another handler must not take the fake down with it; the
    /// account is never left half-changed by the operations that hold it.
    fn lock(&self) -> MutexGuard<'_, Account> {
        self.account.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, RequestLog> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why the fake could not start.
#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("invalid seed: {0}")]
    Seed(#[from] SeedProblem),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts the fake on `listen` (port 0 picks a free one) and serves until
/// [`FakeHandle::shutdown`] or until the handle is dropped.
pub async fn spawn(config: FakeConfig, listen: SocketAddr) -> Result<FakeHandle, SpawnError> {
    config.validate()?;
    let bind = |source| SpawnError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let shared = Arc::new(Shared {
        account: Mutex::new(Account::new(config, Instant::now())),
        requests: Mutex::new(RequestLog::default()),
        shutdown: CancellationToken::new(),
    });
    let app = routes::router(Arc::clone(&shared));
    let stop = shared.shutdown.clone();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "zoom-fake server failed");
        }
    });
    Ok(FakeHandle {
        addr,
        shared,
        task: Some(task),
    })
}

/// A running fake.
pub struct FakeHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl FakeHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`: the token URL is this plus `/oauth/token`, the API
    /// base this plus `/v2`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the daemon's `zoom.api_base_url` should be.
    pub fn api_base_url(&self) -> String {
        format!("http://{}/v2", self.addr)
    }

    /// What the daemon's `zoom.oauth_token_url` should be.
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    /// Groups, users and counters now (what `GET /_state` shows).
    pub fn state(&self) -> FakeState {
        self.shared.lock().snapshot()
    }

    pub fn limits(&self) -> Limits {
        self.shared.lock().limits()
    }

    /// New limits from the next call on; counts so far are kept.
    pub fn set_limits(&self, limits: Limits) {
        self.shared.lock().set_limits(limits);
    }

    /// The per-category counters now, without the directory.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters()
    }

    pub fn reset_counters(&self) {
        self.shared.lock().reset_counters();
    }

    /// Scripts `fault` while the fake runs: the next `fault.times` API calls
    /// that match it (method and path prefix) get its status and Zoom's
    /// body `{"code", "message"}` instead of their real answer (a 429 gets
    /// Zoom's per-second body and headers), and change nothing. Entries are tried in the order they were scripted, the
    /// seed's first; the first live one that matches answers.
    pub fn script(&self, fault: ScriptedFault) {
        let lasting = Lasting::Times(fault.times);
        self.shared.lock().script(fault, lasting);
    }

    /// Like [`FakeHandle::script`], but for every matching call during
    /// `period` from now (`fault.times` is not used).
    pub fn script_for(&self, fault: ScriptedFault, period: Duration) {
        let lasting = Lasting::Until(Instant::now() + period);
        self.shared.lock().script(fault, lasting);
    }

    /// Like [`FakeHandle::script`], but for every matching call until
    /// [`FakeHandle::clear_faults`] (`fault.times` is not used): a missing
    /// scope, a deleted group, an outage.
    pub fn script_until_cleared(&self, fault: ScriptedFault) {
        self.shared.lock().script(fault, Lasting::UntilCleared);
    }

    /// Ends every scripted fault, the seed's and those added at run time;
    /// latency and the seed's random faults stay. [`FakeHandle::reset`]
    /// brings the seed's script back.
    pub fn clear_faults(&self) {
        self.shared.lock().clear_faults();
    }

    /// Time from the first API call to the latest (their arrival), since
    /// the start or the last [`FakeHandle::reset`].
    pub fn first_to_last(&self) -> Duration {
        self.shared.lock().first_to_last()
    }

    /// Back to the seed (directory, limits, counters, rate windows, fault
    /// script, call times, the request log); issued tokens stay valid.
    pub fn reset(&self) {
        self.shared.lock().reset();
        self.shared.requests().clear();
    }

    /// Every request so far, in arrival order (the first
    /// [`REQUESTS_KEPT`]), the token endpoint's included, unanswered ones
    /// too.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests().kept()
    }

    /// The API calls so far (`/v2/...`), in arrival order.
    pub fn api_requests(&self) -> Vec<ReceivedRequest> {
        let mut requests = self.requests();
        requests.retain(ReceivedRequest::is_api);
        requests
    }

    /// Requests that came after the log was full.
    pub fn requests_not_kept(&self) -> u64 {
        self.shared.requests().not_kept()
    }

    /// Whether the fake issued `token` (`Authorization: Bearer <token>`),
    /// expired or not: a test asserts a call carried a token from here.
    pub fn issued(&self, token: &str) -> bool {
        self.shared.lock().tokens.was_issued(token)
    }

    /// Revokes the app's credentials, as an admin deactivating it: issued
    /// tokens get 401 (code 124) and the token endpoint refuses the client.
    pub fn revoke_credentials(&self) {
        self.shared.lock().tokens.revoke();
    }

    /// The credentials work again (new tokens are granted).
    pub fn restore_credentials(&self) {
        self.shared.lock().tokens.restore();
    }

    /// Empties the request log (the directory and counters stay).
    pub fn clear_requests(&self) {
        self.shared.requests().clear();
    }

    /// Time until the next one-second rate window opens, so a caller can
    /// start a burst at the beginning of a window.
    pub fn next_window_in(&self) -> Duration {
        self.shared.lock().next_window_in(Instant::now())
    }

    /// Stops accepting, cuts added latency short, and waits (briefly) for
    /// open connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
