//! `/healthz`, `/readyz`, `/metrics` and the control endpoint `POST /resume`
//! on `http.listen`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::Metrics;
use zds_core::brake::Brake;
use zds_core::quarantine::Quarantines;
use zds_server::Limits;
use zds_zoom::rate::RateBudgets;

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    quarantines: Arc<Quarantines>,
    brake: Arc<Brake>,
    rates: Arc<RateBudgets>,
    listen: SocketAddr,
}

/// What `POST /resume` may release: a quarantine and the brake.
pub struct Holds {
    pub quarantines: Arc<Quarantines>,
    pub brake: Arc<Brake>,
}

/// Binds now (so a taken port fails start-up), serves until `shutdown`
/// within `limits` (see [`zds_server`]).
pub async fn serve(
    listen: SocketAddr,
    limits: Limits,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    holds: Holds,
    rates: Arc<RateBudgets>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, zds_server::ListenError> {
    let (listener, _) = zds_server::bind(listen, "http.listen").await?;
    tracing::info!(%listen, "serving /healthz, /readyz, /metrics and POST /resume");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/resume", post(resume))
        .route("/brake/clear", post(clear_brake))
        .with_state(AppState {
            health,
            metrics,
            quarantines: holds.quarantines,
            brake: holds.brake,
            rates,
            listen,
        });
    Ok(zds_server::spawn(listener, app, limits, shutdown))
}

/// The first line says ready or why not; the third, the broker node in use
/// (`host:port`, never the password); the second, each Zoom category's
/// rate now (lowered while other apps use the account's budget).
/// Alive unless the consume loop stopped turning (a hang: restart it).
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let rates = rates_line(&state.rates);
    let broker = state.health.broker_line();
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, format!("ready\n{rates}\n{broker}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}\n{rates}\n{broker}\n"),
        ),
    }
}

/// `zoom rate per second (effective / configured): light 15/15, medium 7.7/10, heavy 5/5`
fn rates_line(rates: &RateBudgets) -> String {
    let parts: Vec<String> = rates
        .report()
        .iter()
        .map(|r| {
            format!(
                "{} {}/{}",
                r.category,
                round(r.effective),
                round(r.configured)
            )
        })
        .collect();
    format!(
        "zoom rate per second (effective / configured): {}",
        parts.join(", ")
    )
}

/// One decimal at most: `7.7`, `15`.
fn round(rate: f64) -> String {
    let tenths = (rate * 10.0).round() / 10.0;
    format!("{tenths}")
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.set_ready(state.health.readiness().is_ok());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Lifts a quarantine. Only from this host: `/metrics` and `/readyz` may be
/// exposed (`0.0.0.0` in a container), but restarting consumption is an
/// operator's decision, taken where the daemon runs.
async fn resume(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    if let Err(refused) = control_allowed(peer, state.listen, &headers) {
        tracing::warn!(%peer, "POST /resume refused: {refused}");
        return (StatusCode::FORBIDDEN, format!("{refused}\n"));
    }
    let lifted = state.quarantines.resume(|q| {
        state.health.quarantined(None);
        state.metrics.quarantine_lifted();
        tracing::info!(code = q.code, %peer, "quarantine lifted by resume: one event goes first");
    });
    let released = state.brake.release(std::time::Instant::now());
    if let Some(engaged) = &released {
        state.health.braked(None);
        state.metrics.brake_engaged.set(0);
        tracing::warn!(changes = engaged.changes, removals = engaged.removals, %peer,
            "brake released by resume: the held burst goes through; it engages again only after a whole window");
    }
    match (lifted, released) {
        (Some(q), _) => (
            StatusCode::OK,
            format!("resumed: was quarantined because {q}\n"),
        ),
        (None, Some(engaged)) => (
            StatusCode::OK,
            format!("resumed: the held burst goes through (was: {engaged})\n"),
        ),
        (None, None) => (
            StatusCode::CONFLICT,
            "not quarantined, brake not engaged: nothing to resume\n".to_owned(),
        ),
    }
}

/// After `brake refuse`: the held burst is gone, so consuming goes on, but
/// with no release window (unlike `resume`): a replay of it is held again.
/// Only from this host, as `/resume`.
async fn clear_brake(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    if let Err(refused) = control_allowed(peer, state.listen, &headers) {
        tracing::warn!(%peer, "POST /brake/clear refused: {refused}");
        return (StatusCode::FORBIDDEN, format!("{refused}\n"));
    }
    match state.brake.clear() {
        Some(engaged) => {
            state.health.braked(None);
            state.metrics.brake_engaged.set(0);
            tracing::warn!(%peer, "brake cleared after the held burst was refused (was: {engaged})");
            (StatusCode::OK, format!("brake cleared (was: {engaged})\n"))
        }
        None => (StatusCode::CONFLICT, "brake not engaged\n".to_owned()),
    }
}

/// Why a control request (`POST /resume`, `POST /brake/clear`) is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlRefused {
    #[error("accepted only from this host")]
    NotLocal,
    /// A browser sends `Origin` with every cross-site POST, and a page on
    /// any site can POST to loopback: without this check, visiting a page
    /// could lift a quarantine. The CLI never sends one.
    #[error(
        "refused: a request with an Origin header (a browser) may not control the daemon; use `zoom-dept-sync resume`, which sends application/json without Origin"
    )]
    FromBrowser,
    /// A `text/plain` or form POST needs no CORS preflight, so a page can
    /// send it blindly; `application/json` from another origin needs a
    /// preflight this server never grants.
    #[error(
        "refused: the content type must be application/json (the CLI sends it), as a browser cannot send that across sites without a preflight, which this server never grants; the request had no Origin header"
    )]
    NotJson,
}

