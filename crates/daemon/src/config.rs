//! Settings: one TOML file (figment), secrets from the environment.
//!
//! Loading either yields complete, checked [`Settings`] or one
//! [`ConfigError`] line that names the key, so a bad deployment fails at
//! start-up instead of at the first event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

use redact::figment_error_line;
pub use zds_amqp::settings::{AmqpSettings, OutcomesSettings, QueueType};
use zds_amqp::settings::{AmqpSettingsError, split_addresses};
pub use zds_core::brake::BrakeSettings;
use zds_core::mapping::Mapping;
pub use zds_core::mapping::Unmapped;
pub use zds_http_client::RetrySettings;
pub use zds_zoom::settings::{RateLimits, RateLimitsFile, ZoomCredentials, ZoomPlan, ZoomSettings};

pub use zds_receiver::settings::{
    BAMBOOHR_API_KEY_VAR, BAMBOOHR_WEBHOOK_KEY_VAR, BambooHrSettings, INGEST_SECRET_VAR,
    IngestSettings, OnDelete,
};
pub use zds_server::limits as http_limits;
pub mod keys;
mod redact;
mod secret_var;
pub use secret_var::secret_var;

/// A start-up error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A section's own rule, broken: its message as the loader's.
    pub fn from_section(error: impl std::error::Error) -> Self {
        Self(error.to_string())
    }
}

/// Looks up an environment variable; injected so tests need not touch the
/// process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Clone)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub zoom: ZoomSettings,
    pub retry: RetrySettings,
    pub worker: WorkerSettings,
    pub http: HttpSettings,
    pub outcomes: OutcomesSettings,
    pub ingest: IngestSettings,
    pub brake: BrakeSettings,
    pub mapping: Mapping,
    pub credentials: ZoomCredentials,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub unmapped: Unmapped,
    pub shutdown_grace_secs: u64,
    /// Past this many redeliveries (connection lost or the process stopped
    /// while the event ran), the event is dead-lettered as `redelivery_limit`.
    pub max_redeliveries: u32,
    /// First wait of a pause (auth, dead-letter queue missing); doubles after
    /// every failed probe, up to `pause_max_secs`.
    pub pause_initial_ms: u64,
    pub pause_max_secs: u64,
    /// Stop consuming when most recent events fail the same way (a group
    /// deleted in Zoom), instead of dead-lettering the whole queue.
    pub quarantine: bool,
    /// How many of the latest settled events the quarantine rule looks at.
    pub quarantine_window: u32,
    /// Dead letters with one Zoom code among them that stop consuming.
    pub quarantine_threshold: u32,
    /// After a move or add, make the target group the user's primary group
    /// (one more Medium call; Zoom's documented answers name no primary group,
    /// so it is made after every move or add).
    pub set_primary: bool,
    /// How far ahead of the daemon's clock an event's `occurred_at` may be.
    /// Further, it is dead-lettered (`invalid_payload`): applied, one event
    /// dated in year 9999 would make every later event of its person stale.
    pub max_future_skew_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: u32,
}

impl HttpSettings {
    fn limit_keys(&self) -> http_limits::Keys<'static> {
        http_limits::Keys {
            section: "http",
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            request_timeout_secs: self.request_timeout_secs,
            max_connections: self.max_connections,
        }
    }

    /// `http.listen`'s limits.
    pub fn limits(&self) -> zds_server::Limits {
        self.limit_keys().limits()
    }
}

/// The file as written; sections default, the mapping does not.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    amqp: AmqpSettings,
    #[serde(default)]
    zoom: ZoomSettings,
    #[serde(default)]
    retry: RetrySettings,
    #[serde(default)]
    worker: WorkerSettings,
    #[serde(default)]
    http: HttpSettings,
    #[serde(default)]
    outcomes: OutcomesSettings,
    #[serde(default)]
    ingest: IngestSettings,
    #[serde(default)]
    brake: BrakeSettings,
    /// `None` when the file has no `[departments]` table at all, so that
    /// an empty table next to `departments_file` is still refused.
    #[serde(default)]
    departments: Option<BTreeMap<String, String>>,
    #[serde(default)]
    departments_file: Option<PathBuf>,
}

/// A `departments_file` holds a `[departments]` table and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepartmentsFile {
    departments: BTreeMap<String, String>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            unmapped: Unmapped::DeadLetter,
            shutdown_grace_secs: 25,
            max_redeliveries: 10,
            pause_initial_ms: 2000,
            pause_max_secs: 300,
            quarantine: true,
            quarantine_window: 100,
            quarantine_threshold: 50,
            set_primary: false,
            max_future_skew_secs: 300,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            header_read_timeout_secs: http_limits::HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: http_limits::IDLE_TIMEOUT_SECS,
            request_timeout_secs: http_limits::REQUEST_TIMEOUT_SECS,
            max_connections: http_limits::MAX_CONNECTIONS,
        }
    }
}

