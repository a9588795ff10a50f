//! The proxy's decisions, as a hudsucker `HttpHandler`: host lists, the SSRF guard, tunnels,
//! secret injection and scrubbing, and the audit of every request.
//!
//! Who does what:
//! - CONNECT to a host without a bound secret: this handler resolves and checks the address,
//!   connects to it, answers 200 and copies the bytes itself (hudsucker's own tunnel would
//!   resolve the name again and count nothing).
//! - CONNECT to a host with a bound secret: checked here, then handed to hudsucker, which
//!   terminates TLS with a certificate from the installation's CA ([`super::mitm`]) and feeds
//!   each request inside back through this handler.
//! - Requests (plain HTTP, or from an intercepted connection): decided and rewritten here, sent
//!   by hudsucker's client through [`super::net::GuardedConnector`].
//!
//! hudsucker clones the handler for every request, so `current` is per request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use hudsucker::hyper::header::{self, HeaderMap, HeaderValue};
use hudsucker::hyper::http::uri::{Authority, Parts, Scheme};
use hudsucker::hyper::{Method, Request, Response, StatusCode, Uri};
use hudsucker::hyper_util::client::legacy::connect::HttpInfo;
use hudsucker::hyper_util::rt::TokioIo;
use hudsucker::{Body, HttpContext, HttpHandler, RequestOrResponse};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::audit::Mode;
use crate::policy::{HostDecision, HostPattern, NetworkPolicy, normalize_host};

use super::body::{Direction, MeteredBody, Swapper};
use super::exchange::{AuditContext, Exchange, Target};
use super::mitm::{INTERCEPT_SUFFIX, intercept_authority};
use super::net::{Guard, Refusal, connect_any, find_refusal};

/// A secret as the handler swaps it.
#[derive(Debug)]
pub(crate) struct SecretBytes {
    pub(crate) hosts: Vec<HostPattern>,
    pub(crate) in_body: bool,
    pub(crate) placeholder: Arc<[u8]>,
    pub(crate) value: Arc<[u8]>,
}

/// What every request of one proxy shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) network: Arc<NetworkPolicy>,
    /// By index: the bit of a secret in the audit mask.
    pub(crate) secrets: Vec<SecretBytes>,
    pub(crate) guard: Arc<Guard>,
    pub(crate) audit: Arc<AuditContext>,
    /// With a unix socket listener: the local addresses of the bridge's connections to the
    /// internal TCP listener. Connections from anywhere else are refused.
    pub(crate) bridged: Option<Arc<Mutex<HashSet<SocketAddr>>>>,
    /// Becomes true when the proxy stops; tunnels end then.
    pub(crate) stop: watch::Receiver<bool>,
    /// Upgraded into one strong reference per running tunnel, so shutdown can wait for their
    /// audit lines (weak here, or every handler clone would count as a tunnel).
    pub(crate) live_tunnels: std::sync::Weak<()>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    pub(crate) shared: Arc<Shared>,
    /// The request being handled (hudsucker hands each request its own clone).
    pub(crate) current: Option<Arc<Exchange>>,
    /// Set while handling an intercepted CONNECT. hudsucker clones the handler that handled
    /// the CONNECT for every request inside that connection, so only those requests carry it:
    /// an intercept-form request anywhere else is refused.
    pub(crate) intercepted: Option<Arc<(String, u16)>>,
}

/// Hop-by-hop headers, which describe the sandbox's connection to the proxy and must not go on
/// (`transfer-encoding` stays: it frames the body hyper forwards).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
    "http2-settings",
];

