//! The egress proxy against real servers on loopback: a TLS server playing the provider (its
//! certificate from a test CA made here), a plain HTTP server, and clients going through the
//! proxy over TCP and over its unix socket.
//!
//! Test hosts resolve through the proxy's `resolve` overrides, never through DNS; nothing here
//! connects anywhere but 127.0.0.1 (169.254.169.254 only appears as an address the guard must
//! refuse before connecting).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytebot_bottle::audit::{self, AuditEntry, Decision, Mode};
use bytebot_bottle::ca::Ca;
use bytebot_bottle::policy::{Policy, ResolvedSecrets};
use bytebot_bottle::proxy::{EgressProxy, Listen, ProxyConfig, ProxyHandle, non_public_reason};
use hudsucker::hyper::body::{Body as _, Incoming};
use hudsucker::hyper::server::conn::http1;
use hudsucker::hyper::service::service_fn;
use hudsucker::hyper::{Request, Response};
use hudsucker::hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The real key: it must reach the provider and nothing else.
const KEY: &str = "sk-ant-api03-REALKEYq8ZxW3vLm9TnB2cR7yH4kJ6pD1sF0gA5eU";
const BOTTLE: &str = "bottle-test-run";

/// What a test server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    cert: CertificateDer<'static>,
}

/// A test CA and a TLS server certificate for the provider hosts.
struct TestPki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn test_pki() -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "provider test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![
        "api.provider.test".to_owned(),
        "other.provider.test".to_owned(),
        "loop-allowed.provider.test".to_owned(),
    ])
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

async fn read_body(mut body: Incoming) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}

/// Answers like the Anthropic Messages API, with the credentials it received echoed in the
/// text (and in a header), so a test can see what the client gets back.
async fn provider(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<hudsucker::Body>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = String::from_utf8(read_body(req.into_body()).await).unwrap();
    let key = headers.get("x-api-key").cloned().unwrap_or_default();
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        path,
        headers,
        body,
    });
    let answer = serde_json::json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": format!("x-api-key={key} authorization={auth}")}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 9}
    });
    let mut res = Response::new(hudsucker::Body::from(answer.to_string()));
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    res.headers_mut().insert("x-echo-key", key.parse().unwrap());
    Ok(res)
}

async fn tls_server(pki: &TestPki) -> TestServer {
    let provider_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(provider_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(tls),
                        service_fn(move |req| provider(req, Arc::clone(&seen))),
                    )
                    .await;
            });
        }
    });
    TestServer {
        addr,
        seen,
        cert: pki.cert.clone(),
    }
}

async fn plain_server() -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(tcp),
                        service_fn(move |req| provider(req, Arc::clone(&seen))),
                    )
                    .await;
            });
        }
    });
    TestServer {
        addr,
        seen,
        cert: CertificateDer::from(Vec::new()),
    }
}

const POLICY: &str = r#"{
  "network": {
    "allow": ["*.provider.test", "127.0.0.1"],
    "deny": ["evil.provider.test"],
    "allow_private": ["api.provider.test", "other.provider.test", "plain.provider.test", "loop-allowed.provider.test"]
  },
  "secrets": [
    { "name": "PROVIDER_KEY", "hosts": ["api.provider.test"], "env": "HOST_PROVIDER_KEY", "in_body": true }
  ]
}"#;

