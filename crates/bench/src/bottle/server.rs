//! The loopback HTTPS server every proxy path talks to, and the test CA behind its
//! certificate. It answers every request with the same few bytes, keeps connections alive,
//! and checks the `Authorization` header against what that host should receive (the real
//! secret where the proxy injects it, the placeholder everywhere else), counting both.

use anyhow::{Context, Result};
use hudsucker::hyper::body::Incoming;
use hudsucker::hyper::server::conn::http1;
use hudsucker::hyper::service::service_fn;
use hudsucker::hyper::{Request, Response, StatusCode};
use hudsucker::hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

/// The answer body: small, so the figures are about the path, not the payload.
const ANSWER: &str = "{\"ok\":true}\n";

/// A test CA and the server's certificate for the bench's host names.
pub(super) struct Pki {
    /// The CA certificate, PEM: the clients' and the proxies' upstream root.
    pub(super) ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    /// A fresh CA and a server certificate naming `hosts`.
    pub(super) fn new(hosts: &[&str]) -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the test CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "bytebot-bench test CA");
        let ca_cert = ca.self_signed(&ca_key).context("signing the test CA")?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().context("generating the server key")?;
        let mut leaf =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
        leaf.distinguished_name.push(DnType::CommonName, hosts[0]);
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// What the server saw: requests whose `Authorization` was what their host should get, and
/// the others (answered 403).
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) right: AtomicU64,
    pub(super) wrong: AtomicU64,
    /// TLS connections accepted: shows whether keep-alive held on a path.
    pub(super) connections: AtomicU64,
}

impl Counts {
    /// (right, wrong, connections) so far.
    pub(super) fn get(&self) -> (u64, u64, u64) {
        (
            self.right.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
        )
    }
}

/// The running server.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) counts: Arc<Counts>,
}

/// Starts the server on `rt` (its own runtime, so its CPU is counted apart). `expected`
/// maps a host name to the `Authorization` value it must receive.
pub(super) fn start(
    rt: &tokio::runtime::Runtime,
    pki: &Pki,
    expected: HashMap<String, String>,
) -> Result<Server> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
    .context("configuring the test server's TLS")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    let expected = Arc::new(expected);
    let c = Arc::clone(&counts);
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, counts, expected) =
                (acceptor.clone(), Arc::clone(&c), Arc::clone(&expected));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counts.connections.fetch_add(1, Ordering::Relaxed);
                let service = service_fn(move |req| {
                    let answer = answer(&req, &expected, &counts);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(Server { addr, counts })
}

fn answer(
    req: &Request<Incoming>,
    expected: &HashMap<String, String>,
    counts: &Counts,
) -> Response<hudsucker::Body> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let right = expected.get(host).is_some_and(|e| e.as_bytes() == auth);
    let (status, body) = if right {
        counts.right.fetch_add(1, Ordering::Relaxed);
        (StatusCode::OK, ANSWER.to_owned())
    } else {
        counts.wrong.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::FORBIDDEN,
            format!(
                "host {host:?} got authorization {:?}\n",
                String::from_utf8_lossy(auth)
            ),
        )
    };
    let mut res = Response::new(hudsucker::Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        "content-type",
        hudsucker::hyper::header::HeaderValue::from_static("application/json"),
    );
    res
}
