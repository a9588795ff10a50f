//! `bytebot bottle run`, `bytebot verify` and `bytebot bottle audit` as a user runs them: the
//! real binary, real bubblewrap, a real TLS server on loopback playing a model provider behind
//! the bottle's egress proxy, and python3 inside the sandbox as the untrusted client.
//!
//! A test skips (printing why) only when this host has no bwrap or no user namespaces. Test
//! host names reach the loopback server through the hidden `--dev-resolve` hook; nothing here
//! connects anywhere but 127.0.0.1 (the direct-TCP probe's public address is refused inside
//! the sandbox, which has no route).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytebot_bottle::sandbox::{Bwrap, SandboxError};
use hudsucker::hyper::body::{Body as _, Incoming};
use hudsucker::hyper::server::conn::http1;
use hudsucker::hyper::service::service_fn;
use hudsucker::hyper::{Request, Response};
use hudsucker::hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// The real provider key: the test server must see it, the sandbox never.
const REAL_KEY: &str = "sk-proj-REALkey7Qw2Zr9Xc4Vb1Nm8Lk3Jh6Gf5Ds0Aa";

/// Whether this host can run bottles; prints the reason when not.
async fn sandbox_available() -> bool {
    let bwrap = match Bwrap::new() {
        Ok(b) => b,
        Err(e) => {
            println!("skipping: bwrap is not available ({e})");
            return false;
        }
    };
    match bwrap.check().await {
        Ok(()) => true,
        Err(e @ SandboxError::UserNamespaces { .. }) => {
            println!("skipping: user namespaces are not available ({e})");
            false
        }
        Err(e) => panic!("bwrap self-check failed: {e}"),
    }
}

/// One installation: its own data folder and workspace.
struct Install {
    data: tempfile::TempDir,
    ws: tempfile::TempDir,
}

impl Install {
    fn new() -> Self {
        Self {
            data: tempfile::tempdir().unwrap(),
            ws: tempfile::tempdir().unwrap(),
        }
    }

    fn bottle_dir(&self) -> PathBuf {
        self.data.path().join("bottle")
    }

    /// `bytebot ARGS…` with a clean environment, in the workspace.
    fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_bytebot"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("BYTEBOT_DATA_DIR", self.data.path())
            .current_dir(self.ws.path())
            .args(args);
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().await.unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The path after `provenance: ` in the closing summary line.
fn provenance_path(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("bottle "))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    PathBuf::from(line.rsplit_once("provenance: ").unwrap().1)
}