struct Fixture {
    proxy: Option<ProxyHandle>,
    tls: TestServer,
    plain: TestServer,
    pki: TestPki,
    ca: Arc<Ca>,
    placeholder: String,
    audit_path: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(unix: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = test_pki();
        let tls = tls_server(&pki).await;
        let plain = plain_server().await;
        let policy = Policy::from_json(POLICY).unwrap();
        let secrets = ResolvedSecrets::resolve_with(&policy, |v| {
            (v == "HOST_PROVIDER_KEY").then(|| KEY.to_owned())
        })
        .unwrap();
        let placeholder = secrets.iter().next().unwrap().placeholder.clone();
        let ca = Ca::load_or_create(&dir.path().join("ca")).unwrap();
        let resolve = HashMap::from([
            ("api.provider.test".to_owned(), tls.addr),
            ("other.provider.test".to_owned(), tls.addr),
            ("loop.provider.test".to_owned(), tls.addr),
            ("loop-allowed.provider.test".to_owned(), tls.addr),
            ("plain.provider.test".to_owned(), plain.addr),
            ("evil.provider.test".to_owned(), tls.addr),
            (
                "metadata.provider.test".to_owned(),
                "169.254.169.254:0".parse().unwrap(),
            ),
        ]);
        let audit_path = dir.path().join("audit.jsonl");
        let listen = if unix {
            Listen::Unix(dir.path().join("proxy.sock"))
        } else {
            Listen::Tcp("127.0.0.1:0".parse().unwrap())
        };
        let proxy = EgressProxy::start(ProxyConfig {
            bottle_id: BOTTLE.to_owned(),
            network: policy.network.clone(),
            secrets,
            ca: Arc::clone(&ca),
            audit_path: audit_path.clone(),
            listen,
            extra_upstream_roots: vec![pki.ca_pem.clone()],
            resolve,
        })
        .await
        .unwrap();
        Fixture {
            proxy: Some(proxy),
            tls,
            plain,
            pki,
            ca,
            placeholder,
            audit_path,
            dir,
        }
    }

    fn proxy(&self) -> &ProxyHandle {
        self.proxy.as_ref().unwrap()
    }

    /// A client through the proxy trusting the given roots.
    fn client(&self, trust_ours: bool, trust_provider: bool) -> reqwest::Client {
        let addr = self.proxy().tcp_addr().unwrap();
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap())
            .tls_built_in_root_certs(false)
            .tls_info(true)
            .http1_only()
            .timeout(Duration::from_secs(20));
        if trust_ours {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap(),
            );
        }
        if trust_provider {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).unwrap(),
            );
        }
        b.build().unwrap()
    }

    /// Stops the proxy (flushing the audit) and returns the audit file's entries and text.
    async fn finish(
        &mut self,
    ) -> (
        Vec<AuditEntry>,
        String,
        bytebot_bottle::audit::EgressSummary,
    ) {
        let summary = self.proxy.take().unwrap().shutdown().await;
        let text = std::fs::read_to_string(&self.audit_path).unwrap();
        let entries = audit::read_file(&self.audit_path)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        (entries, text, summary)
    }
}

/// Sends a CONNECT on `stream` and reads the answer's status and body (for refusals).
async fn raw_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &str,
) -> (u16, String) {
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            stream.read(&mut b).await.unwrap(),
            1,
            "proxy closed: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn bound_secret_is_injected_upstream_and_scrubbed_on_the_way_back() {
    let mut fx = Fixture::start(false).await;
    let client = fx.client(true, true);
    let res = client
        .post("https://api.provider.test/v1/messages?beta=true")
        .header("x-api-key", &fx.placeholder)
        .header("authorization", format!("Bearer {}", fx.placeholder))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"key {} ok"}}]}}"#,
            fx.placeholder
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-echo-key"], fx.placeholder.as_str());
    let body = res.text().await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["type"], "message");
    let text = answer["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        format!("x-api-key={p} authorization=Bearer {p}", p = fx.placeholder),
        "the real value must be scrubbed back to the placeholder"
    );
    assert!(!body.contains(KEY));

    // The provider saw the real key, in both headers and in the body.
    let seen = fx.tls.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-api-key"], KEY);
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {KEY}"));
    assert!(
        seen[0].body.contains(&format!("key {KEY} ok")),
        "{}",
        seen[0].body
    );
    assert!(!seen[0].body.contains(&fx.placeholder));
    assert_eq!(seen[0].path, "/v1/messages?beta=true");
    assert_eq!(seen[0].headers["host"], "api.provider.test");

    // Intercepted: a client that trusts only our CA gets through, one that trusts only the
    // provider's CA does not (reqwest reports no peer certificate through a proxy; the unix
    // socket test compares certificates directly).
    let provider_only = fx.client(false, true);
    assert!(
        provider_only
            .get("https://api.provider.test/v1/models")
            .send()
            .await
            .is_err()
    );
    let ours_only = fx.client(true, false);
    let res = ours_only
        .get("https://api.provider.test/v1/models")
        .header("x-api-key", &fx.placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(&fx.placeholder));

    let (entries, text, summary) = fx.finish().await;
    assert!(!text.contains(KEY), "the audit file holds the real key");
    let intercepted: Vec<_> = entries
        .iter()
        .filter(|e| e.mode == Mode::Intercept)
        .collect();
    assert_eq!(intercepted.len(), 2, "{entries:#?}");
    let first = intercepted.iter().find(|e| e.method == "POST").unwrap();
    assert_eq!(first.host, "api.provider.test");
    assert_eq!(first.port, 443);
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.decision, Decision::Allow);
    assert_eq!(first.rule, "allow *.provider.test");
    assert_eq!(first.status, 200);
    assert_eq!(first.secrets, ["PROVIDER_KEY"]);
    assert_eq!(first.bottle, BOTTLE);
    assert!(first.bytes_up > 50 && first.bytes_down > 50, "{first:?}");
    assert_eq!(
        first.upstream.as_deref(),
        Some(fx.tls.addr.to_string().as_str())
    );
    assert!(chrono::DateTime::parse_from_rfc3339(&first.time).is_ok());
    assert_eq!(summary.secrets_used, ["PROVIDER_KEY"]);
}

