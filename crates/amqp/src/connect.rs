//! Opening one connection to the broker, over TLS when the URL is
//! `amqps://`: the system's CA roots, plus `amqp.tls_ca_file`, plus a client
//! certificate for mutual TLS.
//!
//! The TLS files are read at every connection, so a renewed certificate is
//! used from the next reconnect without a restart. A file that cannot be
//! used, or a broker certificate that is not trusted, is *permanent*:
//! retrying cannot help, so the daemon stops at start-up with the key to
//! change instead of retrying in silence.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};

use crate::settings::AmqpSettings;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    /// The broker's certificate failed verification.
    #[error("the broker's TLS certificate is not trusted ({detail}): {advice}")]
    Untrusted {
        detail: String,
        advice: &'static str,
    },
    /// The broker ended the handshake with an alert about certificates or
    /// access: it wants a client certificate we do not have or trust.
    #[error(
        "the broker refused the TLS handshake ({0}): check amqp.tls_client_cert and \
         amqp.tls_client_key (the broker may require a client certificate, signed by a CA it trusts)"
    )]
    Refused(String),
    /// No TLS version or cipher suite both sides accept.
    #[error(
        "no TLS version or cipher suite the broker and this daemon share ({0}): the broker must offer TLS 1.2 or 1.3"
    )]
    Mismatch(String),
    /// The port answered, but not with TLS.
    #[error(
        "the broker's port does not speak TLS ({0}): an amqps:// URL needs the broker's TLS port (usually 5671)"
    )]
    NotTls(String),
    /// The broker refused the user name or password (`ACCESS_REFUSED`,
    /// reply code 403, answering the handshake's login).
    #[error(
        "the broker at {at} refused the login of user {user:?} ({detail}): check the user and \
         password in AMQP_URL (or AMQP_URL_FILE, amqp.url), and that the user exists on the broker"
    )]
    LoginRefused {
        at: BrokerAddress,
        user: String,
        detail: String,
    },
    /// The login passed but the vhost was refused (`NOT_ALLOWED`, 530): it
    /// does not exist, or the user has no permissions on it.
    #[error(
        "the broker at {at} refused user {user:?} the vhost {vhost:?} ({detail}): check that the \
         vhost in AMQP_URL exists and that the user has permissions on it"
    )]
    VhostRefused {
        at: BrokerAddress,
        user: String,
        vhost: String,
        detail: String,
    },
    /// The broker cannot be reached: a name that does not resolve, a
    /// refused or reset connection, no answer.
    #[error("cannot reach the broker at {at}: {source}")]
    Unreachable {
        at: BrokerAddress,
        source: lapin::Error,
    },
    /// The broker accepted the connection but did not finish the
    /// handshake in time (a node hung, or an address that drops packets).
    #[error("the broker at {at} did not answer within {} s", ATTEMPT_TIMEOUT.as_secs())]
    NoAnswer { at: BrokerAddress },
    /// Every address of `amqp.urls` failed, each for its own reason.
    #[error("no broker address answered: {}", list(.0))]
    NoneAnswered(Vec<ConnectError>),
    #[error("{0}")]
    Broker(#[from] lapin::Error),
}

fn list(failures: &[ConnectError]) -> String {
    let each: Vec<String> = failures.iter().map(ToString::to_string).collect();
    each.join("; ")
}

impl ConnectError {
    /// True when trying again cannot succeed without an operator. Of
    /// several addresses: when one refused the login or the vhost (the
    /// nodes of a cluster share their users and vhosts, so the others
    /// would too), or when every one gave such a verdict (a TLS file, a
    /// certificate: a node that is merely away may come back).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Broker(_) | Self::Unreachable { .. } | Self::NoAnswer { .. } => false,
            Self::NoneAnswered(failures) => {
                failures.iter().any(Self::is_refusal) || failures.iter().all(Self::is_permanent)
            }
            _ => true,
        }
    }

    fn is_refusal(&self) -> bool {
        matches!(self, Self::LoginRefused { .. } | Self::VhostRefused { .. })
    }

    /// Several failures as one: the failure itself when there is one, or
    /// when all are the same verdict (a refused login is the cluster's,
    /// not a node's); else all of them.
    fn of_all(mut failures: Vec<ConnectError>) -> Self {
        let same = failures.windows(2).all(|pair| {
            std::mem::discriminant(&pair[0]) == std::mem::discriminant(&pair[1])
                && pair[0].is_permanent()
        });
        if failures.len() == 1 || same {
            return failures.swap_remove(0);
        }
        Self::NoneAnswered(failures)
    }
}