#[tokio::test]
async fn a_run_is_recorded_signed_and_verified_and_any_change_is_caught() {
    if !sandbox_available().await {
        return;
    }
    let inst = Install::new();
    std::fs::write(inst.ws.path().join("input.txt"), "kept\n").unwrap();
    let out = inst
        .run(&[
            "bottle",
            "run",
            "--label",
            "first",
            "--",
            "sh",
            "-c",
            "echo built > result.txt; mkdir -p sub; printf x > sub/b.bin; cat input.txt; echo oops >&2; exit 3",
        ])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(text(&out.stdout), "kept\n");
    assert!(stderr.starts_with("oops\n"), "{stderr}");
    assert!(stderr.contains("exit 3"), "{stderr}");
    assert!(stderr.contains("hosts: none; denied: 0"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(inst.ws.path().join("result.txt")).unwrap(),
        "built\n"
    );
    let record = provenance_path(&stderr);
    assert!(
        record.starts_with(inst.bottle_dir().join("runs")),
        "{record:?}"
    );
    assert!(record.to_string_lossy().ends_with(".intoto.jsonl"));
    assert!(inst.bottle_dir().join("signing.key.pub").is_file());

    // Verified with the installation's own public key by default, files checked too.
    let rec = record.to_str().unwrap();
    let out = inst.run(&["verify", rec, "--workspace", "."]).await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(report.starts_with("signature OK"), "{report}");
    assert!(report.contains("label \"first\""), "{report}");
    assert!(report.contains("exit code 3"), "{report}");
    assert!(report.contains("wrote 2 file(s)"), "{report}");
    assert!(report.contains("  result.txt  (6 B, new)"), "{report}");
    assert!(report.contains("  sub/b.bin  (1 B, new)"), "{report}");
    assert!(
        !report.contains("  input.txt"),
        "read-only input is no output: {report}"
    );
    assert!(
        report.contains("all 2 written file(s) are as recorded"),
        "{report}"
    );

    // A file changed after the run: the signature still holds, the workspace check fails.
    std::fs::write(inst.ws.path().join("result.txt"), "forged\n").unwrap();
    let out = inst.run(&["verify", rec, "--workspace", "."]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("result.txt: changed since the run"));

    // One byte of the signed payload changed: verification fails, with the reason.
    let original = std::fs::read_to_string(&record).unwrap();
    let at = original.find("\"payload\":\"").unwrap() + 11 + 40;
    let mut bytes = original.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = inst.data.path().join("tampered.intoto.jsonl");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = inst.run(&["verify", tampered.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("FAILED") && err.contains("signature does not match"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Another installation's key does not verify it.
    let other = Install::new();
    let out = other.run(&["bottle", "run", "--", "true"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let other_pub = other.bottle_dir().join("signing.key.pub");
    let out = inst
        .run(&["verify", rec, "--key", other_pub.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("signed by key"),
        "{}",
        text(&out.stderr)
    );

    // A signal that ends the command comes back as 128+n, and is recorded.
    let out = inst
        .run(&["bottle", "run", "--", "sh", "-c", "kill -TERM $$"])
        .await;
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    let rec = provenance_path(&text(&out.stderr));
    let out = inst.run(&["verify", rec.to_str().unwrap()]).await;
    assert!(text(&out.stdout).contains("killed by signal 15"));

    // A command that does not exist: 127, like a shell.
    let out = inst
        .run(&["bottle", "run", "--", "no-such-tool-here"])
        .await;
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("command not found"));
}

/// What the provider server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

async fn read_body(mut body: Incoming) {
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        frame.unwrap();
    }
}

/// Answers like OpenAI's `GET /v1/models` (200 with the model list for the real key, 401 with
/// OpenAI's error body otherwise) and echoes the Authorization it received in a header, so
/// the test sees what the proxy hands back into the sandbox.
async fn provider(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<hudsucker::Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    read_body(req.into_body()).await;
    seen.lock().unwrap().push(Seen {
        path,
        authorization: authorization.clone(),
    });
    let ok = authorization.as_deref() == Some(&format!("Bearer {REAL_KEY}"));
    let (status, body) = if ok {
        (
            200,
            serde_json::json!({
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
                    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}
                ]
            }),
        )
    } else {
        (
            401,
            serde_json::json!({
                "error": {
                    "message": "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error",
                    "param": null,
                    "code": "invalid_api_key"
                }
            }),
        )
    };
    let mut res = Response::new(hudsucker::Body::from(body.to_string()));
    *res.status_mut() = hudsucker::hyper::StatusCode::from_u16(status).unwrap();
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(a) = authorization {
        res.headers_mut()
            .insert("x-echo-authorization", a.parse().unwrap());
    }
    Ok(res)
}

/// A TLS server for api.provider.test on loopback (certificate from a test CA whose PEM is
/// written to `ca_file`), counting every TCP connection it accepts.
async fn provider_server(ca_file: &Path) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>, Arc<Mutex<u32>>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "provider test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["api.provider.test".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (seen2, conns2) = (Arc::clone(&seen), Arc::clone(&connections));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            *conns2.lock().unwrap() += 1;
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
    (addr, seen, connections)
}

const PROVIDER_POLICY: &str = r#"{
  "network": {
    "allow": ["api.provider.test", "*.blocked.test"],
    "deny": ["www.blocked.test"],
    "allow_private": ["api.provider.test"]
  },
  "secrets": [
    { "name": "PROVIDER_KEY", "hosts": ["api.provider.test"], "env": "HOST_PROVIDER_KEY" }
  ],
  "env": { "pass": ["LANG"] },
  "limits": { "wall_s": 120 }
}"#;

/// The untrusted client: the allowed call with the placeholder, two refused hosts, and direct
/// TCP around the proxy.
const CLIENT: &str = r#"
import os, socket, ssl, sys, urllib.error, urllib.request
port = int(sys.argv[1])
key = os.environ["PROVIDER_KEY"]
print("placeholder", key)
print("proxy", os.environ.get("HTTPS_PROXY"), os.environ.get("SSL_CERT_FILE"))
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
req = urllib.request.Request(f"https://api.provider.test:{port}/v1/models?limit=2",
                             headers={"Authorization": "Bearer " + key})
with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
    print("status", r.status)
    print("echo", r.headers.get("x-echo-authorization"))
    print("body", r.read().decode())
try:
    urllib.request.urlopen("http://www.blocked.test/private/path?token=1", timeout=30)
    print("deny-rule REACHED")
except urllib.error.HTTPError as e:
    print("deny-rule", e.code, e.read().decode().strip())
try:
    urllib.request.urlopen(f"https://elsewhere.test:{port}/", context=ctx, timeout=30)
    print("unlisted REACHED")
except OSError as e:
    print("unlisted", e)
for addr in [("127.0.0.1", port), ("1.1.1.1", 443)]:
    try:
        socket.create_connection(addr, timeout=5)
        print("direct CONNECTED", addr)
    except OSError as e:
        print("direct failed", addr[0], e.errno)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_allowed_host_gets_the_real_secret_and_everything_else_is_refused_and_audited() {
    if !sandbox_available().await {
        return;
    }
    let inst = Install::new();
    let ca_file = inst.data.path().join("provider-ca.pem");
    let (addr, seen, connections) = provider_server(&ca_file).await;
    let policy = inst.data.path().join("policy.json");
    std::fs::write(&policy, PROVIDER_POLICY).unwrap();
    let resolve = format!("api.provider.test={addr}");
    let port = addr.port().to_string();
    let out = inst
        .cmd(&[
            "bottle",
            "run",
            "--json",
            "--policy",
            policy.to_str().unwrap(),
            "--dev-resolve",
            &resolve,
            "--dev-upstream-root",
            ca_file.to_str().unwrap(),
            "--",
            "python3",
            "-c",
            CLIENT,
            &port,
        ])
        .env("HOST_PROVIDER_KEY", REAL_KEY)
        .output()
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    // Inside: a placeholder shaped like the key, the proxy and the CA bundle.
    let placeholder = stdout
        .lines()
        .find_map(|l| l.strip_prefix("placeholder "))
        .unwrap()
        .to_owned();
    assert!(placeholder.starts_with("sk-proj-"), "{placeholder}");
    assert_eq!(placeholder.len(), REAL_KEY.len());
    assert_ne!(placeholder, REAL_KEY);
    assert!(
        stdout.contains("proxy http://127.0.0.1:3128 /run/bottle/ca.pem"),
        "{stdout}"
    );
    // The allowed call worked with the real key upstream; what came back holds the
    // placeholder again, never the key.
    assert!(stdout.contains("status 200"), "{stdout}");
    assert!(stdout.contains(r#""id":"gpt-4o""#), "{stdout}");
    assert!(
        stdout.contains(&format!("echo Bearer {placeholder}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(REAL_KEY),
        "the key leaked into the sandbox: {stdout}"
    );
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/v1/models");
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(format!("Bearer {REAL_KEY}").as_str())
    );
    // Refusals: a 403 naming host and rule for plain HTTP, a refused CONNECT for HTTPS.
    let deny_line = stdout.lines().find(|l| l.starts_with("deny-rule")).unwrap();
    assert!(deny_line.starts_with("deny-rule 403"), "{deny_line}");
    assert!(
        deny_line.contains("www.blocked.test") && deny_line.contains("deny"),
        "{deny_line}"
    );
    let unlisted = stdout.lines().find(|l| l.starts_with("unlisted")).unwrap();
    assert!(unlisted.contains("403"), "{unlisted}");
    // Around the proxy there is no way out: loopback is the sandbox's own, nothing routes.
    assert!(
        stdout.contains("direct failed 127.0.0.1 111"),
        "connection refused expected: {stdout}"
    );
    assert!(
        stdout.contains("direct failed 1.1.1.1 101"),
        "network unreachable expected: {stdout}"
    );
    assert!(
        !stdout.contains("CONNECTED") && !stdout.contains("REACHED"),
        "{stdout}"
    );
    assert_eq!(
        *connections.lock().unwrap(),
        1,
        "only the proxy may reach the server"
    );

    // The summary (JSON) and the signed record name the secret, never its value.
    let summary: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["hosts"][0]["host"], "api.provider.test");
    assert_eq!(summary["hosts"][0]["port"], addr.port());
    assert_eq!(summary["denied"], 2, "{summary}");
    assert_eq!(summary["secrets_used"][0], "PROVIDER_KEY");
    let record = PathBuf::from(summary["provenance"].as_str().unwrap());
    let record_text = std::fs::read_to_string(&record).unwrap();
    assert!(!record_text.contains(REAL_KEY));
    let out = inst.run(&["verify", record.to_str().unwrap()]).await;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        report.contains(&format!("api.provider.test:{}  1 request(s)", addr.port())),
        "{report}"
    );
    assert!(report.contains("DENIED 2 attempt(s)"), "{report}");
    assert!(
        report.contains("secrets used (by name): PROVIDER_KEY"),
        "{report}"
    );

    // The audit: the allowed request with the secret's name, a DENY line for each refusal,
    // never the key.
    let audit_file = inst.bottle_dir().join("audit.jsonl");
    let raw = std::fs::read_to_string(&audit_file).unwrap();
    assert!(!raw.contains(REAL_KEY), "{raw}");
    assert!(
        !raw.contains("token=1"),
        "queries stay out of the audit: {raw}"
    );
    let out = inst.run(&["bottle", "audit"]).await;
    assert!(out.status.success());
    let audit = text(&out.stdout);
    assert!(!audit.contains('\x1b'), "no colour when not on a terminal");
    let allowed = audit
        .lines()
        .find(|l| l.contains("allow") && l.contains("api.provider.test"))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(allowed.contains("GET"), "{allowed}");
    assert!(allowed.contains("/v1/models"), "{allowed}");
    assert!(allowed.contains("secrets: PROVIDER_KEY"), "{allowed}");
    let denied: Vec<&str> = audit.lines().filter(|l| l.contains("DENY")).collect();
    assert_eq!(denied.len(), 2, "{audit}");
    assert!(
        denied
            .iter()
            .any(|l| l.contains("www.blocked.test:80/private/path")
                && l.contains("deny www.blocked.test")),
        "{audit}"
    );
    assert!(
        denied
            .iter()
            .any(|l| l.contains("CONNECT") && l.contains("elsewhere.test")),
        "{audit}"
    );
    // Filtered by bottle id, and followed as it grows.
    let id = summary["bottle_id"].as_str().unwrap();
    let out = inst.run(&["bottle", "audit", "--bottle", id]).await;
    assert_eq!(text(&out.stdout).lines().count(), 3);
    let out = inst
        .run(&["bottle", "audit", "--bottle", "someone-else"])
        .await;
    assert!(out.stdout.is_empty());
    let mut follow = inst
        .cmd(&[
            "bottle",
            "audit",
            "--follow",
            "--file",
            audit_file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(follow.stdout.take().unwrap()));
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let mut line = serde_json::from_str::<serde_json::Value>(raw.lines().next().unwrap()).unwrap();
    line["host"] = "appended.blocked.test".into();
    let mut appended = raw.clone();
    appended.push_str(&format!("{line}\n"));
    std::fs::write(&audit_file, appended).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("--follow printed the appended line")
        .unwrap()
        .unwrap();
    assert!(next.contains("appended.blocked.test"), "{next}");
    follow.kill().await.unwrap();
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_place_and_reason_before_anything_runs() {
    if !sandbox_available().await {
        return;
    }
    let inst = Install::new();
    let run_marker = |policy: &str| {
        vec![
            "bottle".to_owned(),
            "run".to_owned(),
            "--policy".to_owned(),
            policy.to_owned(),
            "--".to_owned(),
            "touch".to_owned(),
            "ran".to_owned(),
        ]
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "{\n  \"network\": { \"allow\": [] },\n  \"secretz\": []\n}\n",
            &["line 3, column", "unknown field `secretz`"],
        ),
        (
            r#"{"network": {"allow": ["*"]}}"#,
            &["network.allow[0]", "would allow every host"],
        ),
        (
            r#"{"network": {"allow": ["api.example.com"]}, "secrets": [{"name": "K", "hosts": ["other.example.com"], "env": "K"}]}"#,
            &["secrets[0].hosts[0]", "network.allow does not allow"],
        ),
    ];
    for (i, (policy, wants)) in cases.iter().enumerate() {
        let file = inst.data.path().join(format!("policy-{i}.json"));
        std::fs::write(&file, policy).unwrap();
        let args = run_marker(file.to_str().unwrap());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = inst.run(&args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains(file.to_str().unwrap()), "{err}");
        for want in *wants {
            assert!(err.contains(want), "missing {want:?} in {err}");
        }
    }
    // Neither a profile nor a file; a missing secret; a missing workspace.
    let out = inst
        .run(&["bottle", "run", "--policy", "strict", "--", "true"])
        .await;
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("default, coding-agent"),
        "{}",
        text(&out.stderr)
    );
    let file = inst.data.path().join("needs-secret.json");
    std::fs::write(
        &file,
        r#"{"network": {"allow": ["api.example.com"]}, "secrets": [{"name": "K", "hosts": ["api.example.com"], "env": "NOT_SET_ANYWHERE"}]}"#,
    )
    .unwrap();
    let out = inst
        .run(&[
            "bottle",
            "run",
            "--policy",
            file.to_str().unwrap(),
            "--",
            "touch",
            "ran",
        ])
        .await;
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("NOT_SET_ANYWHERE is not set"),
        "{}",
        text(&out.stderr)
    );
    let missing = inst.ws.path().join("missing");
    let out = inst
        .run(&[
            "bottle",
            "run",
            "--workspace",
            missing.to_str().unwrap(),
            "--",
            "true",
        ])
        .await;
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );

    assert!(!inst.ws.path().join("ran").exists(), "a refused run ran");
    assert!(
        !inst.bottle_dir().join("runs").exists(),
        "a refused run was recorded"
    );
}