impl WorkerSettings {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    pub fn pause_first(&self) -> Duration {
        Duration::from_millis(self.pause_initial_ms)
    }
    pub fn pause_max(&self) -> Duration {
        Duration::from_secs(self.pause_max_secs)
    }
}

/// The longest any wait or timeout in the settings may be: every instant the
/// daemon computes from them stays far from overflowing.
const MAX_SECS: u64 = 24 * 3600;

/// The largest quarantine window: the window is kept in memory and scanned
/// when it trips, so it stays small.
const MAX_QUARANTINE_WINDOW: u64 = 100_000;

impl Settings {
    /// A delivery must be settled within this of its arrival: the broker's
    /// consumer timeout less a margin (a tenth, 5 s to 5 min) for settling.
    pub fn hold_limit(&self) -> Duration {
        let timeout = self.amqp.consumer_timeout();
        let margin = (timeout / 10).clamp(Duration::from_secs(5), Duration::from_secs(300));
        timeout.saturating_sub(margin)
    }

    /// The longest an event runs once started: its whole retry budget, one
    /// more request, and the confirms of its dead letter and (with the
    /// audit trail on) its outcome record.
    pub fn event_run_time(&self) -> Duration {
        let confirms = if self.outcomes.exchange.is_some() {
            2
        } else {
            1
        };
        self.retry.max_elapsed()
            + self.zoom.request_timeout()
            + self.amqp.confirm_timeout() * confirms
    }

    /// The slowest delivery waits for a slot behind the rest of the prefetch
    /// (`prefetch / concurrency` rounds, rounded up), then runs a full
    /// event. That must end before the consumer timeout.
    fn check_consumer_timeout(&self) -> Result<(), ConfigError> {
        let rounds = u32::from(self.amqp.prefetch).div_ceil(self.worker.concurrency.max(1) as u32);
        let worst = self.event_run_time().saturating_mul(rounds);
        let limit = self.hold_limit();
        if worst <= limit {
            return Ok(());
        }
        Err(ConfigError(format!(
            "amqp.prefetch ({}), worker.concurrency ({}) and retry.max_elapsed_secs ({}) \
             (plus zoom.request_timeout_ms and amqp.confirm_timeout_secs) could hold a delivery \
             unacknowledged for {} s, past amqp.consumer_timeout_secs ({}) less a {} s margin: \
             lower the prefetch or the retry budget, or raise the concurrency or the consumer timeout",
            self.amqp.prefetch,
            self.worker.concurrency,
            self.retry.max_elapsed_secs,
            worst.as_secs(),
            self.amqp.consumer_timeout_secs,
            (self.amqp.consumer_timeout() - limit).as_secs(),
        )))
    }

    /// Upper bounds, so no computed instant can overflow.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let ms = MAX_SECS * 1000;
        for (key, value, max) in [
            (
                "amqp.consumer_timeout_secs",
                self.amqp.consumer_timeout_secs,
                MAX_SECS,
            ),
            (
                "amqp.recovery_timeout_secs",
                self.amqp.recovery_timeout_secs,
                3600,
            ),
            (
                "amqp.confirm_timeout_secs",
                self.amqp.confirm_timeout_secs,
                600,
            ),
            (
                "zoom.request_timeout_ms",
                self.zoom.request_timeout_ms,
                600_000,
            ),
            (
                "retry.initial_interval_ms",
                self.retry.initial_interval_ms,
                ms,
            ),
            ("retry.max_interval_ms", self.retry.max_interval_ms, ms),
            (
                "retry.max_elapsed_secs",
                self.retry.max_elapsed_secs,
                MAX_SECS,
            ),
            (
                "worker.shutdown_grace_secs",
                self.worker.shutdown_grace_secs,
                3600,
            ),
            ("worker.pause_initial_ms", self.worker.pause_initial_ms, ms),
            (
                "worker.pause_max_secs",
                self.worker.pause_max_secs,
                MAX_SECS,
            ),
            (
                "worker.quarantine_window",
                self.worker.quarantine_window.into(),
                MAX_QUARANTINE_WINDOW,
            ),
        ] {
            if value > max {
                return Err(ConfigError(format!(
                    "{key} is {value}, more than the largest allowed, {max}"
                )));
            }
        }
        let at_least_one = [
            (
                "amqp.consumer_timeout_secs",
                self.amqp.consumer_timeout_secs,
            ),
            ("amqp.confirm_timeout_secs", self.amqp.confirm_timeout_secs),
            ("worker.pause_initial_ms", self.worker.pause_initial_ms),
            ("worker.pause_max_secs", self.worker.pause_max_secs),
            (
                "worker.quarantine_threshold",
                self.worker.quarantine_threshold.into(),
            ),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be at least 1")));
            }
        }
        let (window, threshold) = (
            self.worker.quarantine_window,
            self.worker.quarantine_threshold,
        );
        if threshold > window {
            return Err(ConfigError(format!(
                "worker.quarantine_threshold ({threshold}) must be at most worker.quarantine_window ({window})"
            )));
        }
        Ok(())
    }
}