/// How long one address may take to connect: the connection, TLS and the
/// AMQP handshake. Bounded so that an address that drops packets (a node
/// cut off, not dead) cannot keep the next address from being tried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the daemon connects and as whom, for messages: host and port,
/// user and vhost from the broker URL, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub vhost: String,
}

impl BrokerAddress {
    /// Read with lapin's own URL parser, so the defaults (port 5672 or
    /// 5671, user `guest`, vhost `/`) are the ones it connects with.
    pub fn of(url: &SecretString) -> Self {
        match url.expose_secret().trim().parse::<lapin::uri::AMQPUri>() {
            Ok(uri) => Self {
                host: uri.authority.host,
                port: uri.authority.port,
                user: uri.authority.userinfo.username,
                vhost: uri.vhost,
            },
            // The config check refuses such a URL before any connection.
            Err(_) => Self {
                host: "(unparsable amqp.url)".into(),
                port: 0,
                user: String::new(),
                vhost: String::new(),
            },
        }
    }
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Port 0 only stands for a URL that could not be read.
        if self.port == 0 {
            return f.write_str(&self.host);
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A TLS file named in the config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{key} = {path:?}: cannot read it: {source}")]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} = {path:?}: not a regular file of at most 1 MiB")]
    NotAFile { key: &'static str, path: PathBuf },
    #[error("{key} = {path:?}: {problem} (it must be PEM: -----BEGIN CERTIFICATE----- blocks)")]
    BadCertificate {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("{key} = {path:?}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {problem}")]
    BadKey {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("amqp.tls_client_key does not belong to the certificate in amqp.tls_client_cert ({0})")]
    KeyMismatch(String),
}

/// The largest TLS file read: certificates and keys are a few KiB.
const MAX_FILE: u64 = 1 << 20;

/// The `frame_max` asked for when `amqp.url` names none. lapin gives each
/// connection a receive and a send buffer of 32 frames of the negotiated
/// size, zero-filled: at RabbitMQ's default (128 KiB) that is 8 MiB a
/// connection, 16 MiB for the daemon's two. 64 KiB halves it. The cost: a
/// message's content header must fit in one frame, so a producer's headers
/// over about 64 KiB could no longer be consumed or dead-lettered;
/// `?frame_max=131072` on `amqp.url` restores the broker's default.
pub const DEFAULT_FRAME_MAX: u32 = 65_536;

/// `url` with `frame_max=`[`DEFAULT_FRAME_MAX`] added to its query, unless
/// it sets `frame_max` itself.
pub fn with_default_frame_max(url: &str) -> Cow<'_, str> {
    let query = url.split_once('?').map(|(_, query)| query);
    let named = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("frame_max"))
    });
    if named {
        return Cow::Borrowed(url);
    }
    let separator = match query {
        None => "?",
        Some("") => "",
        Some(_) => "&",
    };
    Cow::Owned(format!("{url}{separator}frame_max={DEFAULT_FRAME_MAX}"))
}

/// An open connection, and which of the addresses it went to.
pub struct Connected {
    pub connection: Connection,
    /// Its place in [`AmqpSettings::addresses`].
    pub index: usize,
    pub address: BrokerAddress,
}

/// Opens a connection named `name` (shown in the management UI) to the
/// first address that answers, trying them in order.
pub async fn connect(amqp: &AmqpSettings, name: String) -> Result<Connection, ConnectError> {
    connect_from(amqp, name, 0).await.map(|c| c.connection)
}

