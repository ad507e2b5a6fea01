//! `[amqp]` and `[outcomes]`: this crate's sections of the configuration,
//! and the rules that concern them alone. The loader (the package's
//! `config.rs`) reads them and keeps the rules that cross sections (the
//! consumer-timeout budget).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// An `[outcomes]` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutcomesSettingsError {
    #[error("outcomes.exchange and outcomes.stream must not be empty when set")]
    Blank,
    #[error("outcomes.stream needs outcomes.exchange: the stream is bound to it")]
    StreamWithoutExchange,
    #[error("outcomes.max_age is {0:?}: write a number and one of Y, M, D, h, m, s (e.g. \"90D\")")]
    MaxAge(String),
}

/// An `[amqp]` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmqpSettingsError {
    #[error(
        "amqp.tls_client_cert is set without amqp.tls_client_key: set both (mutual TLS) or neither"
    )]
    CertWithoutKey,
    #[error(
        "amqp.tls_client_key is set without amqp.tls_client_cert: set both (mutual TLS) or neither"
    )]
    KeyWithoutCert,
    #[error(
        "{key} is set but amqp.url (or AMQP_URL) is not amqps://: TLS files are used only over TLS; \
         write amqps://host:5671/vhost"
    )]
    TlsWithoutAmqps { key: &'static str },
    /// The message never quotes the URL: it holds the broker password.
    #[error(
        "{which} {why}; write amqp://user:password@host:5672/vhost or \
         amqps://user:password@host:5671/vhost (the value is not shown: it holds the password)"
    )]
    BadUrl { which: String, why: &'static str },
    /// The addresses of one cluster: one scheme (the TLS files are for all
    /// or none) and one vhost (the same queues).
    #[error(
        "the addresses in amqp.urls (or AMQP_URL) must all use the same {what}: they are nodes of one \
         RabbitMQ cluster (the values are not shown: they hold the password)"
    )]
    MixedAddresses { what: &'static str },
    #[error(
        "amqp.url and amqp.urls are both set: give one address in amqp.url or several in amqp.urls"
    )]
    UrlAndUrls,
    #[error("amqp.urls is empty: give at least one address, or use amqp.url")]
    NoUrls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// Carries the broker password, hence secret.
    pub url: SecretString,
    /// Several nodes of one RabbitMQ cluster, tried in turn (see
    /// [`AmqpSettings::addresses`]); exclusive with `url`. Empty: `url`.
    pub urls: Vec<SecretString>,
    pub queue: String,
    /// Defaults to `<queue>.dead`.
    pub dead_letter_queue: Option<String>,
    /// The exchange the receiver publishes events through (direct, bound to
    /// the input queue), so its user needs write on it alone, never on the
    /// default exchange (which reaches the dead-letter queue). Defaults to
    /// `<queue>.in`.
    pub input_exchange: Option<String>,
    pub prefetch: u16,
    pub declare_topology: bool,
    /// Declare the input queue with `x-single-active-consumer`, so replicas
    /// stand by while one consumes (failover).
    pub single_active_consumer: bool,
    /// `classic`, or `quorum` for a replicated queue on a RabbitMQ cluster.
    pub queue_type: QueueType,
    /// How long lapin may try to recover a lost connection before the daemon
    /// drops it and builds a new one (lapin can stay "connecting" forever).
    pub recovery_timeout_secs: u64,
    /// RabbitMQ's `consumer_timeout` for this queue: no delivery may stay
    /// unacknowledged that long, or the broker closes the channel.
    pub consumer_timeout_secs: u64,
    /// The management API (e.g. `http://rabbitmq:15672`), for `status`:
    /// unacknowledged deliveries and which consumer is active. Optional;
    /// the AMQP URL's user and password are used.
    pub management_url: Option<String>,
    /// How long to wait for the broker to confirm a dead letter (a broker
    /// under a memory or disk alarm never does).
    pub confirm_timeout_secs: u64,
    /// A PEM file of CA certificates trusted besides the system's roots, for
    /// an `amqps://` broker whose certificate a private CA signed.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `tls_client_key`.
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_client_cert`.
    pub tls_client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    /// As RabbitMQ's `x-queue-type` names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            urls: Vec::new(),
            queue: "hr.user.department_changed".into(),
            dead_letter_queue: None,
            input_exchange: None,
            prefetch: 32,
            declare_topology: true,
            single_active_consumer: false,
            queue_type: QueueType::Classic,
            recovery_timeout_secs: 60,
            management_url: None,
            consumer_timeout_secs: 1800,
            confirm_timeout_secs: 15,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

impl AmqpSettings {
    /// The TLS keys' shape (the files themselves are read at connection):
    /// a client certificate needs its key, and no TLS key is set for a
    /// plain `amqp://` URL, where it would silently do nothing.
    pub fn check_tls(&self) -> Result<(), AmqpSettingsError> {
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(_), None) => {
                return Err(AmqpSettingsError::CertWithoutKey);
            }
            (None, Some(_)) => {
                return Err(AmqpSettingsError::KeyWithoutCert);
            }
            _ => {}
        }
        let set = [
            ("amqp.tls_ca_file", &self.tls_ca_file),
            ("amqp.tls_client_cert", &self.tls_client_cert),
        ]
        .into_iter()
        .find(|(_, value)| value.is_some());
        let tls = self.url_scheme()? == "amqps";
        match set {
            Some((key, _)) if !tls => Err(AmqpSettingsError::TlsWithoutAmqps { key }),
            _ => Ok(()),
        }
    }

    /// The broker addresses, tried in this order: `urls` when set, else
    /// `url` alone.
    pub fn addresses(&self) -> &[SecretString] {
        if self.urls.is_empty() {
            std::slice::from_ref(&self.url)
        } else {
            &self.urls
        }
    }

    /// The addresses' common scheme, once each is a broker URL lapin can
    /// use and all name one scheme and one vhost. The message never quotes
    /// a URL: it holds the broker password.
    pub fn url_scheme(&self) -> Result<String, AmqpSettingsError> {
        let several = !self.urls.is_empty();
        let mut common: Option<(String, String)> = None;
        for (i, url) in self.addresses().iter().enumerate() {
            let which = if several {
                format!("address {} of amqp.urls (or AMQP_URL)", i + 1)
            } else {
                "amqp.url (or AMQP_URL)".to_owned()
            };
            let (scheme, vhost) = scheme_and_vhost(url.expose_secret(), which)?;
            match &common {
                None => common = Some((scheme, vhost)),
                Some((s, _)) if *s != scheme => {
                    return Err(AmqpSettingsError::MixedAddresses { what: "scheme" });
                }
                Some((_, v)) if *v != vhost => {
                    return Err(AmqpSettingsError::MixedAddresses { what: "vhost" });
                }
                Some(_) => {}
            }
        }
        common
            .map(|(scheme, _)| scheme)
            .ok_or(AmqpSettingsError::NoUrls)
    }

    /// TLS files given relative to the config file's directory, like
    /// `departments_file`, so a config directory can move as a whole.
    pub fn resolve_tls_paths(&mut self, config_dir: &Path) {
        for path in [
            &mut self.tls_ca_file,
            &mut self.tls_client_cert,
            &mut self.tls_client_key,
        ]
        .into_iter()
        .flatten()
        {
            *path = config_dir.join(&*path);
        }
    }

    pub fn dead_letter_queue(&self) -> String {
        self.dead_letter_queue
            .clone()
            .unwrap_or_else(|| format!("{}.dead", self.queue))
    }

    /// `amqp.input_exchange`, else `<queue>.in`.
    pub fn input_exchange(&self) -> String {
        self.input_exchange
            .clone()
            .unwrap_or_else(|| format!("{}.in", self.queue))
    }
}