impl Settings {
    /// Loads `path`, then `ZDS_`-prefixed overrides (`ZDS_WORKER__CONCURRENCY=4`),
    /// then the secrets and `AMQP_URL` from `env`.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(
            Env::prefixed("ZDS_")
                .ignore(&["ingest_secret", "ingest_secret_file"])
                .split("__"),
        );
        let both_urls = figment.contains("amqp.url") && figment.contains("amqp.urls");
        let urls_set = figment.contains("amqp.urls");
        let file: FileConfig = figment
            .extract()
            .map_err(|e| ConfigError(figment_error_line(e)))?;

        let departments = departments(path, file.departments, file.departments_file.as_deref())?;
        let mapping = Mapping::new(&departments).map_err(|e| ConfigError(e.to_string()))?;

        let mut amqp = file.amqp;
        if let Some(list) = secret_var(env, "AMQP_URL")?.filter(|u| !u.is_empty()) {
            // The environment replaces the file's address or addresses.
            let mut addresses = split_addresses(&list);
            amqp.urls = Vec::new();
            if addresses.len() == 1 {
                amqp.url = addresses.remove(0).into();
            } else {
                amqp.urls = addresses.into_iter().map(Into::into).collect();
            }
        } else if both_urls {
            return Err(ConfigError::from_section(AmqpSettingsError::UrlAndUrls));
        } else if urls_set && amqp.urls.is_empty() {
            return Err(ConfigError::from_section(AmqpSettingsError::NoUrls));
        }
        amqp.resolve_tls_paths(path.parent().unwrap_or(Path::new(".")));
        let credentials = ZoomCredentials {
            account_id: required_secret(env, "ZOOM_ACCOUNT_ID")?,
            client_id: required_secret(env, "ZOOM_CLIENT_ID")?,
            client_secret: required_secret(env, "ZOOM_CLIENT_SECRET")?,
        };
        let settings = Self {
            amqp,
            zoom: file.zoom,
            retry: file.retry,
            worker: file.worker,
            http: file.http,
            outcomes: file.outcomes,
            ingest: file.ingest,
            brake: file.brake,
            mapping,
            credentials,
        };
        settings.check()?;
        Ok(settings)
    }

    /// The receiver's grant is write on this exchange: it must be one the
    /// daemon may declare (RabbitMQ reserves `amq.`) and never the outcome
    /// exchange (write there forges audit-trail records).
    fn check_input_exchange(&self) -> Result<(), ConfigError> {
        let exchange = self.amqp.input_exchange();
        if exchange.trim().is_empty() {
            return Err(ConfigError(
                "amqp.input_exchange must not be empty (the default exchange reaches every queue)"
                    .into(),
            ));
        }
        if exchange.starts_with("amq.") {
            return Err(ConfigError(format!(
                "amqp.input_exchange {exchange:?}: names starting with \"amq.\" are reserved by RabbitMQ"
            )));
        }
        if exchange.len() > 255 {
            return Err(ConfigError(
                "amqp.input_exchange is longer than 255 bytes".into(),
            ));
        }
        if self.outcomes.exchange.as_deref() == Some(exchange.as_str()) {
            return Err(ConfigError(format!(
                "amqp.input_exchange {exchange:?} must differ from outcomes.exchange: write on it would let the receiver forge audit-trail records"
            )));
        }
        Ok(())
    }

    /// Rules serde cannot express.
    fn check(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError(msg.to_owned()));
        if self.amqp.queue.trim().is_empty() {
            return fail("amqp.queue must not be empty");
        }
        if self.amqp.dead_letter_queue() == self.amqp.queue {
            return fail("amqp.dead_letter_queue must differ from amqp.queue");
        }
        self.check_input_exchange()?;
        if self.amqp.prefetch == 0 {
            return fail("amqp.prefetch must be at least 1");
        }
        if self.amqp.recovery_timeout_secs == 0 {
            return fail("amqp.recovery_timeout_secs must be at least 1");
        }
        let insecure = self.zoom.allow_insecure_http;
        for (key, value) in [
            ("zoom.api_base_url", &self.zoom.api_base_url),
            ("zoom.oauth_token_url", &self.zoom.oauth_token_url),
        ] {
            check_http_url(key, value, insecure)?;
        }
        if let Some(bamboohr) = &self.ingest.bamboohr {
            check_bamboohr(bamboohr, insecure)?;
        }
        self.amqp.url_scheme().map_err(ConfigError::from_section)?;
        self.amqp.check_tls().map_err(ConfigError::from_section)?;
        (self.http.limit_keys().check()).map_err(ConfigError::from_section)?;
        (self.ingest.limit_keys().check()).map_err(ConfigError::from_section)?;
        (self.zoom.check_rate_limits()).map_err(ConfigError::from_section)?;
        self.outcomes.check().map_err(ConfigError::from_section)?;
        check_brake(&self.brake)?;
        if self.zoom.request_timeout_ms == 0 {
            return fail("zoom.request_timeout_ms must be at least 1");
        }
        if self.retry.initial_interval_ms == 0
            || self.retry.initial_interval_ms > self.retry.max_interval_ms
        {
            return fail(
                "retry.initial_interval_ms must be at least 1 and at most retry.max_interval_ms",
            );
        }
        if self.worker.concurrency == 0 {
            return fail("worker.concurrency must be at least 1");
        }
        self.check_bounds()?;
        self.check_consumer_timeout()
    }
}