#[tokio::test]
async fn placeholder_toward_an_unbound_host_is_tunnelled_untouched() {
    let mut fx = Fixture::start(false).await;
    let client = fx.client(true, true);
    let res = client
        .post("https://other.provider.test/v1/messages")
        .header("x-api-key", &fx.placeholder)
        .body(format!("leak {}", fx.placeholder))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let seen = fx.tls.seen.lock().unwrap().clone();
    assert_eq!(seen[0].headers["x-api-key"], fx.placeholder);
    assert_eq!(seen[0].body, format!("leak {}", fx.placeholder));

    // Tunnelled: the provider's own certificate reaches the client. Trusting only the provider's
    // CA works, trusting only ours fails.
    let provider_only = fx.client(false, true);
    let res = provider_only
        .get("https://other.provider.test/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let ours_only = fx.client(true, false);
    assert!(
        ours_only
            .get("https://other.provider.test/")
            .send()
            .await
            .is_err()
    );

    let (entries, text, _) = fx.finish().await;
    assert!(!text.contains(KEY));
    let tunnel = entries
        .iter()
        .find(|e| e.mode == Mode::Tunnel && e.status == 200)
        .unwrap();
    assert_eq!(tunnel.method, "CONNECT");
    assert_eq!(tunnel.host, "other.provider.test");
    assert_eq!(tunnel.path, "");
    assert!(tunnel.secrets.is_empty());
    assert!(
        tunnel.bytes_up > 100 && tunnel.bytes_down > 100,
        "{tunnel:?}"
    );
}

#[tokio::test]
async fn denied_and_unlisted_hosts_get_403_naming_host_and_rule() {
    let mut fx = Fixture::start(false).await;
    let addr = fx.proxy().tcp_addr().unwrap();

    let mut s = TcpStream::connect(addr).await.unwrap();
    let (status, body) = raw_connect(&mut s, "evil.provider.test:443").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("evil.provider.test") && body.contains("deny rule 'evil.provider.test'"),
        "{body}"
    );

    let mut s = TcpStream::connect(addr).await.unwrap();
    let (status, body) = raw_connect(&mut s, "api.outside.test:443").await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "bytebot bottle: api.outside.test is not in the allow list of this bottle's policy\n"
    );

    // https in absolute form, or the proxy's internal intercept form, outside a CONNECT: refused
    // before any secret is touched.
    for url in [
        "https://api.provider.test/v1/models",
        "https://api.provider.test.bottle-intercept.invalid/v1/models",
        "http://api.provider.test.bottle-intercept.invalid/v1/models",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {url} HTTP/1.1\r\nHost: api.provider.test\r\nx-api-key: {}\r\nConnection: close\r\n\r\n",
            fx.placeholder
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{url}: {out}");
    }
    assert!(fx.tls.seen.lock().unwrap().is_empty());

    // Through a real client too.
    let err = fx
        .client(true, true)
        .get("https://evil.provider.test/")
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("403") || err.is_connect(),
        "{err:?}"
    );

    let (entries, _, summary) = fx.finish().await;
    let denied: Vec<_> = entries
        .iter()
        .filter(|e| e.decision == Decision::Deny)
        .collect();
    assert_eq!(denied.len(), 3, "{entries:#?}");
    assert!(
        denied
            .iter()
            .all(|e| e.status == 403 && e.method == "CONNECT")
    );
    assert_eq!(denied[0].rule, "deny evil.provider.test");
    assert_eq!(denied[1].rule, "not in allow list");
    assert_eq!(denied[1].host, "api.outside.test");
    assert!(summary.hosts.is_empty());
    assert_eq!(summary.denied.len(), 2);
    let evil = summary
        .denied
        .iter()
        .find(|d| d.host == "evil.provider.test")
        .unwrap();
    assert_eq!(evil.count, 2);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let mut fx = Fixture::start(false).await;
    let addr = fx.proxy().tcp_addr().unwrap();

    // A name resolving to 127.0.0.1 that allow_private does not name.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (status, body) = raw_connect(&mut s, "loop.provider.test:443").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("127.0.0.1") && body.contains("loopback"),
        "{body}"
    );

    // The cloud metadata address.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (status, body) = raw_connect(&mut s, "metadata.provider.test:80").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("169.254.169.254") && body.contains("link-local"),
        "{body}"
    );
    let client = fx.client(true, true);
    let res = client
        .get("http://metadata.provider.test/latest/meta-data/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("169.254.169.254"));

    // An address literal the allow list names still needs allow_private.
    let res = client
        .get(format!("http://127.0.0.1:{}/", fx.plain.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("loopback"));

    // Named in allow_private: allowed, and it works.
    let res = client
        .get("https://loop-allowed.provider.test/v1/models")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();

    let (entries, _, _) = fx.finish().await;
    let rules: Vec<_> = entries
        .iter()
        .filter(|e| e.decision == Decision::Deny)
        .map(|e| e.rule.as_str())
        .collect();
    assert_eq!(
        rules,
        [
            "private address 127.0.0.1 (loopback)",
            "private address 169.254.169.254 (link-local (cloud metadata))",
            "private address 169.254.169.254 (link-local (cloud metadata))",
            "private address 127.0.0.1 (loopback)",
        ]
    );
    assert!(
        entries
            .iter()
            .any(|e| e.host == "loop-allowed.provider.test" && e.decision == Decision::Allow)
    );
    assert!(
        fx.tls.seen.lock().unwrap().len() == 1,
        "only the allowed request reached a server"
    );
    assert!(fx.plain.seen.lock().unwrap().is_empty());
}

#[test]
fn address_classes() {
    for (ip, class) in [
        ("127.0.0.1", Some("loopback")),
        ("10.1.2.3", Some("private (RFC 1918)")),
        ("172.16.0.1", Some("private (RFC 1918)")),
        ("192.168.1.1", Some("private (RFC 1918)")),
        ("169.254.169.254", Some("link-local (cloud metadata)")),
        ("100.64.0.1", Some("carrier-grade NAT (RFC 6598)")),
        ("0.0.0.0", Some("unspecified")),
        ("224.0.0.1", Some("multicast")),
        ("::1", Some("loopback")),
        ("fd00::1", Some("unique local (ULA)")),
        ("fe80::1", Some("link-local")),
        ("::ffff:127.0.0.1", Some("loopback")),
        (
            "::ffff:169.254.169.254",
            Some("link-local (cloud metadata)"),
        ),
        ("64:ff9b::a9fe:a9fe", Some("link-local (cloud metadata)")),
        ("2002:7f00:1::", Some("loopback")),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("64:ff9b::808:808", None),
    ] {
        assert_eq!(non_public_reason(ip.parse().unwrap()), class, "{ip}");
    }
}

#[tokio::test]
async fn plain_http_is_allowed_or_denied_by_the_same_lists() {
    let mut fx = Fixture::start(false).await;
    let client = fx.client(true, true);
    let res = client
        .get("http://plain.provider.test/v1/models?limit=2")
        .header("x-api-key", &fx.placeholder)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let seen = fx.plain.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/models?limit=2");
    assert_eq!(
        seen[0].headers["x-api-key"], fx.placeholder,
        "never injected over plain HTTP"
    );

    let res = client
        .get("http://evil.provider.test/x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("evil.provider.test") && body.contains("deny rule"),
        "{body}"
    );
    let res = client.get("http://example.invalid/").send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("not in the allow list"));

    // The secret's own host over plain HTTP is refused injection, not given the key.
    let res = client
        .get("http://api.provider.test/")
        .header("x-api-key", &fx.placeholder)
        .send()
        .await;
    // The TLS test server does not speak plain HTTP; whatever the outcome, no key left.
    drop(res);
    assert!(fx.tls.seen.lock().unwrap().is_empty());

    let (entries, text, summary) = fx.finish().await;
    assert!(!text.contains(KEY));
    let ok = entries
        .iter()
        .find(|e| e.host == "plain.provider.test")
        .unwrap();
    assert_eq!(
        (ok.mode, ok.decision, ok.status),
        (Mode::Http, Decision::Allow, 200)
    );
    assert_eq!(ok.path, "/v1/models");
    assert_eq!(ok.method, "GET");
    assert!(ok.bytes_down > 0);
    assert!(ok.secrets.is_empty());
    let evil = entries
        .iter()
        .find(|e| e.host == "evil.provider.test")
        .unwrap();
    assert_eq!(
        (evil.mode, evil.decision, evil.status),
        (Mode::Http, Decision::Deny, 403)
    );
    assert_eq!(evil.path, "/x");
    let plain = summary
        .hosts
        .iter()
        .find(|h| h.host == "plain.provider.test")
        .unwrap();
    assert_eq!((plain.port, plain.requests), (80, 1));
}

