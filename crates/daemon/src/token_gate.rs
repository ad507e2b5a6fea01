//! Start-up asks Zoom for a token before consuming. Wrong credentials are a
//! configuration mistake: consuming with them would requeue every event and
//! pause, and a daemon reporting ready until the first event hides the
//! mistake. So the daemon stays up, not ready and not consuming, names the
//! `ZOOM_*` variables in `/readyz`, and tries again with growing waits; the
//! first token lets it consume. An endpoint that is away (no connection, a
//! 5xx, a 429) is said apart from refused credentials. Zoom answers wrong
//! credentials with a 4xx ("Invalid client", "Invalid client secret", codes
//! 4702/4704, or a missing account: <https://developers.zoom.us/docs/integrations/oauth-error-messages/>),
//! which [`zds_zoom::auth`] classifies as `Credentials`.
//!
//! The credentials are read at start-up only: after fixing a variable or a
//! `*_FILE` secret, restart the daemon. Retrying still helps when the fix
//! is on Zoom's side (an app re-activated, a scope added).

use std::time::Duration;

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::systemd::Systemd;
use crate::worker::Worker;
use zds_zoom::{ErrorKind, ZoomError};

/// What to check when Zoom refuses the credentials.
pub const CHECK_CREDENTIALS: &str = "check ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET \
     (or their *_FILE files) against the app's credentials in the Zoom App Marketplace, and that \
     the app is activated; they are read at start-up, so restart the daemon after a change";

/// Waits until the token endpoint grants a token: `true` then, `false`
/// when `shutdown` fires first.
pub async fn wait_for_token(
    worker: &Worker,
    health: &Health,
    systemd: &Systemd,
    shutdown: &CancellationToken,
) -> bool {
    let mut delays = delays();
    loop {
        let fetched = tokio::select! {
            fetched = systemd.pinging(worker.fetch_token()) => fetched,
            _ = shutdown.cancelled() => return false,
        };
        let Err(error) = fetched else {
            health.zoom_token(None);
            return true;
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(60));
        let why = format!("not consuming: {}", reason(&error));
        let retry_in_ms = delay.as_millis() as u64;
        if error.kind == ErrorKind::Credentials {
            tracing::error!(%why, retry_in_ms, "no Zoom token; not consuming");
        } else {
            tracing::warn!(%why, retry_in_ms, "no Zoom token; not consuming");
        }
        health.zoom_token(Some(why));
        tokio::select! {
            _ = systemd.pinging(tokio::time::sleep(delay)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// Why there is no token, for `/readyz` and `check`: refused credentials
/// (what to check) or an endpoint that is away (it will be tried again).
pub fn reason(error: &ZoomError) -> String {
    match error.kind {
        ErrorKind::Credentials => {
            format!("Zoom refuses the app's credentials ({error}): {CHECK_CREDENTIALS}")
        }
        _ => format!(
            "Zoom's token endpoint is unavailable ({error}): not a credentials problem; \
             check zoom.oauth_token_url and the way to it if it lasts"
        ),
    }
}

/// 1 s doubling to 60 s, with jitter.
fn delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_and_an_endpoint_away_read_apart() {
        let refused = ZoomError::local(ErrorKind::Credentials, Some(401), "invalid_client");
        let away = ZoomError::local(ErrorKind::Transient, None, "connection failed");
        let refused = reason(&refused);
        let away = reason(&away);
        for var in ["ZOOM_ACCOUNT_ID", "ZOOM_CLIENT_ID", "ZOOM_CLIENT_SECRET"] {
            assert!(refused.contains(var), "{refused}");
        }
        assert!(away.contains("unavailable") && !away.contains("ZOOM_CLIENT_SECRET"));
    }
}