#[tokio::test]
async fn the_default_profile_has_no_network_and_starts_fast() {
    if !sandbox_available().await {
        return;
    }
    let inst = Install::new();
    let out = inst
        .run(&[
            "bottle",
            "run",
            "--",
            "sh",
            "-c",
            "env; python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 443), timeout=5)' 2>&1 | tail -1",
        ])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lower = stdout.to_ascii_lowercase();
    for absent in ["proxy", "ssl_cert_file", "ca_bundle", "cainfo"] {
        assert!(
            !lower.contains(absent),
            "{absent} set without a proxy: {stdout}"
        );
    }
    assert!(stdout.contains("LANG=C.UTF-8"), "{stdout}");
    assert!(!stdout.contains("BYTEBOT_DATA_DIR"), "{stdout}");
    assert!(stdout.contains("Network is unreachable"), "{stdout}");
    assert!(
        !inst.bottle_dir().join("ca.pem").exists(),
        "no CA is made for a run without network"
    );

    // Timing, printed for the record (never asserted).
    let rounds = 7;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut bottle = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let out = inst.run(&["bottle", "run", "--", "true"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        bottle.push(t0.elapsed());
    }
    let mut bare = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let st = tokio::process::Command::new("bwrap")
            .args(["--ro-bind", "/", "/", "true"])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        bare.push(t0.elapsed());
    }
    println!(
        "median of {rounds}: `bytebot bottle run -- true` {:?} (whole CLI: config, key, snapshot, \
         sandbox, record); bare `bwrap --ro-bind / / true` {:?}",
        median(bottle),
        median(bare)
    );
}

#[tokio::test]
async fn ctrl_c_stops_the_sandbox_and_the_run_is_still_recorded() {
    if !sandbox_available().await {
        return;
    }
    let inst = Install::new();
    let help = inst.run(&["--help"]).await;
    assert!(!text(&help.stdout).contains("__bottle-init"));
    // A marker argument lets the test find the sandboxed process among the host's.
    let marker = format!("sleep-marker-{}", std::process::id());
    let script = format!("touch started; exec -a {marker} sleep 60");
    let child = inst
        .cmd(&["bottle", "run", "--", "bash", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = inst.ws.path().join("started");
    let t0 = Instant::now();
    while !started.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().unwrap().to_string();
    let st = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("bytebot stopped after SIGINT")
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped by signal 2"), "{stderr}");
    // Gone at once, or within a moment (the kernel tears the pid namespace down).
    let t0 = Instant::now();
    loop {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        if !text(&ps.stdout).contains(&marker) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the sandboxed command outlived the bottle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = provenance_path(&stderr);
    let out = inst.run(&["verify", record.to_str().unwrap()]).await;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(report.contains("killed by signal 2"), "{report}");
    assert!(report.contains("  started  (0 B, new)"), "{report}");
}