#[tokio::test]
async fn unix_socket_listener_serves_tunnels_and_interception() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut fx = Fixture::start(true).await;
    let sock = fx.proxy().socket_path().unwrap().to_owned();
    assert!(fx.proxy().tcp_addr().is_none());
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let client_tls = |roots_pem: &str| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(roots_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    };
    let get = |host: &'static str, extra: String| {
        format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
    };

    // Tunnel, verified against the provider's CA.
    let mut s = UnixStream::connect(&sock).await.unwrap();
    let (status, _) = raw_connect(&mut s, "other.provider.test:443").await;
    assert_eq!(status, 200);
    let mut tls = client_tls(&fx.pki.ca_pem)
        .connect(ServerName::try_from("other.provider.test").unwrap(), s)
        .await
        .unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        peer, fx.tls.cert,
        "a tunnel shows the provider's own certificate"
    );
    tls.write_all(get("other.provider.test", String::new()).as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // Interception, verified against our CA, with the key injected.
    let mut s = UnixStream::connect(&sock).await.unwrap();
    let (status, _) = raw_connect(&mut s, "api.provider.test:443").await;
    assert_eq!(status, 200);
    let mut tls = client_tls(fx.ca.cert_pem())
        .connect(ServerName::try_from("api.provider.test").unwrap(), s)
        .await
        .unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(
        peer, fx.tls.cert,
        "an intercepted host shows our certificate"
    );
    tls.write_all(
        get(
            "api.provider.test",
            format!("x-api-key: {}\r\n", fx.placeholder),
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(&fx.placeholder) && !out.contains(KEY), "{out}");
    let seen = fx.tls.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["x-api-key"], KEY);

    // The internal TCP listener behind the socket serves nobody else.
    let mut s = TcpStream::connect(fx.proxy().internal_addr())
        .await
        .unwrap();
    let (status, body) = raw_connect(&mut s, "other.provider.test:443").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("socket only"), "{body}");

    // A refusal over the socket.
    let mut s = UnixStream::connect(&sock).await.unwrap();
    let (status, body) = raw_connect(&mut s, "evil.provider.test:443").await;
    assert_eq!(status, 403, "{body}");

    let (entries, _, _) = fx.finish().await;
    assert!(!sock.exists(), "the socket file is removed at shutdown");
    let modes: Vec<_> = entries.iter().map(|e| (e.mode, e.decision)).collect();
    assert!(modes.contains(&(Mode::Tunnel, Decision::Allow)));
    assert!(modes.contains(&(Mode::Intercept, Decision::Allow)));
    assert!(modes.contains(&(Mode::Tunnel, Decision::Deny)));
    drop(fx.dir);
}