/// Like [`connect`], trying the addresses from `start` on, round: a daemon
/// that lost its session starts with the address after the one it had, so
/// a node that died is tried last, not first.
pub async fn connect_from(
    amqp: &AmqpSettings,
    name: String,
    start: usize,
) -> Result<Connected, ConnectError> {
    let addresses = amqp.addresses();
    let mut failures = Vec::new();
    for k in 0..addresses.len() {
        let index = (start + k) % addresses.len();
        let url = &addresses[index];
        let address = BrokerAddress::of(url);
        let attempt = connect_one(amqp, url, name.clone(), address.clone());
        let failure = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => {
                return Ok(Connected {
                    connection,
                    index,
                    address,
                });
            }
            Ok(Err(e)) => e,
            Err(_) => ConnectError::NoAnswer { at: address },
        };
        if addresses.len() > 1 {
            tracing::warn!(error = %failure, "cannot connect to this broker address; trying the next");
        }
        failures.push(failure);
    }
    Err(ConnectError::of_all(failures))
}

async fn connect_one(
    amqp: &AmqpSettings,
    url: &SecretString,
    name: String,
    address: BrokerAddress,
) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    // Off the runtime: a file on a hung mount must not stall timers.
    let files = amqp.clone();
    let tls = tokio::task::spawn_blocking(move || tls_config(&files))
        .await
        .map_err(|e| lapin::Error::from(std::io::Error::other(e)))??;
    let runtime = lapin::runtime::default_runtime()?;
    let url = with_default_frame_max(url.expose_secret());
    Connection::connect_with_config(&url, properties, tls, runtime)
        .await
        .map_err(|e| classify(e, address))
}

/// The TLS settings for lapin: empty (system roots only) unless files are
/// set. Every file is parsed strictly here, so that a bad one is named as
/// such instead of failing later as if the broker were away.
pub fn tls_config(amqp: &AmqpSettings) -> Result<OwnedTLSConfig, TlsFileError> {
    let cert_chain = match &amqp.tls_ca_file {
        Some(path) => Some(ca_file(path)?),
        None => None,
    };
    let identity = match (&amqp.tls_client_cert, &amqp.tls_client_key) {
        (Some(cert), Some(key)) => Some(client_identity(cert, key)?),
        // The config check refuses one without the other.
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The CA file's text, once every certificate in it is a usable trust anchor.
fn ca_file(path: &Path) -> Result<String, TlsFileError> {
    const KEY: &str = "amqp.tls_ca_file";
    let text = read(KEY, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(KEY, path, &text)? {
        roots.add(cert).map_err(|e| TlsFileError::BadCertificate {
            key: KEY,
            path: path.to_owned(),
            problem: format!("a certificate cannot be used as a CA: {e}"),
        })?;
    }
    Ok(text)
}

fn client_identity(cert: &Path, key: &Path) -> Result<OwnedIdentity, TlsFileError> {
    const CERT: &str = "amqp.tls_client_cert";
    const KEY: &str = "amqp.tls_client_key";
    let cert_text = read(CERT, cert)?;
    let chain = certificates(CERT, cert, &cert_text)?;
    let key_text = read(KEY, key)?;
    let der =
        PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(|e| TlsFileError::BadKey {
            key: KEY,
            path: key.to_owned(),
            problem: e.to_string(),
        })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, der, &provider)
        .map_err(|e| TlsFileError::KeyMismatch(e.to_string()))?;
    Ok(OwnedIdentity::PKCS8 {
        pem: cert_text.into_bytes(),
        key: key_text.into_bytes(),
    })
}

/// Every certificate in the file; any block that is not one is an error.
fn certificates(
    key: &'static str,
    path: &Path,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bad = |problem: String| TlsFileError::BadCertificate {
        key,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("a PEM block cannot be read: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    for cert in &certs {
        webpki_parse(cert).map_err(|e| bad(format!("a certificate is malformed: {e}")))?;
    }
    Ok(certs)
}

/// Parses a certificate the way rustls will at the handshake.
fn webpki_parse(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    rustls::server::ParsedCertificate::try_from(cert).map(drop)
}

/// A regular file of at most [`MAX_FILE`], as text.
fn read(key: &'static str, path: &Path) -> Result<String, TlsFileError> {
    let unreadable = |source| TlsFileError::Unreadable {
        key,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(TlsFileError::NotAFile {
            key,
            path: path.to_owned(),
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE), &mut text)
        .map_err(unreadable)?;
    Ok(text)
}

/// Tells a verdict an operator must act on (TLS, a refused login or vhost:
/// permanent) from a broker that is away (transient).
fn classify(error: lapin::Error, at: BrokerAddress) -> ConnectError {
    let verdict = match error.kind() {
        lapin::ErrorKind::IOError(io) => rustls_error(io),
        lapin::ErrorKind::ProtocolError(amqp) => return refusal(amqp, &error, at),
        _ => None,
    };
    match verdict.map(|tls| (verdict_of(&tls), tls)) {
        Some((Some(verdict), _)) => verdict,
        Some((None, tls)) => {
            tracing::error!(error = %tls, "TLS with the broker failed; trying again");
            ConnectError::Unreachable { at, source: error }
        }
        None => ConnectError::Unreachable { at, source: error },
    }
}

/// The broker closed the connection during the handshake. RabbitMQ answers
/// a wrong user or password with `connection.close` 403 `ACCESS_REFUSED`
/// (it announces the `authentication_failure_close` capability, see
/// <https://www.rabbitmq.com/docs/access-control>), and a vhost that is
/// missing or not permitted with 530 `NOT_ALLOWED`.
fn refusal(
    amqp: &lapin::protocol::AMQPError,
    error: &lapin::Error,
    at: BrokerAddress,
) -> ConnectError {
    let detail = amqp.get_message().to_string();
    let user = at.user.clone();
    match amqp.get_id() {
        403 => ConnectError::LoginRefused { at, user, detail },
        530 => ConnectError::VhostRefused {
            vhost: at.vhost.clone(),
            at,
            user,
            detail,
        },
        _ => ConnectError::Unreachable {
            at,
            source: error.clone(),
        },
    }
}

/// The permanent failures among rustls's errors, with what to change.
fn verdict_of(tls: &rustls::Error) -> Option<ConnectError> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let detail = tls.to_string();
    match tls {
        E::InvalidCertificate(
            C::Expired | C::NotValidYet | C::ExpiredContext { .. } | C::NotValidYetContext { .. },
        ) => Some(ConnectError::Untrusted {
            detail,
            advice: "it is expired or not yet valid: renew the broker's certificate, or check this host's clock",
        }),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            Some(ConnectError::Untrusted {
                detail,
                advice: "the host in amqp.url must be a name (or IP address) in the broker's certificate",
            })
        }
        E::InvalidCertificate(_) => Some(ConnectError::Untrusted {
            detail,
            advice: "set amqp.tls_ca_file to a PEM file of the CA that signed it",
        }),
        E::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired
            | A::HandshakeFailure,
        ) => Some(ConnectError::Refused(detail)),
        E::AlertReceived(A::ProtocolVersion | A::InsufficientSecurity) | E::PeerIncompatible(_) => {
            Some(ConnectError::Mismatch(detail))
        }
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            Some(ConnectError::NotTls(detail))
        }
        E::InconsistentKeys(_) => Some(ConnectError::TlsFile(TlsFileError::KeyMismatch(detail))),
        _ => None,
    }
}