fn text_response(status: StatusCode, text: String) -> Response<Body> {
    let mut res = Response::new(Body::from(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Tells a person reading the response that the proxy answered, not the upstream.
    res.headers_mut()
        .insert("x-bytebot-bottle", HeaderValue::from_static("proxy"));
    res
}

/// The lists' verdict on `host`: the allow rule's text, or the refusal's rule text and 403 body.
fn verdict(host: &str, decision: &HostDecision<'_>) -> Result<String, (String, String)> {
    match decision {
        HostDecision::Allow(rule) => Ok(format!("allow {rule}")),
        HostDecision::Deny(rule) => Err((
            format!("deny {rule}"),
            format!("bytebot bottle: {host} matches deny rule '{rule}' of this bottle's policy\n"),
        )),
        HostDecision::NotAllowed => Err((
            "not in allow list".to_owned(),
            format!("bytebot bottle: {host} is not in the allow list of this bottle's policy\n"),
        )),
    }
}

impl Handler {
    fn refuse(
        &self,
        target: &Target<'_>,
        rule: String,
        status: StatusCode,
        text: String,
        start: Instant,
    ) -> RequestOrResponse {
        Exchange::record_denied(&self.shared.audit, target, rule, status.as_u16(), start);
        RequestOrResponse::Response(text_response(status, text))
    }

    /// Swap pairs of the secrets bound to `host`, placeholder to value (`up`) or back.
    fn swapper(&self, host: &str, up: bool) -> Option<Arc<Swapper>> {
        let pairs = self
            .shared
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.hosts.iter().any(|p| p.matches(host)) && (!up || s.in_body))
            .map(|(i, s)| {
                if up {
                    (Arc::clone(&s.placeholder), Arc::clone(&s.value), i)
                } else {
                    (Arc::clone(&s.value), Arc::clone(&s.placeholder), i)
                }
            });
        Swapper::new(pairs).map(Arc::new)
    }

    async fn connect(&mut self, mut req: Request<Body>, start: Instant) -> RequestOrResponse {
        let Some(authority) = req.uri().authority().cloned() else {
            return RequestOrResponse::Response(text_response(
                StatusCode::BAD_REQUEST,
                "bytebot bottle: CONNECT needs host:port\n".to_owned(),
            ));
        };
        let port = authority.port_u16().unwrap_or(443);
        let Some(host) = normalize_host(authority.host()) else {
            return RequestOrResponse::Response(text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "bytebot bottle: {:?} is not a host name\n",
                    authority.host()
                ),
            ));
        };
        let mut target = Target {
            mode: Mode::Tunnel,
            method: "CONNECT",
            host: &host,
            port,
            path: "",
        };
        let rule = match verdict(&host, &self.shared.network.decide(&host)) {
            Ok(rule) => rule,
            Err((rule, text)) => {
                return self.refuse(&target, rule, StatusCode::FORBIDDEN, text, start);
            }
        };
        let intercept = self
            .shared
            .secrets
            .iter()
            .any(|s| s.hosts.iter().any(|p| p.matches(&host)));
        if intercept {
            target.mode = Mode::Intercept;
        }
        let addrs = match self.shared.guard.resolve(&host, port).await {
            Ok(addrs) => addrs,
            Err(refusal @ Refusal::Private { .. }) => {
                let text = format!("bytebot bottle: {host} {refusal}\n");
                return self.refuse(&target, refusal.rule(), StatusCode::FORBIDDEN, text, start);
            }
            Err(refusal @ Refusal::Unresolvable(_)) => {
                let ex = Exchange::allowed(&self.shared.audit, &target, rule, start);
                ex.set_error(&refusal);
                ex.set_status(StatusCode::BAD_GATEWAY.as_u16());
                return RequestOrResponse::Response(text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("bytebot bottle: {host} {refusal}\n"),
                ));
            }
        };

        if intercept {
            // hudsucker terminates TLS and sends each inner request back here; the authority
            // it gets can never be resolved (see `mitm`), the requests are rewritten back to
            // the real host before they leave.
            match intercept_authority(&host, port).parse::<Uri>() {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => {
                    return RequestOrResponse::Response(text_response(
                        StatusCode::BAD_REQUEST,
                        format!("bytebot bottle: {host} is too long to intercept\n"),
                    ));
                }
            }
            self.intercepted = Some(Arc::new((host, port)));
            return RequestOrResponse::Request(req);
        }

        let ex = Exchange::allowed(&self.shared.audit, &target, rule, start);
        let upstream = match connect_any(&addrs).await {
            Ok(s) => s,
            Err(e) => {
                ex.set_error(&e);
                ex.set_status(StatusCode::BAD_GATEWAY.as_u16());
                return RequestOrResponse::Response(text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("bytebot bottle: cannot connect to {host}:{port}: {e}\n"),
                ));
            }
        };
        if let Ok(addr) = upstream.peer_addr() {
            ex.set_upstream(addr);
        }
        ex.set_status(StatusCode::OK.as_u16());
        let on_upgrade = hudsucker::hyper::upgrade::on(&mut req);
        let stop = self.shared.stop.clone();
        let live = self.shared.live_tunnels.upgrade();
        tokio::spawn(async move {
            let _live = live;
            tunnel(on_upgrade, upstream, ex, stop).await;
        });
        RequestOrResponse::Response(Response::new(Body::empty()))
    }

    async fn request(&mut self, mut req: Request<Body>, start: Instant) -> RequestOrResponse {
        let method = req.method().as_str().to_owned();
        let uri = req.uri().clone();
        let (Some(raw_host), Some(scheme)) = (uri.host(), uri.scheme_str()) else {
            return RequestOrResponse::Response(text_response(
                StatusCode::BAD_REQUEST,
                "bytebot bottle: this is a proxy; send requests in absolute form (http://host/path), or CONNECT for https\n".to_owned(),
            ));
        };
        let (raw_host, mode, default_port) = match raw_host.strip_suffix(INTERCEPT_SUFFIX) {
            Some(real) if scheme == "https" => (real, Mode::Intercept, 443),
            Some(_) => {
                return RequestOrResponse::Response(text_response(
                    StatusCode::BAD_REQUEST,
                    "bytebot bottle: plain HTTP inside a tunnel to a host with a held secret is refused; speak TLS\n".to_owned(),
                ));
            }
            None if scheme == "http" => (raw_host, Mode::Http, 80),
            None => {
                return RequestOrResponse::Response(text_response(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "bytebot bottle: {scheme}:// requests are not proxied; use CONNECT for https\n"
                    ),
                ));
            }
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let Some(host) = normalize_host(raw_host) else {
            return RequestOrResponse::Response(text_response(
                StatusCode::BAD_REQUEST,
                format!("bytebot bottle: {raw_host:?} is not a host name\n"),
            ));
        };
        if mode == Mode::Intercept
            && self
                .intercepted
                .as_deref()
                .is_none_or(|(h, p)| *h != host || *p != port)
        {
            return RequestOrResponse::Response(text_response(
                StatusCode::BAD_REQUEST,
                "bytebot bottle: send https requests through CONNECT\n".to_owned(),
            ));
        }
        let target = Target {
            mode,
            method: &method,
            host: &host,
            port,
            path: uri.path(),
        };
        let rule = match verdict(&host, &self.shared.network.decide(&host)) {
            Ok(rule) => rule,
            Err((rule, text)) => {
                return self.refuse(&target, rule, StatusCode::FORBIDDEN, text, start);
            }
        };
        let websocket = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if websocket {
            return self.refuse(
                &target,
                "unsupported: websocket".to_owned(),
                StatusCode::NOT_IMPLEMENTED,
                "bytebot bottle: websocket upgrades are not supported through the bottle's proxy\n"
                    .to_owned(),
                start,
            );
        }

        if mode == Mode::Intercept {
            let mut parts = Parts::default();
            parts.scheme = Some(Scheme::HTTPS);
            parts.authority = Authority::try_from(format!("{host}:{port}")).ok();
            parts.path_and_query = uri.path_and_query().cloned();
            match Uri::from_parts(parts) {
                Ok(u) => *req.uri_mut() = u,
                Err(_) => {
                    return RequestOrResponse::Response(text_response(
                        StatusCode::BAD_REQUEST,
                        "bytebot bottle: cannot rebuild the request's address\n".to_owned(),
                    ));
                }
            }
        }
        for name in HOP_BY_HOP {
            req.headers_mut().remove(*name);
        }

        let ex = Exchange::allowed(&self.shared.audit, &target, rule, start);
        let mut up_swap = None;
        if mode == Mode::Intercept {
            let bits = self.swap_headers(req.headers_mut(), &host);
            ex.mark_secrets(bits);
            // Ask for an uncompressed answer: the real value can only be scrubbed from bytes
            // the proxy can read.
            req.headers_mut().remove(header::ACCEPT_ENCODING);
            up_swap = self.swapper(&host, true);
        }
        if !hudsucker::hyper::body::Body::is_end_stream(req.body()) {
            let (parts, body) = req.into_parts();
            let body = MeteredBody::wrap(body, up_swap, Arc::clone(&ex), Direction::Up);
            req = Request::from_parts(parts, body);
        }
        self.current = Some(ex);
        RequestOrResponse::Request(req)
    }

    /// Puts the real values in place of the placeholders of the secrets bound to `host`, in
    /// every request header. Returns the bits of the secrets injected.
    fn swap_headers(&self, headers: &mut HeaderMap, host: &str) -> u64 {
        let mut bits = 0;
        for (i, s) in self.shared.secrets.iter().enumerate() {
            if !s.hosts.iter().any(|p| p.matches(host)) {
                continue;
            }
            if replace_in_headers(headers, &s.placeholder, &s.value) {
                bits |= 1 << (i % 64);
            }
        }
        bits
    }
}

