//! `[ingest]`: the receiver's section of the configuration, and the names
//! of its secret variables. The loader (the package's `config.rs`) reads it
//! and checks the URLs with every other section's.

use std::net::SocketAddr;

use serde::Deserialize;
use zds_server::limits as http_limits;

/// `[ingest]`: the webhook receiver (`ingest`, `run --with-ingest`). Its
/// secret is not here: it comes from `ZDS_INGEST_SECRET` (see
/// `ingest::signature::Secrets`), so a config file never holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics` of the receiver: never on the
    /// public webhook port.
    pub probe_listen: SocketAddr,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: u32,
    /// `[ingest.bamboohr]`: present turns on `POST /v1/bamboohr` (its two
    /// secrets then must be set; see [`BAMBOOHR_WEBHOOK_KEY_VAR`]).
    pub bamboohr: Option<BambooHrSettings>,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            probe_listen: SocketAddr::from(([127, 0, 0, 1], 9466)),
            header_read_timeout_secs: http_limits::HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: http_limits::IDLE_TIMEOUT_SECS,
            request_timeout_secs: http_limits::REQUEST_TIMEOUT_SECS,
            max_connections: http_limits::MAX_CONNECTIONS,
            bamboohr: None,
        }
    }
}

impl IngestSettings {
    pub fn limit_keys(&self) -> http_limits::Keys<'static> {
        http_limits::Keys {
            section: "ingest",
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            request_timeout_secs: self.request_timeout_secs,
            max_connections: self.max_connections,
        }
    }

    /// The limits of each of the receiver's two listeners.
    pub fn limits(&self) -> zds_server::Limits {
        self.limit_keys().limits()
    }
}

/// `[ingest.bamboohr]`: where the BambooHR API is, to read an employee's
/// current department and work email when a webhook says it changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BambooHrSettings {
    /// The `<company>` of `<company>.bamboohr.com`.
    pub company_domain: String,
    #[serde(default = "default_bamboohr_api")]
    pub api_base_url: String,
    /// What `employee.deleted` does: nothing (the default), or a `leave`.
    #[serde(default)]
    pub on_delete: OnDelete,
}

/// `[ingest.bamboohr] on_delete`: what a deleted employee means here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Answered 202 `ignored`: removal stays with `reconcile
    /// --remove-unlisted` or an explicit `leave` event.
    #[default]
    Ignore,
    /// A `leave` event: the person leaves every managed group.
    Leave,
}

fn default_bamboohr_api() -> String {
    "https://api.bamboohr.com/api/gateway.php".to_owned()
}

/// The BambooHR webhook's HMAC key (its text bytes). Like the API key, not
/// `ZDS_`-prefixed, so figment's overrides never see it.
pub const BAMBOOHR_WEBHOOK_KEY_VAR: &str = "BAMBOOHR_WEBHOOK_KEY";

/// The BambooHR API key (HTTP Basic user, password `x`).
pub const BAMBOOHR_API_KEY_VAR: &str = "BAMBOOHR_API_KEY";

/// The environment variable holding the webhook secrets. Excluded from the
/// `ZDS_` overrides: it is a secret, not a config key.
pub const INGEST_SECRET_VAR: &str = "ZDS_INGEST_SECRET";
