//! Opening one connection to the broker, over TLS when the URL is
//! `amqps://`: the system's CA roots, plus `amqp.tls_ca_file`, plus a client
//! certificate for mutual TLS.
//!
//! The TLS files are read at every connection, so a renewed certificate is
//! used from the next reconnect without a restart. A file that cannot be
//! used, or a broker certificate that is not trusted, is *permanent*:
//! retrying cannot help, so the daemon stops at start-up with the key to
//! change instead of retrying in silence.

use std::path::{Path, PathBuf};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;

use crate::config::AmqpSettings;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    /// The broker's certificate failed verification: a private CA missing
    /// from `amqp.tls_ca_file`, a wrong host name in the URL, an expired
    /// certificate.
    #[error(
        "the broker's TLS certificate is not trusted ({0}): set amqp.tls_ca_file to a PEM file \
         of the CA that signed it, and check that the host in amqp.url is a name in the certificate"
    )]
    Untrusted(String),
    /// The broker refused our client certificate (or asked for one we do
    /// not have).
    #[error(
        "the broker refused the TLS handshake ({0}): check amqp.tls_client_cert and \
         amqp.tls_client_key (the broker may require a client certificate)"
    )]
    Refused(String),
    #[error("{0}")]
    Broker(#[from] lapin::Error),
}

impl ConnectError {
    /// True when trying again cannot succeed without an operator.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Broker(_))
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
    #[error("{key} = {path:?}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{key} = {path:?}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { key: &'static str, path: PathBuf },
}

/// Opens a connection named `name` (shown in the management UI).
pub async fn connect(amqp: &AmqpSettings, name: String) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let tls = tls_config(amqp)?;
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connect_with_config(amqp.url.expose_secret(), properties, tls, runtime)
        .await
        .map_err(classify)
}

/// The TLS settings for lapin: empty (system roots only) unless files are set.
pub fn tls_config(amqp: &AmqpSettings) -> Result<OwnedTLSConfig, TlsFileError> {
    let cert_chain = match &amqp.tls_ca_file {
        Some(path) => Some(certificates("amqp.tls_ca_file", path)?),
        None => None,
    };
    let identity = match (&amqp.tls_client_cert, &amqp.tls_client_key) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: certificates("amqp.tls_client_cert", cert)?.into_bytes(),
            key: private_key("amqp.tls_client_key", key)?,
        }),
        // The config check refuses one without the other.
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The file's text, once it is known to hold at least one certificate.
fn certificates(key: &'static str, path: &Path) -> Result<String, TlsFileError> {
    let text = read(key, path)?;
    let parsed: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if parsed.is_empty() {
        return Err(TlsFileError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(text)
}

fn private_key(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let text = read(key, path)?;
    match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
        Ok(_) => Ok(text.into_bytes()),
        Err(_) => Err(TlsFileError::NoKey {
            key,
            path: path.to_owned(),
        }),
    }
}

fn read(key: &'static str, path: &Path) -> Result<String, TlsFileError> {
    std::fs::read_to_string(path).map_err(|source| TlsFileError::Unreadable {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Tells a TLS verdict (permanent) from a broker that is away (transient).
fn classify(error: lapin::Error) -> ConnectError {
    let verdict = match error.kind() {
        lapin::ErrorKind::IOError(io) => rustls_error(io),
        _ => None,
    };
    match verdict {
        Some(e @ rustls::Error::InvalidCertificate(_)) => ConnectError::Untrusted(e.to_string()),
        Some(e @ rustls::Error::AlertReceived(_)) => ConnectError::Refused(e.to_string()),
        _ => ConnectError::Broker(error),
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