/// A control request must come from this host, carry no `Origin` and say
/// `application/json`: together, no web page a local browser opens can
/// send one.
fn control_allowed(
    peer: SocketAddr,
    listen: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ControlRefused> {
    if !is_local_peer(peer.ip(), listen.ip()) {
        return Err(ControlRefused::NotLocal);
    }
    if headers.contains_key(header::ORIGIN) {
        return Err(ControlRefused::FromBrowser);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(ControlRefused::NotJson)
    }
}

/// A peer on this host: loopback (also as an IPv4-mapped IPv6 address), or
/// the very address the server listens on when that is a specific one (a
/// connection from this host to it comes from it).
fn is_local_peer(peer: IpAddr, listen: IpAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || (!listen.is_unspecified() && peer == listen.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_request_needs_json_and_no_origin() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let listen: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let with = |pairs: &[(header::HeaderName, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(name.clone(), value.parse().unwrap());
            }
            control_allowed(local, listen, &headers)
        };
        let json = (header::CONTENT_TYPE, "application/json");
        assert_eq!(with(std::slice::from_ref(&json)), Ok(()));
        assert_eq!(
            with(&[(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")]),
            Ok(())
        );
        let origin = (header::ORIGIN, "http://127.0.0.1:9464");
        assert_eq!(with(&[json, origin]), Err(ControlRefused::FromBrowser));
        for plain in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/jsonx",
        ] {
            assert_eq!(
                with(&[(header::CONTENT_TYPE, plain)]),
                Err(ControlRefused::NotJson),
                "{plain}"
            );
        }
        assert_eq!(with(&[]), Err(ControlRefused::NotJson));
        let remote: SocketAddr = "10.0.0.7:40000".parse().unwrap();
        let headers = HeaderMap::new();
        assert_eq!(
            control_allowed(remote, listen, &headers),
            Err(ControlRefused::NotLocal)
        );
    }

    #[test]
    fn resume_is_accepted_only_from_this_host() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("127.0.0.1", "0.0.0.0", true),
            ("127.0.0.2", "127.0.0.1", true),
            ("::1", "::", true),
            ("::ffff:127.0.0.1", "::", true),
            ("10.0.0.7", "0.0.0.0", false),
            ("::ffff:10.0.0.7", "::", false),
            ("10.0.0.7", "10.0.0.8", false),
            ("10.0.0.8", "10.0.0.8", true),
        ];
        for (peer, listen, accepted) in cases {
            assert_eq!(
                is_local_peer(ip(peer), ip(listen)),
                accepted,
                "{peer} to {listen}"
            );
        }
    }
}