/// An API URL: `https://`, or `http://` only with `zoom.allow_insecure_http`.
fn check_http_url(key: &str, value: &str, allow_insecure: bool) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        // Every request would carry it, and path segments go after it.
        Ok(u) if u.query().is_some() || u.fragment().is_some() => Err(ConfigError(format!(
            "{key} is {value:?}: an API base URL has no query (?) or fragment (#)"
        ))),
        Ok(u) if u.scheme() == "https" => Ok(()),
        Ok(u) if u.scheme() == "http" && allow_insecure => Ok(()),
        Ok(u) if u.scheme() == "http" => Err(ConfigError(format!(
            "{key} is {value:?}: only https:// is accepted (the token and credentials would cross \
             the network in clear); set zoom.allow_insecure_http = true to allow http:// \
             (tests, a local zoom-fake)"
        ))),
        _ => Err(ConfigError(format!("{key} is not an https URL: {value:?}"))),
    }
}

fn required_secret(env: EnvLookup<'_>, name: &str) -> Result<SecretString, ConfigError> {
    match secret_var(env, name)? {
        Some(value) if !value.trim().is_empty() => Ok(value.into()),
        _ => Err(ConfigError(format!(
            "environment variable {name} is not set or empty, nor a file named by {name}_FILE \
             (Zoom server-to-server OAuth credentials come from the environment)"
        ))),
    }
}

/// The mapping: the `[departments]` table, or the one in `departments_file`
/// (relative to the main file, so a config directory can move as a whole).
/// Never both: docs/configuration.md promises one *instead of* the other, and a merge
/// would hide which file a department came from.
fn departments(
    path: &Path,
    table: Option<BTreeMap<String, String>>,
    file: Option<&Path>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(file) = file else {
        return Ok(table.unwrap_or_default());
    };
    if table.is_some() {
        return Err(ConfigError(format!(
            "departments_file = {:?} and a [departments] table are both set (in {} or as \
             ZDS_DEPARTMENTS__* variables): keep one of them (departments_file replaces the table)",
            file.display().to_string(),
            path.display()
        )));
    }
    let extra = path.parent().unwrap_or(Path::new(".")).join(file);
    let parsed: DepartmentsFile = Figment::new()
        .merge(Toml::file_exact(&extra))
        .extract()
        .map_err(|e| {
            ConfigError(format!(
                "departments_file {}: {}",
                extra.display(),
                figment_error_line(e)
            ))
        })?;
    Ok(parsed.departments)
}

/// A window of 1 s to 7 days (0 would turn the change limit off
/// silently; a huge one overflows the clock).
fn check_brake(brake: &BrakeSettings) -> Result<(), ConfigError> {
    if brake.max_changes > 0 && !(1..=7 * 86_400).contains(&brake.window_secs) {
        return Err(ConfigError(format!(
            "brake.window_secs must be between 1 and 604800 (7 days), got {}",
            brake.window_secs
        )));
    }
    Ok(())
}

