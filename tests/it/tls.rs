//! TLS to the broker: a TLS-terminating proxy (tokio-rustls, with a
//! throw-away CA made by rcgen) in front of the local broker, which speaks
//! plain AMQP behind it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, amqp_url, event};
use crate::process::DaemonProcess;

/// A CA, and a certificate it signed.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A new CA and a certificate for `name`, for a server or a client.
fn pki(ca_name: &str, name: &str, usage: ExtendedKeyUsagePurpose) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let (cert_pem, key_pem) = issue(&ca, name, usage);
    Pki {
        ca_pem: ca.pem(),
        cert_pem,
        key_pem,
    }
}

fn issue(
    ca: &CertifiedIssuer<'_, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// Terminates TLS on a local port and forwards the plain bytes to the broker.
struct TlsProxy {
    addr: SocketAddr,
    /// TLS sessions that completed their handshake.
    handshakes: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TlsProxy {
    /// `clients`: the CA whose client certificates are required (mutual TLS).
    async fn start(server: &Pki, clients: Option<&str>) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(server, clients)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = broker_addr();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (count, stopped) = (Arc::clone(&handshakes), stop.clone());
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = stopped.cancelled() => return,
                };
                let (acceptor, count, stopped) =
                    (acceptor.clone(), Arc::clone(&count), stopped.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(inbound).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound) => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            stop,
        }
    }

    /// The broker URL through this proxy (`localhost`: the certificate's name).
    fn url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.addr.port())
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn server_config(server: &Pki, clients: Option<&str>) -> ServerConfig {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match clients {
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(cert.expect("client CA")).expect("add client CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("server chain");
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("server key");
    builder.with_single_cert(chain, key).expect("server config")
}

/// The local broker's address, from `AMQP_URL`.
fn broker_addr() -> SocketAddr {
    let url = url::Url::parse(&amqp_url()).expect("AMQP_URL");
    let host = url.host_str().expect("host");
    let port = url.port().unwrap_or(5672);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("resolve")
        .next()
        .expect("an address")
}

/// A CA and a broker certificate for `localhost` (the proxy's URL).
fn broker_pki(ca_name: &str) -> Pki {
    pki(ca_name, "localhost", ExtendedKeyUsagePurpose::ServerAuth)
}

/// A CA and a client certificate for the daemon.
fn client_pki() -> Pki {
    pki(
        "zds client CA",
        "zoom-dept-sync",
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// The PEM texts of the daemon's TLS keys, written to `dir` as files.
#[derive(Default)]
struct Files<'a> {
    ca: Option<&'a str>,
    cert: Option<&'a str>,
    key: Option<&'a str>,
}

impl Files<'_> {
    /// Writes each file and sets its key in `amqp`.
    fn apply(&self, dir: &Path, amqp: &mut zoom_dept_sync::config::AmqpSettings) {
        let write = |name: &str, text: Option<&str>| {
            text.map(|text| {
                let path = dir.join(name);
                std::fs::write(&path, text).expect("write PEM");
                path
            })
        };
        amqp.tls_ca_file = write("ca.pem", self.ca);
        amqp.tls_client_cert = write("client.pem", self.cert);
        amqp.tls_client_key = write("client.key", self.key);
    }
}

/// Runs the binary through `proxy` with `files`: it must stop at start-up
/// with exit 2 (fix the configuration; supervisors do not restart it),
/// without a silent retry. Its log, for the message.
async fn stopped_at_start_up(proxy: &TlsProxy, files: Files<'_>) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::prepare_with(|s| files.apply(dir.path(), &mut s.amqp)).await;
    let mut daemon = DaemonProcess::start_against(&app.config_toml(), &[], &proxy.url());
    let code = daemon.wait_exit(Duration::from_secs(20)).await;
    let log = daemon.log();
    assert_eq!(code, Some(2), "exit 2: fix the configuration; log:\n{log}");
    assert_eq!(
        log.matches("broker unavailable; trying again").count(),
        0,
        "no silent retries; log:\n{log}"
    );
    log
}

/// Consumes through the proxy with the CA from `amqp.tls_ca_file` and a
/// client certificate the proxy requires: every event is applied, and each
/// of the daemon's connections went through a TLS handshake.
#[tokio::test]
async fn the_daemon_consumes_through_tls_with_a_private_ca_and_a_client_certificate() {
    let (server, client) = (broker_pki("zds broker CA"), client_pki());
    let proxy = TlsProxy::start(&server, Some(&client.ca_pem)).await;
    let dir = tempfile::tempdir().expect("dir");
    let files = Files {
        ca: Some(&server.ca_pem),
        cert: Some(&client.cert_pem),
        key: Some(&client.key_pem),
    };
    let seed = (0..3).fold(crate::helpers::mapped_zoom(), |seed, i| {
        seed.user(&format!("u{i}"), &format!("u{i}@example.com"), &["grp_eng"])
    });
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| {
        s.amqp.url = proxy.url().into();
        files.apply(dir.path(), &mut s.amqp);
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    for i in 0..3 {
        let id = format!("t{i}");
        app.publish_json(event(&id, &format!("u{i}"), Some("Engineering"), "Sales"))
            .await;
    }
    let requests = crate::helpers::wait_for_calls(&zoom, 3).await;
    let mut paths: Vec<_> = requests.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/v2/groups/grp_eng/members/u0",
            "/v2/groups/grp_eng/members/u1",
            "/v2/groups/grp_eng/members/u2"
        ]
    );
    // The consuming and the publishing connection.
    assert_eq!(proxy.handshakes.load(Ordering::Relaxed), 2);
    app.stop_and_assert_queues_empty().await;
    for user in ["u0", "u1", "u2"] {
        assert_eq!(
            crate::helpers::groups_of(&zoom, user),
            ["grp_sales"],
            "{user}"
        );
    }
}

/// A broker certificate from a CA the daemon was not given: it stops at
/// start-up, saying which key to set, instead of retrying in silence.
#[tokio::test]
async fn a_broker_certificate_from_another_ca_stops_the_daemon_with_the_key_to_set() {
    let (server, other) = (broker_pki("zds broker CA"), broker_pki("zds other CA"));
    let proxy = TlsProxy::start(&server, None).await;
    let files = Files {
        ca: Some(&other.ca_pem),
        ..Files::default()
    };
    let log = stopped_at_start_up(&proxy, files).await;
    assert!(
        log.contains("the broker's TLS certificate is not trusted")
            && log.contains("UnknownIssuer")
            && log.contains("set amqp.tls_ca_file"),
        "log:\n{log}"
    );
    assert_eq!(proxy.handshakes.load(Ordering::Relaxed), 0);
}

/// A broker that requires a client certificate the daemon does not have:
/// it stops at start-up, naming the client certificate keys.
#[tokio::test]
async fn a_broker_that_requires_a_client_certificate_stops_the_daemon_without_one() {
    let (server, client) = (broker_pki("zds broker CA"), client_pki());
    let proxy = TlsProxy::start(&server, Some(&client.ca_pem)).await;
    let files = Files {
        ca: Some(&server.ca_pem),
        ..Files::default()
    };
    let log = stopped_at_start_up(&proxy, files).await;
    assert!(
        log.contains("the broker refused the TLS handshake")
            && log.contains("amqp.tls_client_cert"),
        "log:\n{log}"
    );
}

/// A client key that does not belong to the client certificate: the daemon
/// stops at start-up naming both keys (it used to retry as if the broker
/// were away).
#[tokio::test]
async fn a_client_key_of_another_certificate_stops_the_daemon_naming_both_keys() {
    let (server, client, other) = (broker_pki("zds broker CA"), client_pki(), client_pki());
    let proxy = TlsProxy::start(&server, Some(&client.ca_pem)).await;
    let files = Files {
        ca: Some(&server.ca_pem),
        cert: Some(&client.cert_pem),
        key: Some(&other.key_pem),
    };
    let log = stopped_at_start_up(&proxy, files).await;
    assert!(
        log.contains(
            "amqp.tls_client_key does not belong to the certificate in amqp.tls_client_cert"
        ),
        "log:\n{log}"
    );
    assert_eq!(proxy.handshakes.load(Ordering::Relaxed), 0);
}