#[tokio::test]
async fn summary_counts_hosts_bytes_refusals_and_secrets() {
    let mut fx = Fixture::start(false).await;
    let client = fx.client(true, true);
    for _ in 0..2 {
        let res = client
            .post("https://api.provider.test/v1/messages")
            .header("x-api-key", &fx.placeholder)
            .body("{\"max_tokens\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
    }
    // Without the placeholder nothing is injected, and it is counted as a request all the same.
    let res = client
        .get("https://api.provider.test/v1/models")
        .send()
        .await
        .unwrap();
    res.bytes().await.unwrap();
    let res = client
        .get("https://other.provider.test/")
        .send()
        .await
        .unwrap();
    res.bytes().await.unwrap();
    let _ = client.get("https://evil.provider.test/").send().await;
    let mid = fx.proxy().summary();
    assert!(mid.hosts.iter().any(|h| h.host == "api.provider.test"));

    let (entries, _, summary) = fx.finish().await;
    let api = summary
        .hosts
        .iter()
        .find(|h| h.host == "api.provider.test")
        .unwrap();
    assert_eq!((api.port, api.requests), (443, 3));
    let api_entries: Vec<_> = entries
        .iter()
        .filter(|e| e.host == "api.provider.test")
        .collect();
    assert_eq!(
        api.bytes_up,
        api_entries.iter().map(|e| e.bytes_up).sum::<u64>()
    );
    assert_eq!(
        api.bytes_down,
        api_entries.iter().map(|e| e.bytes_down).sum::<u64>()
    );
    assert_eq!(api.bytes_up, 2 * "{\"max_tokens\":1}".len() as u64);
    assert!(api.bytes_down > 3 * 200);
    assert_eq!(
        api_entries
            .iter()
            .filter(|e| e.secrets == ["PROVIDER_KEY"])
            .count(),
        2
    );
    let other = summary
        .hosts
        .iter()
        .find(|h| h.host == "other.provider.test")
        .unwrap();
    assert_eq!(other.requests, 1);
    assert!(other.bytes_up > 0 && other.bytes_down > 0);
    assert_eq!(summary.denied.len(), 1);
    assert_eq!(summary.denied[0].host, "evil.provider.test");
    assert_eq!(summary.denied[0].rule, "deny evil.provider.test");
    assert_eq!(summary.denied[0].count, 1);
    assert_eq!(summary.secrets_used, ["PROVIDER_KEY"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_write_whole_audit_lines() {
    let mut fx = Fixture::start(false).await;
    let client = fx.client(true, true);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let client = client.clone();
        let placeholder = fx.placeholder.clone();
        tasks.push(tokio::spawn(async move {
            let url = match i % 3 {
                0 => format!("https://api.provider.test/v1/messages/{i}"),
                1 => format!("https://other.provider.test/{i}"),
                _ => format!("https://evil.provider.test/{i}"),
            };
            let res = client
                .post(url)
                .header("x-api-key", placeholder)
                .body("x".repeat(1000 + i))
                .send()
                .await;
            if let Ok(res) = res {
                res.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (entries, text, _) = fx.finish().await;
    assert!(text.ends_with('\n'));
    // Every line is one whole JSON object (read_file would have failed otherwise).
    assert_eq!(entries.len(), text.lines().count());
    assert!(!text.contains(KEY));
    let intercepted = entries.iter().filter(|e| e.mode == Mode::Intercept).count();
    let denied = entries
        .iter()
        .filter(|e| e.decision == Decision::Deny)
        .count();
    let tunnels = entries
        .iter()
        .filter(|e| e.mode == Mode::Tunnel && e.decision == Decision::Allow)
        .count();
    assert_eq!(intercepted, 20);
    assert_eq!(denied, 20);
    assert!((1..=20).contains(&tunnels), "{tunnels}");
    let mut paths: Vec<_> = entries
        .iter()
        .filter(|e| e.mode == Mode::Intercept)
        .map(|e| e.path.clone())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 20);
}

#[tokio::test]
async fn audit_renders_and_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = audit::AuditLog::open(&path).await.unwrap();
    let entry = |decision, host: &str| AuditEntry {
        time: "2026-05-01T12:00:00.123Z".to_owned(),
        bottle: BOTTLE.to_owned(),
        mode: Mode::Intercept,
        method: "POST".to_owned(),
        host: host.to_owned(),
        port: 443,
        path: "/v1/messages".to_owned(),
        decision,
        rule: if decision == Decision::Allow {
            "allow api.provider.test"
        } else {
            "deny evil.test"
        }
        .to_owned(),
        status: if decision == Decision::Allow {
            200
        } else {
            403
        },
        bytes_up: 2048,
        bytes_down: 512,
        duration_ms: 42,
        secrets: vec!["PROVIDER_KEY".to_owned()],
        upstream: None,
        error: None,
    };
    let mut follower = audit::AuditFollower::new(&path);
    log.record(&entry(Decision::Allow, "api.provider.test"));
    log.flush().await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(5), follower.next_line())
        .await
        .unwrap()
        .unwrap();
    let parsed = audit::parse_line(&line).unwrap();
    assert_eq!(parsed, entry(Decision::Allow, "api.provider.test"));
    let shown = audit::render(&parsed, false);
    assert_eq!(
        shown,
        "2026-05-01 12:00:00.123  allow  POST    api.provider.test:443/v1/messages  200  up 2.0 KiB down 512 B  42 ms  secrets: PROVIDER_KEY"
    );

    // A line written later is picked up by the follower.
    let later = entry(Decision::Deny, "evil.test");
    let writer = {
        let log = Arc::clone(&log);
        let later = later.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.record(&later);
            log.flush().await.unwrap();
        })
    };
    let line = tokio::time::timeout(Duration::from_secs(5), follower.next_line())
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    let parsed = audit::parse_line(&line).unwrap();
    assert_eq!(parsed, later);
    let plain = audit::render(&parsed, false);
    assert!(
        plain.contains("DENY") && plain.contains("(deny evil.test)") && plain.contains("403"),
        "{plain}"
    );
    let colored = audit::render(&parsed, true);
    assert!(colored.starts_with("\x1b[1;31m") && colored.ends_with("\x1b[0m"));
    assert!(!audit::render(&entry(Decision::Allow, "a.test"), true).contains('\x1b'));
    assert_eq!(log.summary().denied[0].count, 1);
    check_mode(&path, 0o600);
}

fn check_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        mode
    );
}

#[test]
fn ca_is_made_once_reloaded_and_key_exposure_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let first = Ca::load_or_create(&ca_dir).unwrap();
    check_mode(&ca_dir.join("ca.pem"), 0o644);
    check_mode(&ca_dir.join("ca-key.pem"), 0o600);
    let again = Ca::load_or_create(&ca_dir).unwrap();
    assert_eq!(first.cert_pem(), again.cert_pem(), "reloaded, not remade");
    // A leaf issued after the reload chains to the saved certificate (the load checks it too).
    again.issue("api.provider.test").unwrap();

    let bundle = dir.path().join("bundle.pem");
    again.write_bundle(&bundle).unwrap();
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(text.ends_with(again.cert_pem()));
    if let Some(system) = bytebot_bottle::ca::system_bundle() {
        let sys = std::fs::read_to_string(system).unwrap();
        assert!(
            text.starts_with(sys.trim_end()),
            "the system roots come first"
        );
        assert!(text.matches("BEGIN CERTIFICATE").count() > 1);
    }
    check_mode(&bundle, 0o644);

    std::fs::set_permissions(
        ca_dir.join("ca-key.pem"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let err = Ca::load_or_create(&ca_dir).unwrap_err().to_string();
    assert!(
        err.contains("chmod 600") && err.contains("ca-key.pem"),
        "{err}"
    );

    // A certificate from another CA next to this key is caught at load.
    std::fs::set_permissions(
        ca_dir.join("ca-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let other_dir = dir.path().join("other");
    let other = Ca::load_or_create(&other_dir).unwrap();
    std::fs::write(ca_dir.join("ca.pem"), other.cert_pem()).unwrap();
    let err = Ca::load_or_create(&ca_dir).unwrap_err().to_string();
    assert!(err.contains("do not belong together"), "{err}");

    std::fs::remove_file(ca_dir.join("ca.pem")).unwrap();
    let err = Ca::load_or_create(&ca_dir).unwrap_err().to_string();
    assert!(err.contains("ca.pem is missing"), "{err}");
}