/// `[ingest.bamboohr]`: a company domain and an API URL that can be used.
fn check_bamboohr(
    bamboohr: &BambooHrSettings,
    allow_insecure_http: bool,
) -> Result<(), ConfigError> {
    let domain = bamboohr.company_domain.trim();
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError(format!(
            "ingest.bamboohr.company_domain must be the <company> of <company>.bamboohr.com, got {:?}",
            bamboohr.company_domain
        )));
    }
    check_http_url(
        "ingest.bamboohr.api_base_url",
        &bamboohr.api_base_url,
        allow_insecure_http,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::io::Write;

    fn env_with_secrets(name: &str) -> Option<String> {
        match name {
            "ZOOM_ACCOUNT_ID" | "ZOOM_CLIENT_ID" | "ZOOM_CLIENT_SECRET" => Some("x".into()),
            _ => None,
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const MINIMAL: &str = "[departments]\n\"Sales\" = \"grp_sales\"\n";

    #[test]
    fn every_key_but_mapping_and_secrets_has_a_default() {
        let f = file(MINIMAL);
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        assert_eq!(s.amqp.queue, "hr.user.department_changed");
        assert_eq!(
            s.amqp.dead_letter_queue(),
            "hr.user.department_changed.dead"
        );
        assert_eq!(s.amqp.prefetch, 32);
        assert_eq!(
            s.zoom.rate_limits(),
            RateLimits {
                light: 15,
                medium: 10,
                heavy: 5
            },
            "half of a Pro account's limits"
        );
        assert_eq!(s.retry.max_elapsed_secs, 600);
        assert_eq!(s.worker.concurrency, 16);
        assert_eq!(s.worker.unmapped, Unmapped::DeadLetter);
        assert_eq!(s.http.listen.port(), 9464);
        assert!(s.worker.quarantine);
        assert_eq!(
            (s.worker.quarantine_window, s.worker.quarantine_threshold),
            (100, 50)
        );
    }

    #[test]
    fn input_exchange_defaults_to_the_queue_name_and_is_checked() {
        let s = Settings::load(file(MINIMAL).path(), &env_with_secrets).unwrap();
        assert_eq!(s.amqp.input_exchange(), "hr.user.department_changed.in");
        for (value, why) in [
            ("", "must not be empty"),
            ("amq.events", "amq."),
            ("zoom-dept-sync.outcomes", "outcomes.exchange"),
        ] {
            let f = file(&format!(
                "[amqp]\ninput_exchange = {value:?}\n[outcomes]\nexchange = \"zoom-dept-sync.outcomes\"\n{MINIMAL}"
            ));
            let e = Settings::load(f.path(), &env_with_secrets).unwrap_err();
            assert!(e.to_string().contains("amqp.input_exchange"), "{e}");
            assert!(e.to_string().contains(why), "{value:?}: {e}");
        }
    }

    #[test]
    fn ingest_listen_defaults_and_can_be_set() {
        let s = Settings::load(file(MINIMAL).path(), &env_with_secrets).unwrap();
        assert_eq!(s.ingest.listen, SocketAddr::from(([127, 0, 0, 1], 9465)));
        let f = file(&format!("[ingest]\nlisten = \"0.0.0.0:8080\"\n{MINIMAL}"));
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        assert_eq!(s.ingest.listen.port(), 8080);
        let f = file(&format!("[ingest]\nsecret = \"whsec_x\"\n{MINIMAL}"));
        let err = Settings::load(f.path(), &env_with_secrets).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn http_limits_default_and_can_be_set_per_section() {
        let s = Settings::load(file(MINIMAL).path(), &env_with_secrets).unwrap();
        assert_eq!(s.http.limits(), zds_server::Limits::default());
        assert_eq!(s.ingest.limits(), zds_server::Limits::default());
        assert_eq!(
            s.ingest.probe_listen,
            SocketAddr::from(([127, 0, 0, 1], 9466))
        );
        let f = file(&format!(
            "[http]\nmax_connections = 8\n[ingest]\nheader_read_timeout_secs = 2\n\
             idle_timeout_secs = 3\nrequest_timeout_secs = 4\nprobe_listen = \"0.0.0.0:9466\"\n{MINIMAL}"
        ));
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        assert_eq!(s.http.limits().max_connections, 8);
        let ingest = s.ingest.limits();
        assert_eq!(
            (
                ingest.header_read_timeout,
                ingest.idle_timeout,
                ingest.request_timeout
            ),
            (
                Duration::from_secs(2),
                Duration::from_secs(3),
                Duration::from_secs(4)
            )
        );
        for (text, key) in [
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            (
                "[ingest]\nidle_timeout_secs = 0\n",
                "ingest.idle_timeout_secs",
            ),
        ] {
            let f = file(&format!("{text}{MINIMAL}"));
            let err = Settings::load(f.path(), &env_with_secrets).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn ingest_bamboohr_is_optional_and_checked() {
        let s = Settings::load(file(MINIMAL).path(), &env_with_secrets).unwrap();
        assert!(s.ingest.bamboohr.is_none());
        let f = file(&format!(
            "[ingest.bamboohr]\ncompany_domain = \"acme\"\n{MINIMAL}"
        ));
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        let b = s.ingest.bamboohr.unwrap();
        assert_eq!(b.company_domain, "acme");
        assert_eq!(b.api_base_url, "https://api.bamboohr.com/api/gateway.php");
        let f = file(&format!(
            "[ingest.bamboohr]\ncompany_domain = \"a/b\"\n{MINIMAL}"
        ));
        let e = Settings::load(f.path(), &env_with_secrets).unwrap_err();
        assert!(e.to_string().contains("company_domain"), "{e}");
    }

    #[test]
    fn amqp_url_comes_from_the_environment_when_set() {
        let f = file(MINIMAL);
        let env = |name: &str| match name {
            "AMQP_URL" => Some("amqp://other:5672/%2f".to_owned()),
            other => env_with_secrets(other),
        };
        let s = Settings::load(f.path(), &env).unwrap();
        assert_eq!(s.amqp.url.expose_secret(), "amqp://other:5672/%2f");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[zoom]\nrequests_per_second = \"fast\"\n[departments]\nS = \"g\"\n",
                "requests_per_second",
            ),
            (
                "[zoom]\nplan = \"enterprise\"\n[departments]\nS = \"g\"\n",
                "plan",
            ),
            (
                "[zoom.rate_limits]\nmedium = 0\n[departments]\nS = \"g\"\n",
                "zoom.rate_limits.medium must be at least 1",
            ),
            (
                "[zoom.rate_limits]\nlite = 3\n[departments]\nS = \"g\"\n",
                "lite",
            ),
            (
                "[zoom]\nrequests_per_second = 0\n[departments]\nS = \"g\"\n",
                "zoom.requests_per_second must be at least 1",
            ),
            (
                "[zoom]\nrequests_per_second = 200000\n[departments]\nS = \"g\"\n",
                "zoom.requests_per_second is 200000",
            ),
            (
                "[zoom]\nrequests_per_second = 12\n[zoom.rate_limits]\nmedium = 20\n[departments]\nS = \"g\"\n",
                "requests_per_second is the old name of rate_limits.medium; remove it",
            ),
            (
                "[outcomes]\nstream = \"s\"\n[departments]\nS = \"g\"\n",
                "outcomes.stream needs outcomes.exchange",
            ),
            (
                "[outcomes]\nexchange = \"x\"\nmax_age = \"90 days\"\n[departments]\nS = \"g\"\n",
                "outcomes.max_age is \"90 days\"",
            ),
            (
                "[outcomes]\nexchange = \"x\"\nmax_age = \"5é\"\n[departments]\nS = \"g\"\n",
                "outcomes.max_age is \"5é\"",
            ),
            (
                "[worker]\nconcurency = 3\n[departments]\nS = \"g\"\n",
                "concurency",
            ),
            (
                "[worker]\nunmapped = \"drop\"\n[departments]\nS = \"g\"\n",
                "unmapped",
            ),
            ("[amqp]\nqueue = \"q\"\n", "mapping is empty"),
            ("[departments]\nS = \"../g\"\n", "departments"),
            ("not toml at all [", "TOML"),
            (
                "[worker]\nquarantine_threshold = 0\n[departments]\nS = \"g\"\n",
                "worker.quarantine_threshold must be at least 1",
            ),
            (
                "[worker]\nquarantine_window = 10\nquarantine_threshold = 11\n[departments]\nS = \"g\"\n",
                "worker.quarantine_threshold (11) must be at most worker.quarantine_window (10)",
            ),
            (
                "[worker]\nquarantine_window = 100001\n[departments]\nS = \"g\"\n",
                "worker.quarantine_window is 100001",
            ),
            (
                "[zoom]\napi_base_url = \"http://zoom.example/v2\"\n[departments]\nS = \"g\"\n",
                "zoom.api_base_url is \"http://zoom.example/v2\": only https:// is accepted",
            ),
            (
                "[zoom]\noauth_token_url = \"http://zoom.example/t\"\n[departments]\nS = \"g\"\n",
                "set zoom.allow_insecure_http = true",
            ),
            (
                "[ingest.bamboohr]\ncompany_domain = \"acme\"\napi_base_url = \"http://hr.example\"\n[departments]\nS = \"g\"\n",
                "ingest.bamboohr.api_base_url is \"http://hr.example\": only https://",
            ),
            (
                "[zoom]\napi_base_url = \"https://zoom.example/v2?x=1\"\n[departments]\nS = \"g\"\n",
                "no query (?) or fragment (#)",
            ),
            (
                "[zoom]\napi_base_url = \"ftp://zoom.example\"\nallow_insecure_http = true\n[departments]\nS = \"g\"\n",
                "zoom.api_base_url is not an https URL",
            ),
            (
                "[amqp]\nurl = \"amqps://b:5671/%2f\"\ntls_client_cert = \"c.pem\"\n[departments]\nS = \"g\"\n",
                "amqp.tls_client_cert is set without amqp.tls_client_key",
            ),
            (
                "[amqp]\nurl = \"amqps://b:5671/%2f\"\ntls_client_key = \"k.pem\"\n[departments]\nS = \"g\"\n",
                "amqp.tls_client_key is set without amqp.tls_client_cert",
            ),
            (
                "[amqp]\nurl = \"amqp://b:5672/%2f\"\ntls_ca_file = \"ca.pem\"\n[departments]\nS = \"g\"\n",
                "amqp.tls_ca_file is set but amqp.url (or AMQP_URL) is not amqps://",
            ),
        ];
        for (text, expected) in cases {
            let f = file(text);
            let err = Settings::load(f.path(), &env_with_secrets)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn http_urls_and_amqps_tls_files_load_when_allowed() {
        let f = file(
            "[amqp]\nurl = \"AMQPS://b:5671/%2f\"\ntls_ca_file = \"ca.pem\"\n\
             tls_client_cert = \"c.pem\"\ntls_client_key = \"k.pem\"\n\
             [zoom]\napi_base_url = \"http://127.0.0.1:9/v2\"\nallow_insecure_http = true\n\
             [departments]\nS = \"g\"\n",
        );
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        assert!(s.zoom.allow_insecure_http);
        let dir = f.path().parent().unwrap();
        assert_eq!(
            s.amqp.tls_ca_file,
            Some(dir.join("ca.pem")),
            "beside the config"
        );
        let env = |name: &str| match name {
            "AMQP_URL" => Some("  amqps://u:p@broker/%2f".to_owned()),
            _ => env_with_secrets(name),
        };
        let f = file("[amqp]\ntls_ca_file = \"/etc/ca.pem\"\n[departments]\nS = \"g\"\n");
        let s = Settings::load(f.path(), &env).expect("leading blanks are trimmed");
        assert_eq!(s.amqp.tls_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let f = file(MINIMAL);
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        assert!(!s.zoom.allow_insecure_http, "https only by default");
    }

    #[test]
    fn several_broker_addresses_come_from_the_file_or_a_comma_separated_amqp_url() {
        let urls = |s: &Settings| -> Vec<String> {
            let all = s.amqp.addresses().iter();
            all.map(|u| u.expose_secret().to_owned()).collect()
        };
        let f = file(&format!(
            "[amqp]\nurls = [\"amqp://u:p@a:5672/%2f\", \"amqp://u:p@b:5672/%2f\"]\n{MINIMAL}"
        ));
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        assert_eq!(urls(&s), ["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5672/%2f"]);
        // A comma inside a password stays in it: only `,amqp://` splits.
        let env = |name: &str| match name {
            "AMQP_URL" => Some("amqp://u:p,w@a/%2f, amqp://u:p,w@b/%2f".to_owned()),
            other => env_with_secrets(other),
        };
        let s = Settings::load(f.path(), &env).unwrap();
        assert_eq!(urls(&s), ["amqp://u:p,w@a/%2f", "amqp://u:p,w@b/%2f"]);
        let env = |name: &str| match name {
            "AMQP_URL" => Some("amqp://u:p@only/%2f".to_owned()),
            other => env_with_secrets(other),
        };
        let s = Settings::load(f.path(), &env).unwrap();
        assert_eq!(
            urls(&s),
            ["amqp://u:p@only/%2f"],
            "AMQP_URL replaces the file's list"
        );
    }

    #[test]
    fn broker_address_lists_that_cannot_be_one_cluster_are_refused() {
        for (amqp, expected) in [
            (
                "url = \"amqp://a/%2f\"\nurls = [\"amqp://b/%2f\"]",
                "amqp.url and amqp.urls are both set",
            ),
            ("urls = []", "amqp.urls is empty"),
            (
                "urls = [\"amqp://a/%2f\", \"amqps://b/%2f\"]",
                "must all use the same scheme",
            ),
            (
                "urls = [\"amqp://a/%2f\", \"amqp://b/other\"]",
                "must all use the same vhost",
            ),
            (
                "urls = [\"amqp://a/%2f\", \"amqp://u:hunter2@/%2f\"]",
                "address 2 of amqp.urls (or AMQP_URL) is not a URL",
            ),
        ] {
            let f = file(&format!("[amqp]\n{amqp}\n{MINIMAL}"));
            let err = Settings::load(f.path(), &env_with_secrets)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{amqp}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_bad_broker_url_is_refused_without_quoting_the_password() {
        for (url, why) in [
            ("amqps:guest:hunter2@localhost:5671/%2f", "has no host"),
            ("amqp//guest:hunter2@localhost/%2f", "is not a URL"),
            ("http://guest:hunter2@localhost/%2f", "is not an amqp"),
            ("amqp://guest:hunter2@[::1]:5672/%2f", "IPv6"),
        ] {
            let env = |name: &str| match name {
                "AMQP_URL" => Some(url.to_owned()),
                _ => env_with_secrets(name),
            };
            let f = file(MINIMAL);
            let err = Settings::load(f.path(), &env).unwrap_err().to_string();
            assert!(
                err.contains("amqp.url (or AMQP_URL)") && err.contains(why),
                "{url}: {err}"
            );
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn the_plan_sets_defaults_and_keys_override_them() {
        let f = file(
            "[zoom]\nplan = \"business\"\n[zoom.rate_limits]\nheavy = 3\n[departments]\nS = \"g\"\n",
        );
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        let expected = RateLimits {
            light: 40,
            medium: 30,
            heavy: 3,
        };
        assert_eq!(s.zoom.rate_limits(), expected);
    }

    #[test]
    fn the_old_requests_per_second_becomes_the_medium_limit() {
        let f = file("[zoom]\nrequests_per_second = 12\n[departments]\nS = \"g\"\n");
        let s = Settings::load(f.path(), &env_with_secrets).unwrap();
        let expected = RateLimits {
            light: 15,
            medium: 12,
            heavy: 5,
        };
        assert_eq!(s.zoom.rate_limits(), expected);
    }

    #[test]
    fn the_outcome_confirm_counts_toward_the_consumer_timeout() {
        // Two rounds of 600 + 10 + 15 s fit in 1,400 s less its 140 s
        // margin; with the outcome record's confirm too (2 × 640 s) they do not.
        let base = "[amqp]\nconsumer_timeout_secs = 1400\n[departments]\nS = \"g\"\n";
        assert!(Settings::load(file(base).path(), &env_with_secrets).is_ok());
        let with_trail = format!("{base}[outcomes]\nexchange = \"x\"\n");
        let err = Settings::load(file(&with_trail).path(), &env_with_secrets).unwrap_err();
        assert!(err.to_string().contains("consumer_timeout_secs"), "{err}");
    }

    #[test]
    fn a_missing_secret_is_named() {
        let f = file(MINIMAL);
        let env = |name: &str| {
            (name != "ZOOM_CLIENT_SECRET" && !name.ends_with("_FILE")).then(|| "x".to_owned())
        };
        let err = Settings::load(f.path(), &env).unwrap_err().to_string();
        assert!(err.contains("ZOOM_CLIENT_SECRET"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let s = Settings::load(&path, &env_with_secrets).unwrap();
        assert_eq!(
            s.mapping.group_of("engineering").unwrap().as_str(),
            "grp_eng_0001"
        );
        assert_eq!(s.amqp.queue_type, QueueType::Classic);
    }

    #[test]
    fn departments_file_is_merged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.toml"),
            "[departments]\nSales = \"grp_s\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.toml"), "departments_file = \"d.toml\"\n").unwrap();
        let s = Settings::load(&dir.path().join("c.toml"), &env_with_secrets).unwrap();
        assert_eq!(s.mapping.group_of("sales").unwrap().as_str(), "grp_s");
    }

    #[test]
    fn departments_file_with_a_departments_table_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.toml"),
            "[departments]\nHR = \"grp_hr\"\n",
        )
        .unwrap();
        for table in ["[departments]\nSales = \"grp_s\"\n", "[departments]\n"] {
            let config = format!("departments_file = \"d.toml\"\n{table}");
            std::fs::write(dir.path().join("c.toml"), config).unwrap();
            let err = Settings::load(&dir.path().join("c.toml"), &env_with_secrets)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("departments_file") && err.contains("[departments]"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_secret_and_the_broker_url_may_come_from_a_file() {
        let f = file(MINIMAL);
        let dir = tempfile::tempdir().unwrap();
        let mut vars = BTreeMap::new();
        for (name, value) in [
            ("ZOOM_ACCOUNT_ID", "acct-from-file"),
            ("ZOOM_CLIENT_ID", "id-from-file"),
            ("ZOOM_CLIENT_SECRET", "secret-from-file"),
            ("AMQP_URL", "amqp://u:p@broker-from-file:5672/%2f"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            vars.insert(format!("{name}_FILE"), path.display().to_string());
        }
        let s = Settings::load(f.path(), &|name| vars.get(name).cloned()).unwrap();
        assert_eq!(s.credentials.account_id.expose_secret(), "acct-from-file");
        assert_eq!(s.credentials.client_id.expose_secret(), "id-from-file");
        assert_eq!(
            s.credentials.client_secret.expose_secret(),
            "secret-from-file"
        );
        assert_eq!(
            s.amqp.url.expose_secret(),
            "amqp://u:p@broker-from-file:5672/%2f"
        );

        // An empty file is an empty value: a required secret is missing.
        std::fs::write(dir.path().join("ZOOM_CLIENT_ID"), "\n").unwrap();
        let err = Settings::load(f.path(), &|name| vars.get(name).cloned())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ZOOM_CLIENT_ID"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let f = file(MINIMAL);
        let env = |name: &str| match name {
            "AMQP_URL" => Some("amqp://u:hunter2@h/%2f".to_owned()),
            _ if name.ends_with("_FILE") => None,
            _ => Some("topsecret".to_owned()),
        };
        let s = Settings::load(f.path(), &env).unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("topsecret") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
}
