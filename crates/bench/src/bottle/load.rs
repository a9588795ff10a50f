//! The load client: `connections` workers, each with exactly one keep-alive HTTPS connection
//! of its own (through an HTTP CONNECT proxy, or direct), send requests back to back for a
//! warm-up and then the measured window; only requests started in the window count. Raw
//! hyper rather than a pooled client, so every path gets the same connections and no more
//! (a pool opens spare connections when a finished one is not back in time, and a spare TLS
//! handshake costs a slow proxy far more than a fast one).

use super::Quantiles;
use super::server::Counts;
use super::usage::{Snapshot, Usage};
use anyhow::{Context, Result, ensure};
use hudsucker::hyper::body::Body as _;
use hudsucker::hyper::client::conn::http1;
use hudsucker::hyper::{Request, StatusCode};
use hudsucker::hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One load run's figures.
#[derive(Debug, Clone, Default)]
pub(super) struct Run {
    /// Requests per second over the measured window.
    pub(super) per_s: f64,
    /// Latency of the requests measured.
    pub(super) latency: Quantiles,
    /// Answers that were not 200, and transport errors.
    pub(super) errors: usize,
    /// The first of them, for the report.
    pub(super) first_error: Option<String>,
    /// CPU meanwhile.
    pub(super) usage: Usage,
    /// Requests the server found carrying the right `Authorization` (whole run).
    pub(super) server_right: u64,
    /// Requests the server found carrying another one.
    pub(super) server_wrong: u64,
    /// TLS connections the server accepted during the run (warm-up included).
    pub(super) server_connections: u64,
}

/// Where and how a worker connects: straight to the server, or through an HTTP proxy with
/// CONNECT; then TLS (ALPN http/1.1) trusting `tls`'s roots, then HTTP/1.1 keep-alive.
#[derive(Clone)]
pub(super) struct Target {
    /// The host name in CONNECT, SNI and `Host`.
    pub(super) host: String,
    /// The server's port (in CONNECT and `Host`).
    pub(super) port: u16,
    /// The proxy, or `None` to connect to `server` directly.
    pub(super) proxy: Option<SocketAddr>,
    /// The server, for direct connections.
    pub(super) server: SocketAddr,
    /// The client's TLS settings (same roots on every path).
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// The `Authorization` value every request carries.
    pub(super) authorization: String,
}

/// The TLS client every path uses: these roots only, ring, HTTP/1.1 by ALPN.
pub(super) fn tls_config(roots: &[&str]) -> Result<Arc<rustls::ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store
                .add(cert.context("a root certificate")?)
                .context("adding a root certificate")?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Sender = http1::SendRequest<hudsucker::Body>;

/// One keep-alive connection of a worker: TCP, CONNECT when there is a proxy, TLS, HTTP/1.1.
async fn connect(t: &Target) -> Result<Sender> {
    let mut tcp = TcpStream::connect(t.proxy.unwrap_or(t.server))
        .await
        .context("connecting")?;
    tcp.set_nodelay(true)?;
    if t.proxy.is_some() {
        let authority = format!("{}:{}", t.host, t.port);
        tcp.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut head = Vec::with_capacity(128);
        let mut byte = [0u8; 1];
        // Byte by byte, so nothing after the proxy's answer is consumed.
        while !head.ends_with(b"\r\n\r\n") {
            ensure!(head.len() < 8192, "the proxy's CONNECT answer has no end");
            ensure!(
                tcp.read(&mut byte).await? == 1,
                "the proxy closed after CONNECT"
            );
            head.push(byte[0]);
        }
        let status = String::from_utf8_lossy(&head);
        ensure!(
            status.split_whitespace().nth(1) == Some("200"),
            "CONNECT {authority}: {}",
            status.lines().next().unwrap_or_default()
        );
    }
    let name = ServerName::try_from(t.host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&t.tls))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Runs the load: `connections` workers, each on its own connection (made again only when it
/// breaks), for `warmup` then `seconds`. `external` is a proxy running as its own process
/// (its CPU is counted as the proxy's).
pub(super) async fn run(
    target: Target,
    (warmup, seconds, connections): (u64, u64, usize),
    external: Option<u32>,
    counts: &Counts,
) -> Run {
    let (right0, wrong0, conns0) = counts.get();
    let start = Instant::now();
    let from = start + Duration::from_secs(warmup);
    let until = from + Duration::from_secs(seconds);
    let monitor = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let a = Snapshot::take(external);
        tokio::time::sleep_until(until.into()).await;
        a.until(&Snapshot::take(external))
    });
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut lat_us: Vec<u32> = Vec::with_capacity(16 * 1024);
            let mut errors = 0usize;
            let mut first_error = None;
            let mut sender: Option<Sender> = None;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let result = one(&mut sender, &target).await;
                // A refused request leaves the connection usable; a broken one is made again.
                if sender.as_ref().is_some_and(Sender::is_closed) {
                    sender = None;
                }
                if t0 >= from {
                    lat_us.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if let Err(e) = result {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                } else if result.is_err() {
                    // A failing warm-up would otherwise spin; the measured window reports it.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (lat_us, errors, first_error)
        }));
    }
    let mut out = Run::default();
    let mut all: Vec<f64> = Vec::new();
    for w in workers {
        match w.await {
            Ok((lat, errors, first_error)) => {
                all.extend(lat.into_iter().map(|us| f64::from(us) / 1000.0));
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("a worker failed: {e}"));
            }
        }
    }
    out.usage = monitor.await.unwrap_or_default();
    out.per_s = all.len() as f64 / seconds.max(1) as f64;
    out.latency = Quantiles::of(all);
    let (right1, wrong1, conns1) = counts.get();
    out.server_right = right1 - right0;
    out.server_wrong = wrong1 - wrong0;
    out.server_connections = conns1 - conns0;
    out
}

/// One request on the worker's connection (made first when there is none): Ok when the
/// answer is 200 and its body was read.
async fn one(sender: &mut Option<Sender>, t: &Target) -> Result<()> {
    let s = match sender {
        Some(s) => s,
        None => sender.insert(connect(t).await?),
    };
    s.ready().await?;
    let req = Request::get("/v1/ping")
        .header("host", format!("{}:{}", t.host, t.port))
        .header("authorization", t.authorization.as_str())
        .body(hudsucker::Body::empty())?;
    let res = s.send_request(req).await?;
    let status = res.status();
    let mut body = res.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    ensure!(
        status == StatusCode::OK,
        "HTTP {status}: {}",
        String::from_utf8_lossy(&bytes).trim()
    );
    Ok(())
}
