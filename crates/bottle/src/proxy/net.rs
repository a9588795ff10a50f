//! Name resolution with the SSRF guard, and the upstream connector built on it.
//!
//! Every upstream connection of the proxy, tunnel or forwarded request, goes through
//! [`Guard::resolve`]: one resolution, the non-public addresses dropped unless the policy
//! allows them, and the connection made to an address from that same checked list. Nothing
//! resolves the name a second time, so a DNS answer that changes between check and connect
//! (rebinding) cannot slip a loopback or metadata address in.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hudsucker::hyper::Uri;
use hudsucker::hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::policy::{NetworkPolicy, normalize_host};

/// How long one connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an address is not a public one, or `None` when it is. These are refused as upstream
/// addresses unless the policy's `network.allow_private` names the host or the address:
/// loopback, unspecified, RFC 1918 private, carrier-grade NAT, link-local (which holds the
/// cloud metadata address 169.254.169.254), multicast, broadcast, documentation, benchmarking
/// and reserved ranges, IPv6 unique-local and link-local, and IPv4 addresses wrapped in IPv6
/// (mapped, compatible, NAT64, 6to4) when the wrapped address is one of those.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private (RFC 1918)"
    } else if a == 100 && (64..128).contains(&b) {
        "carrier-grade NAT (RFC 6598)"
    } else if ip.is_link_local() {
        "link-local (cloud metadata)"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 198 && (b == 18 || b == 19) {
        "benchmarking (RFC 2544)"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignment"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let seg = ip.segments();
    Some(if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_unique_local() {
        "unique local (ULA)"
    } else if ip.is_unicast_link_local() {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if seg[0] & 0xffc0 == 0xfec0 {
        "site-local"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation"
    } else if seg[0] == 0x0100 && seg[1..4] == [0, 0, 0] {
        "discard-only"
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): judge the address inside.
        return v4_reason(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ));
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // NAT64: the gateway would connect to the IPv4 address in the last 32 bits.
        return v4_reason(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ));
    } else if seg[0] == 0x2002 {
        // 6to4: the relay would reach the IPv4 address in bits 16..48.
        return v4_reason(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    } else {
        return None;
    })
}

/// Why the guard gave no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every address the name resolved to is non-public and the policy does not allow that.
    Private {
        /// The first refused address.
        addr: IpAddr,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// The name did not resolve.
    Unresolvable(String),
}

impl Refusal {
    /// The rule text for the audit line (only for policy refusals).
    pub(crate) fn rule(&self) -> String {
        match self {
            Refusal::Private { addr, reason } => format!("private address {addr} ({reason})"),
            Refusal::Unresolvable(_) => "cannot resolve".to_owned(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Private { addr, reason } => write!(
                f,
                "resolves to {addr}, a {reason} address, which this bottle's policy does not allow (network.allow_private)"
            ),
            Refusal::Unresolvable(e) => write!(f, "cannot be resolved ({e})"),
        }
    }
}

/// Resolves upstream names once and drops the addresses the policy does not allow.
#[derive(Debug)]
pub(crate) struct Guard {
    network: Arc<NetworkPolicy>,
    overrides: HashMap<String, SocketAddr>,
}

impl Guard {
    /// A guard for `network`; `overrides` map host names to fixed addresses (port 0 keeps the
    /// requested port), like `curl --resolve`.
    pub(crate) fn new(
        network: Arc<NetworkPolicy>,
        overrides: &HashMap<String, SocketAddr>,
    ) -> Guard {
        let overrides = overrides
            .iter()
            .filter_map(|(h, a)| normalize_host(h).map(|h| (h, *a)))
            .collect();
        Guard { network, overrides }
    }

    /// The checked addresses for `host` (normalised) and `port`, in resolver order.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let found: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else if let Some(addr) = self.overrides.get(host) {
            let port = if addr.port() == 0 { port } else { addr.port() };
            vec![SocketAddr::new(addr.ip(), port)]
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| Refusal::Unresolvable(e.to_string()))?
                .collect()
        };
        let mut refused = None;
        let mut kept = Vec::with_capacity(found.len());
        for addr in found {
            match non_public_reason(addr.ip()) {
                Some(reason) if !self.network.private_allowed(host, addr.ip()) => {
                    refused.get_or_insert(Refusal::Private {
                        addr: addr.ip(),
                        reason,
                    });
                }
                _ => kept.push(addr),
            }
        }
        if kept.is_empty() {
            return Err(
                refused.unwrap_or_else(|| Refusal::Unresolvable("no address found".to_owned()))
            );
        }
        Ok(kept)
    }
}

/// Connects to the first of `addrs` that answers (each within [`CONNECT_TIMEOUT`]).
pub(crate) async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests and TLS records are small and latency-bound.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
}

/// Why the connector could not give a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The guard refused (non-public address) or the name did not resolve.
    #[error("{host} {refusal}")]
    Refused {
        /// The host asked for.
        host: String,
        /// Why.
        refusal: Refusal,
    },
    /// Every checked address failed.
    #[error("cannot connect to {host}: {source}")]
    Io {
        /// The host asked for.
        host: String,
        /// The last failure.
        source: std::io::Error,
    },
    /// The request had no usable host.
    #[error("the request names no usable host")]
    NoHost,
}

impl std::error::Error for Refusal {}

/// The hyper connector of the proxy's client: [`Guard::resolve`], then [`connect_any`].
#[derive(Debug, Clone)]
pub(crate) struct GuardedConnector {
    pub(crate) guard: Arc<Guard>,
}

impl tower::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = uri
                .host()
                .and_then(normalize_host)
                .ok_or(ConnectError::NoHost)?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let addrs =
                guard
                    .resolve(&host, port)
                    .await
                    .map_err(|refusal| ConnectError::Refused {
                        host: host.clone(),
                        refusal,
                    })?;
            let stream = connect_any(&addrs)
                .await
                .map_err(|source| ConnectError::Io { host, source })?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The guard's refusal behind a client error, if that is what it was.
pub(crate) fn find_refusal<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<(&'a str, &'a Refusal)> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(ConnectError::Refused { host, refusal }) = e.downcast_ref::<ConnectError>() {
            return Some((host, refusal));
        }
        cur = e.source();
    }
    None
}
