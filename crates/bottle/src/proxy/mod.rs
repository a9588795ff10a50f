//! The bottle's egress proxy: in-process, on hudsucker (hyper + rustls + rcgen).
//!
//! - HTTP (absolute-form requests) and HTTPS through CONNECT. Per host: deny list, then allow
//!   list, else refused; a refusal is a 403 naming the host and the rule, and an audit line.
//! - SSRF guard: the proxy resolves names itself, drops loopback, private, link-local
//!   (169.254.169.254), CGNAT, multicast and other non-public addresses unless
//!   `network.allow_private` names the host or address, and connects to an address from that
//!   checked list, never to a second resolution (DNS rebinding).
//! - Secret custody: CONNECTs to a host with a bound secret are intercepted (TLS terminated with
//!   a certificate from the installation's [`Ca`]); the placeholder becomes the real value in
//!   request headers (and bodies where the secret says so), and the real value becomes the
//!   placeholder again in responses. Every other host is tunnelled untouched, so a placeholder
//!   sent there arrives as the placeholder.
//! - Audit: one JSON line per request and per tunnel ([`crate::audit`]), and an
//!   [`EgressSummary`] at the end.
//!
//! Listening on a unix socket: hudsucker 0.22's `Proxy` accepts only a `TcpListener` and keeps
//! its connection service private, so [`Listen::Unix`] runs it on an internal `127.0.0.1:0`
//! listener and bridges each unix connection to it. The proxy serves only connections the
//! bridge made (it knows their local addresses); anything else reaching that port directly gets
//! a 403.

mod body;
mod exchange;
mod handler;
mod mitm;
mod net;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hudsucker::Proxy;
use hudsucker::hyper_util::client::legacy::Client;
use hudsucker::hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{AuditLog, EgressSummary};
use crate::ca::Ca;
use crate::policy::{NetworkPolicy, ResolvedSecrets};

pub use net::non_public_reason;

