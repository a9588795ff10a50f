//! The certificates the proxy presents for intercepted hosts, signed by the installation's CA.
//!
//! hudsucker asks for a server configuration per CONNECT authority. The handler hands it an
//! authority of the form `HOST.bottle-intercept.invalid:PORT` (see [`intercept_authority`]):
//! hudsucker's own fallback for a non-TLS stream connects to the authority by name, and that
//! name can never resolve (`.invalid` is reserved), so nothing reaches an upstream without the
//! guard. Certificates are for the real host.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hudsucker::certificate_authority::CertificateAuthority;
use hudsucker::hyper::http::uri::Authority;
use hudsucker::rustls as mitm_rustls;

use crate::ca::Ca;

/// Appended to an intercepted host in the CONNECT authority given to hudsucker.
pub(crate) const INTERCEPT_SUFFIX: &str = ".bottle-intercept.invalid";

/// How long a generated server configuration is reused (leaves are valid for 30 days).
const CACHE_FOR: Duration = Duration::from_secs(24 * 3600);

/// The authority hudsucker gets for an intercepted CONNECT to `host:port`.
pub(crate) fn intercept_authority(host: &str, port: u16) -> String {
    format!("{host}{INTERCEPT_SUFFIX}:{port}")
}

/// Issues (and caches) server configurations for intercepted hosts.
pub(crate) struct MitmCa {
    ca: Arc<Ca>,
    cache: Mutex<HashMap<String, (Instant, Arc<mitm_rustls::ServerConfig>)>>,
}

impl MitmCa {
    pub(crate) fn new(ca: Arc<Ca>) -> MitmCa {
        MitmCa {
            ca,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn config_for(&self, host: &str) -> Arc<mitm_rustls::ServerConfig> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((made, cfg)) = cache.get(host)
            && made.elapsed() < CACHE_FOR
        {
            return Arc::clone(cfg);
        }
        let cfg = match self.make(host) {
            Ok(cfg) => Arc::new(cfg),
            Err(e) => {
                tracing::error!(host, error = %e, "bottle proxy: cannot make a certificate; the TLS handshake will fail");
                return Arc::new(refusing_config());
            }
        };
        cache.insert(host.to_owned(), (Instant::now(), Arc::clone(&cfg)));
        cfg
    }

    fn make(&self, host: &str) -> Result<mitm_rustls::ServerConfig, String> {
        let leaf = self.ca.issue(host).map_err(|e| e.to_string())?;
        let mut cfg = mitm_rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert], leaf.key)
            .map_err(|e| e.to_string())?;
        // The intercepted side speaks HTTP/1.1 only (hudsucker without its http2 feature).
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

impl CertificateAuthority for MitmCa {
    fn gen_server_config(
        &self,
        authority: &Authority,
    ) -> impl Future<Output = Arc<mitm_rustls::ServerConfig>> + Send {
        let host = authority.host();
        let host = host.strip_suffix(INTERCEPT_SUFFIX).unwrap_or(host);
        let cfg = self.config_for(host);
        async move { cfg }
    }
}

/// A configuration with no certificate: the handshake fails instead of the proxy panicking.
fn refusing_config() -> mitm_rustls::ServerConfig {
    mitm_rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate))
}

#[derive(Debug)]
struct NoCertificate;

impl mitm_rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(
        &self,
        _client_hello: mitm_rustls::server::ClientHello,
    ) -> Option<Arc<mitm_rustls::sign::CertifiedKey>> {
        None
    }
}