/// One address's scheme and vhost, once it is a broker URL lapin can use.
fn scheme_and_vhost(url: &str, which: String) -> Result<(String, String), AmqpSettingsError> {
    let bad = |why: &'static str| AmqpSettingsError::BadUrl {
        which: which.clone(),
        why,
    };
    let url = url.trim();
    if url.is_empty() {
        return Err(bad("is empty (a comma too many in the list?)"));
    }
    // The URL parser drops tabs and newlines: another address, password
    // and all, would become this one's vhost.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "holds a space or a line break (separate several addresses with commas)",
        ));
    }
    if url.ends_with(',') || url.contains(",,") {
        return Err(bad(
            "ends with a comma, or holds two (an empty address in the list?)",
        ));
    }
    let parsed = url::Url::parse(url).map_err(|_| bad("is not a URL"))?;
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(bad("is not an amqp:// or amqps:// URL"));
    }
    match parsed.host() {
        Some(url::Host::Domain(_) | url::Host::Ipv4(_)) => {}
        // lapin's URL parser reads an IPv6 literal as "localhost".
        Some(url::Host::Ipv6(_)) => {
            return Err(bad(
                "has an IPv6 address, which the AMQP client cannot use: give a host name",
            ));
        }
        None => return Err(bad("has no host")),
    }
    let vhost = percent_encoding::percent_decode_str(parsed.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    Ok((parsed.scheme().to_owned(), vhost))
}