use exchange::AuditContext;
use handler::{Handler, SecretBytes, Shared};
use mitm::MitmCa;
use net::{Guard, GuardedConnector};

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path (created with mode 0600; a stale socket there is replaced).
    /// The sandbox reaches it through its in-sandbox bridge.
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:0` picks a free port), for tests and local clients such as
    /// the desktop's browser.
    Tcp(SocketAddr),
}

/// Everything one proxy needs.
#[derive(Debug)]
pub struct ProxyConfig {
    /// The bottle run's id, written in every audit line.
    pub bottle_id: String,
    /// Host lists and the private-address exceptions.
    pub network: NetworkPolicy,
    /// Secrets held for this run (their placeholders are what the sandbox has).
    pub secrets: ResolvedSecrets,
    /// The installation's CA, for intercepted hosts.
    pub ca: Arc<Ca>,
    /// The audit file (`audit.jsonl`), created or appended to.
    pub audit_path: PathBuf,
    /// Where to listen.
    pub listen: Listen,
    /// PEM text of extra roots the upstream TLS client trusts besides Mozilla's (tests, private
    /// registries); each entry may hold several certificates.
    pub extra_upstream_roots: Vec<String>,
    /// Host names resolved to fixed addresses instead of through DNS, like `curl --resolve`
    /// (port 0 keeps the requested port). The SSRF guard still applies: a loopback target needs
    /// the host in `network.allow_private`.
    pub resolve: HashMap<String, SocketAddr>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A socket or file could not be set up.
    #[error("bottle proxy: {what} {target}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path or address involved.
        target: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An extra upstream root is not a usable certificate.
    #[error("bottle proxy: extra upstream root #{index} is not a usable PEM certificate: {reason}")]
    Root {
        /// Position in `extra_upstream_roots`.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// The TLS client could not be configured.
    #[error("bottle proxy: cannot configure TLS: {0}")]
    Tls(String),
    /// Something other than a socket is in the way of the unix socket path.
    #[error("bottle proxy: {0} exists and is not a socket; remove it or pick another path")]
    PathTaken(PathBuf),
}

/// Starts egress proxies.
#[derive(Debug)]
pub struct EgressProxy;

/// A running proxy. Dropping it stops the proxy without waiting; [`ProxyHandle::shutdown`]
/// stops it, waits for the audit lines and returns the run's summary.
#[derive(Debug)]
pub struct ProxyHandle {
    tcp_addr: Option<SocketAddr>,
    internal_addr: SocketAddr,
    socket_path: Option<PathBuf>,
    audit: Arc<AuditLog>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    bridge: Option<JoinHandle<()>>,
    live_tunnels: Arc<()>,
}

impl EgressProxy {
    /// Starts a proxy on the current tokio runtime.
    pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
        let io = |what: &'static str, target: String| {
            move |source| ProxyError::Io {
                what,
                target,
                source,
            }
        };
        let audit = AuditLog::open(&config.audit_path).await.map_err(io(
            "cannot open the audit file",
            config.audit_path.display().to_string(),
        ))?;

        let network = Arc::new(config.network);
        let guard = Arc::new(Guard::new(Arc::clone(&network), &config.resolve));
        let client_config = upstream_tls(&config.extra_upstream_roots)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(GuardedConnector {
                guard: Arc::clone(&guard),
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http1_preserve_header_case(true)
            .build(https);

        let (listener, socket_path, bridged) = match &config.listen {
            Listen::Tcp(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(io("cannot listen on", addr.to_string()))?;
                (l, None, None)
            }
            Listen::Unix(path) => {
                let internal = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                let l = TcpListener::bind(internal)
                    .await
                    .map_err(io("cannot listen on", internal.to_string()))?;
                (
                    l,
                    Some(path.clone()),
                    Some(Arc::new(Mutex::new(HashSet::new()))),
                )
            }
        };
        let internal_addr = listener
            .local_addr()
            .map_err(io("cannot read the address of", "the listener".to_owned()))?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let live_tunnels = Arc::new(());
        let names: Vec<String> = config.secrets.iter().map(|s| s.name.clone()).collect();
        let secrets = config
            .secrets
            .iter()
            .map(|s| SecretBytes {
                hosts: s.hosts.clone(),
                in_body: s.in_body,
                placeholder: Arc::from(s.placeholder.as_bytes()),
                value: Arc::from(s.value.expose().as_bytes()),
            })
            .collect();
        let shared = Arc::new(Shared {
            network,
            secrets,
            guard,
            audit: Arc::new(AuditContext {
                log: Arc::clone(&audit),
                bottle: config.bottle_id,
                secret_names: names,
            }),
            bridged: bridged.clone(),
            stop: stop_rx.clone(),
            live_tunnels: Arc::downgrade(&live_tunnels),
        });

        let bridge = match (&socket_path, bridged) {
            (Some(path), Some(bridged)) => {
                let unix = bind_unix(path)?;
                Some(tokio::spawn(bridge(
                    unix,
                    internal_addr,
                    bridged,
                    stop_rx.clone(),
                )))
            }
            _ => None,
        };

        let mut shutdown = stop_rx;
        let proxy = Proxy::builder()
            .with_listener(listener)
            .with_client(client)
            .with_ca(MitmCa::new(config.ca))
            .with_http_handler(Handler {
                shared,
                current: None,
                intercepted: None,
            })
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stopped| *stopped).await;
            })
            .build();
        let server = tokio::spawn(async move {
            if let Err(e) = proxy.start().await {
                tracing::error!(error = %e, "bottle proxy stopped with an error");
            }
        });

        Ok(ProxyHandle {
            tcp_addr: socket_path.is_none().then_some(internal_addr),
            internal_addr,
            socket_path,
            audit,
            stop: stop_tx,
            server: Some(server),
            bridge,
            live_tunnels,
        })
    }
}

impl ProxyHandle {
    /// The TCP address clients use (with [`Listen::Tcp`]).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The loopback TCP listener hudsucker serves on: the listen address with [`Listen::Tcp`];
    /// with [`Listen::Unix`] an internal one that serves the bridge's own connections only
    /// (anything else gets a 403). For diagnostics and tests.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// The unix socket clients use (with [`Listen::Unix`]).
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// The audit file.
    pub fn audit_path(&self) -> &Path {
        self.audit.path()
    }

    /// What the run did so far (requests still in flight are not counted yet).
    pub fn summary(&self) -> EgressSummary {
        self.audit.summary()
    }

    /// Waits until every audit line recorded so far is in the file.
    pub async fn flush_audit(&self) -> std::io::Result<()> {
        self.audit.flush().await
    }

    /// Stops accepting, ends tunnels, lets open requests finish (up to 5 s), writes every audit
    /// line and returns the run's summary. The unix socket file is removed.
    pub async fn shutdown(mut self) -> EgressSummary {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
        {
            tracing::warn!("bottle proxy: open requests did not finish within 5 s");
        }
        if let Some(bridge) = self.bridge.take() {
            let _ = bridge.await;
        }
        // Tunnels stop on the same signal; their audit lines are written as they end.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.live_tunnels) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = self.audit.flush().await {
            tracing::error!(error = %e, "bottle proxy: the audit file may be incomplete");
        }
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
        self.audit.summary()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The upstream TLS client: Mozilla's roots (webpki-roots) plus `extra`, ring, HTTP/1.1.
fn upstream_tls(extra: &[String]) -> Result<rustls::ClientConfig, ProxyError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (index, pem) in extra.iter().enumerate() {
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| ProxyError::Root {
                index,
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| ProxyError::Root {
                index,
                reason: e.to_string(),
            })?;
            any = true;
        }
        if !any {
            return Err(ProxyError::Root {
                index,
                reason: "no CERTIFICATE block found".to_owned(),
            });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Binds the unix socket with mode 0600, replacing a stale socket left at `path`.
fn bind_unix(path: &Path) -> Result<UnixListener, ProxyError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let io = |what: &'static str| {
        let target = path.display().to_string();
        move |source| ProxyError::Io {
            what,
            target,
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
        }
        Ok(_) => return Err(ProxyError::PathTaken(path.to_owned())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io("cannot listen on"))?;
    // The folder is the caller's to keep private; the mode narrows the socket itself too.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot set the mode of"))?;
    Ok(listener)
}

/// Forwards each unix connection to the internal TCP listener, registering the local address
/// of the forwarding connection before any byte is sent, so the handler can tell it apart.
async fn bridge(
    listener: UnixListener,
    target: SocketAddr,
    bridged: Arc<Mutex<HashSet<SocketAddr>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let mut unix = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "bottle proxy: cannot accept on the unix socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let bridged = Arc::clone(&bridged);
        tokio::spawn(async move {
            let mut tcp = match TcpStream::connect(target).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "bottle proxy: cannot reach its own listener");
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Ok(local) = tcp.local_addr() else { return };
            bridged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(local);
            let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            bridged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&local);
        });
    }
}