/// Replaces `from` with `to` in every header value; true when anything was replaced.
fn replace_in_headers(headers: &mut HeaderMap, from: &[u8], to: &[u8]) -> bool {
    let mut changed = false;
    for value in headers.values_mut() {
        let bytes = value.as_bytes();
        if !contains(bytes, from) {
            continue;
        }
        let mut out = bytes.to_vec();
        let mut at = 0;
        while let Some(pos) = find(&out[at..], from) {
            let start = at + pos;
            out[start..start + from.len()].copy_from_slice(to);
            at = start + from.len();
        }
        // Placeholders and values are printable ASCII of equal length, so the result is a
        // valid header value whenever the original was.
        if let Ok(v) = HeaderValue::from_bytes(&out) {
            *value = v;
            changed = true;
        }
    }
    changed
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

impl HttpHandler for Handler {
    async fn handle_request(&mut self, ctx: &HttpContext, req: Request<Body>) -> RequestOrResponse {
        let start = Instant::now();
        self.current = None;
        if let Some(bridged) = &self.shared.bridged {
            let known = bridged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&ctx.client_addr);
            if !known {
                tracing::warn!(client = %ctx.client_addr, "bottle proxy: refused a connection that did not come through its socket");
                return RequestOrResponse::Response(text_response(
                    StatusCode::FORBIDDEN,
                    "bytebot bottle: this proxy serves its bottle's socket only\n".to_owned(),
                ));
            }
        }
        if req.method() == Method::CONNECT {
            self.connect(req, start).await
        } else {
            self.request(req, start).await
        }
    }

    async fn handle_response(&mut self, _ctx: &HttpContext, res: Response<Body>) -> Response<Body> {
        let Some(ex) = self.current.take() else {
            return res;
        };
        ex.set_status(res.status().as_u16());
        if let Some(info) = res.extensions().get::<HttpInfo>() {
            ex.set_upstream(info.remote_addr());
        }
        let (mut parts, body) = res.into_parts();
        // Only intercepted exchanges can carry a real value back: nothing else ever got one.
        let host = ex.intercepted_host().map(str::to_owned);
        let swap = match &host {
            Some(host) => {
                for s in self
                    .shared
                    .secrets
                    .iter()
                    .filter(|s| s.hosts.iter().any(|p| p.matches(host)))
                {
                    replace_in_headers(&mut parts.headers, &s.value, &s.placeholder);
                }
                self.swapper(host, false)
            }
            None => None,
        };
        let body = MeteredBody::wrap(body, swap, ex, Direction::Down);
        Response::from_parts(parts, body)
    }

    async fn handle_error(
        &mut self,
        _ctx: &HttpContext,
        err: hudsucker::hyper_util::client::legacy::Error,
    ) -> Response<Body> {
        let ex = self.current.take();
        if let Some((host, refusal)) = find_refusal(&err) {
            let (status, text) = match refusal {
                Refusal::Private { .. } => (
                    StatusCode::FORBIDDEN,
                    format!("bytebot bottle: {host} {refusal}\n"),
                ),
                Refusal::Unresolvable(_) => (
                    StatusCode::BAD_GATEWAY,
                    format!("bytebot bottle: {host} {refusal}\n"),
                ),
            };
            if let Some(ex) = &ex {
                if matches!(refusal, Refusal::Private { .. }) {
                    ex.deny(refusal.rule());
                } else {
                    ex.set_error(refusal);
                }
                ex.set_status(status.as_u16());
            }
            return text_response(status, text);
        }
        let detail = error_chain(&err);
        if let Some(ex) = &ex {
            ex.set_error(&detail);
            ex.set_status(StatusCode::BAD_GATEWAY.as_u16());
        }
        text_response(
            StatusCode::BAD_GATEWAY,
            format!("bytebot bottle: the upstream request failed: {detail}\n"),
        )
    }

    async fn should_intercept(&mut self, _ctx: &HttpContext, req: &Request<Body>) -> bool {
        // Only CONNECTs to hosts with a bound secret reach hudsucker (tunnels are answered in
        // `connect`), and those carry the intercept authority.
        req.uri()
            .host()
            .is_some_and(|h| h.ends_with(INTERCEPT_SUFFIX))
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

/// Copies a tunnel's bytes both ways until either side closes or the proxy stops, then fills
/// in the exchange's counters (its audit line is written as it drops).
async fn tunnel(
    on_upgrade: hudsucker::hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    ex: Arc<Exchange>,
    mut stop: watch::Receiver<bool>,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            ex.set_error(&e);
            return;
        }
    };
    let mut client = TokioIo::new(upgraded);
    let mut upstream = Metered {
        inner: upstream,
        read: 0,
        written: 0,
    };
    let result = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r.map(|_| ()),
        _ = stop.wait_for(|stopped| *stopped) => Ok(()),
    };
    if let Err(e) = result
        && !matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::NotConnected
        )
    {
        ex.set_error(&e);
    }
    ex.count(Direction::Up, upstream.written);
    ex.count(Direction::Down, upstream.read);
}

/// The upstream side of a tunnel, counting bytes each way (also when the copy ends in an error).
struct Metered {
    inner: TcpStream,
    read: u64,
    written: u64,
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.read += (buf.filled().len() - before) as u64;
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.written += n as u64;
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
