//! Shutdown as one value: a `CancellationToken` that SIGTERM or SIGINT
//! cancels. Everything that must stop holds a clone and watches it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::systemd::Systemd;

/// Cancels the returned token on the first SIGTERM or SIGINT.
pub fn on_signals() -> CancellationToken {
    on_signals_telling(Arc::new(Systemd::disabled()))
}

/// As [`on_signals`], and tells systemd `STOPPING=1` first, before anything
/// sees the shutdown (a process that stops quickly may end before another
/// task would run).
pub fn on_signals_telling(systemd: Arc<Systemd>) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "shutdown requested");
        systemd.stopping(&format!(
            "stopping ({signal}): finishing the work in flight"
        ));
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}