/// The rustls error somewhere in an I/O error's chain of sources.
fn rustls_error(io: &std::io::Error) -> Option<rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = io.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod frame_max_tests {
    use super::*;

    #[test]
    fn a_url_without_frame_max_asks_for_64_kib() {
        assert_eq!(
            with_default_frame_max("amqp://u:p@h:5672/%2f"),
            "amqp://u:p@h:5672/%2f?frame_max=65536"
        );
        assert_eq!(
            with_default_frame_max("amqps://h/v?heartbeat=30"),
            "amqps://h/v?heartbeat=30&frame_max=65536"
        );
        assert_eq!(
            with_default_frame_max("amqp://h/v?"),
            "amqp://h/v?frame_max=65536"
        );
    }

    #[test]
    fn a_url_that_sets_frame_max_keeps_it() {
        for url in [
            "amqp://h/v?frame_max=131072",
            "amqp://h/v?heartbeat=30&frame_max=32768",
        ] {
            assert!(matches!(with_default_frame_max(url), Cow::Borrowed(u) if u == url));
        }
    }

    #[test]
    fn lapin_reads_the_default() {
        let url = with_default_frame_max("amqp://guest:guest@127.0.0.1:5672/%2f");
        let uri: lapin::uri::AMQPUri = url.parse().expect("a valid URI");
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    #[test]
    fn the_broker_address_names_host_port_user_and_vhost_never_the_password() {
        let amqp = |url: &str| SecretString::from(url.to_owned());
        let tls = BrokerAddress::of(&amqp("amqps://svc:hunter2@mq.example/prod"));
        assert_eq!(
            (tls.to_string(), tls.user.as_str(), tls.vhost.as_str()),
            ("mq.example:5671".to_owned(), "svc", "prod")
        );
        let plain = BrokerAddress::of(&amqp("amqp://mq.example:5673/%2f"));
        assert_eq!(plain.to_string(), "mq.example:5673");
        assert_eq!((plain.user.as_str(), plain.vhost.as_str()), ("guest", "/"));
        assert!(!format!("{tls:?}").contains("hunter2"));
        // Found by the review: a URL lapin cannot parse read `…:0`.
        let odd = BrokerAddress::of(&amqp("amqp://u:pw@mq.example/%2f?heartbeat=abc"));
        assert_eq!(odd.to_string(), "(unparsable amqp.url)");
    }

    fn pem_pair(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Settings whose files are in a new directory under `dir`.
    fn settings(dir: &Path, ca: Option<&str>, pair: Option<(&str, &str)>) -> AmqpSettings {
        let dir = tempfile::tempdir_in(dir).unwrap().keep();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        AmqpSettings {
            url: "amqps://broker/%2f".into(),
            tls_ca_file: ca.map(|text| write("ca.pem", text)),
            tls_client_cert: pair.map(|(cert, _)| write("client.pem", cert)),
            tls_client_key: pair.map(|(_, key)| write("client.key", key)),
            ..AmqpSettings::default()
        }
    }

    fn error(amqp: &AmqpSettings) -> String {
        tls_config(amqp).map(drop).unwrap_err().to_string()
    }

    #[test]
    fn good_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = pem_pair("ca");
        let (cert, key) = pem_pair("client");
        let tls = tls_config(&settings(dir.path(), Some(&ca), Some((&cert, &key)))).unwrap();
        assert_eq!(tls.cert_chain.as_deref(), Some(ca.as_str()));
        assert!(tls.identity.is_some());
    }

    #[test]
    fn each_bad_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = pem_pair("ca");
        let (cert, key) = pem_pair("client");
        let (_, other_key) = pem_pair("other");
        let corrupt = format!("{ca}-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let cases: [(AmqpSettings, &[&str]); 6] = [
            (
                settings(dir.path(), Some("hello"), None),
                &["amqp.tls_ca_file", "holds no certificate"],
            ),
            (
                settings(dir.path(), Some(&corrupt), None),
                &["amqp.tls_ca_file", "cannot be read"],
            ),
            (
                settings(dir.path(), Some(not_a_cert), None),
                &["amqp.tls_ca_file", "malformed"],
            ),
            (
                settings(dir.path(), None, Some((&cert, &other_key))),
                &["amqp.tls_client_key does not belong to the certificate in amqp.tls_client_cert"],
            ),
            (
                settings(dir.path(), None, Some((&cert, "nope"))),
                &["amqp.tls_client_key", "no PEM private key"],
            ),
            (
                settings(dir.path(), None, Some((&key, &key))),
                &["amqp.tls_client_cert", "holds no certificate"],
            ),
        ];
        for (amqp, expected) in cases {
            let err = error(&amqp);
            for part in expected {
                assert!(err.contains(part), "{part:?} not in {err}");
            }
        }
    }

    #[test]
    fn a_device_or_a_missing_file_is_refused_without_reading_it() {
        let amqp = AmqpSettings {
            tls_ca_file: Some("/dev/zero".into()),
            ..AmqpSettings::default()
        };
        assert!(
            error(&amqp).contains("not a regular file"),
            "{}",
            error(&amqp)
        );
        let amqp = AmqpSettings {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..AmqpSettings::default()
        };
        assert!(error(&amqp).contains("cannot read it"), "{}", error(&amqp));
    }

    #[test]
    fn tls_verdicts_are_permanent_with_advice_and_other_failures_are_not() {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let verdict = |e: E| verdict_of(&e).map(|v| v.to_string());
        assert!(
            verdict(E::InvalidCertificate(C::UnknownIssuer))
                .unwrap()
                .contains("set amqp.tls_ca_file")
        );
        assert!(
            verdict(E::InvalidCertificate(C::Expired))
                .unwrap()
                .contains("this host's clock")
        );
        assert!(
            verdict(E::InvalidCertificate(C::NotValidForName))
                .unwrap()
                .contains("a name (or IP address)")
        );
        assert!(
            verdict(E::AlertReceived(A::CertificateRequired))
                .unwrap()
                .contains("amqp.tls_client_cert")
        );
        assert!(
            verdict(E::AlertReceived(A::ProtocolVersion))
                .unwrap()
                .contains("TLS 1.2 or 1.3")
        );
        assert!(
            verdict(E::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))
            .unwrap()
            .contains("usually 5671")
        );
        assert_eq!(verdict(E::AlertReceived(A::InternalError)), None);
        assert_eq!(verdict(E::General("x".into())), None);
    }

    /// Found by the review (issue 23): an `AMQP_URL` (or `AMQP_URL_FILE`) listing the
    /// nodes one a line, not comma-separated, is not split; the URL parser
    /// drops the newline, so the second address, password included, becomes
    /// the first one's vhost. The config check lets it through, and the
    /// vhost is what `VhostRefused` prints (and the broker logs).
    #[test]
    fn a_newline_separated_address_list_never_puts_a_password_in_a_vhost() {
        let list = "amqp://svc:first@node-a:5672/%2f\namqp://svc:hunter2@node-b:5672/%2f";
        let addresses = crate::settings::split_addresses(list);
        let amqp = AmqpSettings {
            url: addresses[0].clone().into(),
            urls: if addresses.len() > 1 {
                addresses.iter().cloned().map(Into::into).collect()
            } else {
                Vec::new()
            },
            ..AmqpSettings::default()
        };
        if amqp.url_scheme().is_err() {
            return; // refused: fine, as long as the message is secret-free
        }
        for url in amqp.addresses() {
            let at = BrokerAddress::of(url);
            let refused = ConnectError::VhostRefused {
                user: at.user.clone(),
                vhost: at.vhost.clone(),
                detail: String::new(),
                at,
            };
            assert!(
                !refused.to_string().contains("hunter2"),
                "accepted, and the error names the password: {refused}"
            );
        }
    }

    /// Found by the review (issue 23): a comma in the wrong place is taken into a URL.
    /// A trailing comma, or an empty element, ends up in the vhost of the
    /// address before it ("/,"), which the config check accepts: the daemon
    /// then meets a vhost refusal instead of a config error at start-up.
    #[test]
    fn a_trailing_comma_or_an_empty_element_is_refused_at_start_up() {
        for list in [
            "amqp://u:p@a/%2f,",
            "amqp://u:p@a/%2f,,amqp://u:p@b/%2f",
            "amqp://u:p@a/%2f, ,amqp://u:p@b/%2f",
        ] {
            let addresses = crate::settings::split_addresses(list);
            let amqp = AmqpSettings {
                urls: addresses.iter().cloned().map(Into::into).collect(),
                ..AmqpSettings::default()
            };
            let checked = amqp.url_scheme();
            let vhosts: Vec<String> = amqp
                .addresses()
                .iter()
                .map(|u| BrokerAddress::of(u).vhost)
                .collect();
            assert!(
                checked.is_err() || vhosts.iter().all(|v| v == "/"),
                "{list:?} accepted with vhosts {vhosts:?}"
            );
        }
    }

    /// Found by the review (issue 23): `of_all`'s own doc says a refused login is
    /// the cluster's, not a node's (the nodes share their users), yet a
    /// refusal next to a node that is merely down is not permanent: at
    /// start-up with a wrong password and one node away for maintenance,
    /// `run` does not exit 2 and logs WARN "broker unavailable" (not the
    /// ERROR "refuses this daemon") at every attempt, forever.
    #[test]
    fn a_refused_login_beside_a_node_that_is_down_is_a_refusal() {
        let at = |host: &str| BrokerAddress {
            host: host.into(),
            port: 5672,
            user: "svc".into(),
            vhost: "/".into(),
        };
        let mixed = ConnectError::of_all(vec![
            ConnectError::LoginRefused {
                at: at("node-a"),
                user: "svc".into(),
                detail: "ACCESS_REFUSED".into(),
            },
            ConnectError::Unreachable {
                at: at("node-b"),
                source: lapin::Error::from(std::io::Error::other("connection refused")),
            },
        ]);
        assert!(mixed.is_permanent(), "{mixed}");
    }
}