/// `AMQP_URL`'s addresses: one URL, or several separated by commas (or
/// one a line, as a file may hold them). A separator splits only where the
/// next address begins (`amqp://`, `amqps://`), so a comma inside a
/// password stays in it; a comma left at the end of an address (a trailing
/// or doubled comma) stays too, and [`AmqpSettings::url_scheme`] refuses it.
pub fn split_addresses(list: &str) -> Vec<String> {
    let mut addresses = Vec::new();
    let mut start = 0;
    for (at, _) in list.match_indices([',', '\n']) {
        let rest = list[at + 1..].trim_start();
        if rest.starts_with("amqp://") || rest.starts_with("amqps://") {
            addresses.push(list[start..at].trim().to_owned());
            start = at + 1;
        }
    }
    addresses.push(list[start..].trim().to_owned());
    addresses
}

impl AmqpSettings {
    pub fn recovery_timeout(&self) -> Duration {
        Duration::from_secs(self.recovery_timeout_secs)
    }
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_secs(self.confirm_timeout_secs)
    }
    pub fn consumer_timeout(&self) -> Duration {
        Duration::from_secs(self.consumer_timeout_secs)
    }
}

/// `[outcomes]`: the audit trail. One message per settled event, published
/// (confirmed) to a topic exchange before the event is acked.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutcomesSettings {
    /// The topic exchange; unset, no outcomes are published.
    pub exchange: Option<String>,
    /// A stream bound to the exchange (every result), which `history` reads.
    pub stream: Option<String>,
    /// The stream's retention, in RabbitMQ's `x-max-age` form (`90D`, `12h`).
    pub max_age: String,
}

impl Default for OutcomesSettings {
    fn default() -> Self {
        Self {
            exchange: None,
            stream: None,
            max_age: "90D".into(),
        }
    }
}

impl OutcomesSettings {
    pub fn check(&self) -> Result<(), OutcomesSettingsError> {
        let blank = |v: &Option<String>| v.as_ref().is_some_and(|v| v.trim().is_empty());
        if blank(&self.exchange) || blank(&self.stream) {
            return Err(OutcomesSettingsError::Blank);
        }
        if self.stream.is_some() && self.exchange.is_none() {
            return Err(OutcomesSettingsError::StreamWithoutExchange);
        }
        let unit = self.max_age.chars().last().unwrap_or(' ');
        let digits = self.max_age.strip_suffix(unit).unwrap_or_default();
        let valid = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && matches!(unit, 'Y' | 'M' | 'D' | 'h' | 'm' | 's');
        if !valid {
            return Err(OutcomesSettingsError::MaxAge(self.max_age.clone()));
        }
        Ok(())
    }
}
