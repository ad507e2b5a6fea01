//! Builds the Zoom client from the whole configuration: the one place that
//! hands the client its sections (`[zoom]`, `[retry]`, the credentials).

use std::sync::Arc;

use crate::config::Settings;
use zds_zoom::{CallMetrics, Client, HttpClientError};

/// The Zoom client for these settings, reporting into `metrics`.
pub fn zoom(settings: &Settings, metrics: Arc<dyn CallMetrics>) -> Result<Client, HttpClientError> {
    Client::new(
        &settings.zoom,
        settings.credentials.clone(),
        settings.retry.clone(),
        metrics,
    )
}
