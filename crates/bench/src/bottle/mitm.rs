//! mitmproxy (`mitmdump`) as the peer of our egress proxy: one quiet process on loopback
//! with its own CA in a temp folder, the test CA as its upstream root, and a small addon.
//! The addon points the bench's host names at the loopback server (as our proxy's
//! `resolve` overrides do) and, for the secret's host only, swaps the placeholder for the
//! real value in request headers and the real value back in response headers (what our
//! proxy does for a bound secret). The passthrough host is in `ignore_hosts`, so mitmproxy
//! relays it without TLS, like our tunnel.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The addon, written to the temp folder and loaded with `-s`.
const ADDON: &str = r#""""bytebot-bench: the bench's hosts resolve to the loopback test server; for the
secret's host the placeholder becomes the real value in request headers, and the real value
becomes the placeholder again in response headers."""
import os

SUFFIX = os.environ["BENCH_HOST_SUFFIX"]
SERVER = os.environ["BENCH_SERVER_IP"]
SECRET_HOST = os.environ["BENCH_SECRET_HOST"]
PLACEHOLDER = os.environ["BENCH_PLACEHOLDER"].encode()
REAL = os.environ["BENCH_SECRET"].encode()


class Bench:
    def server_connect(self, data):
        host, port = data.server.address
        if host.endswith(SUFFIX):
            data.server.address = (SERVER, port)

    def request(self, flow):
        if flow.request.pretty_host == SECRET_HOST:
            h = flow.request.headers
            h.fields = tuple((k, v.replace(PLACEHOLDER, REAL)) for k, v in h.fields)

    def response(self, flow):
        if flow.request.pretty_host == SECRET_HOST:
            h = flow.response.headers
            h.fields = tuple((k, v.replace(REAL, PLACEHOLDER)) for k, v in h.fields)


addons = [Bench()]
"#;

/// What the addon needs to know.
pub(super) struct Setup<'a> {
    /// Host names ending in this go to the server.
    pub(super) host_suffix: &'a str,
    /// The host mitmproxy relays without interception.
    pub(super) passthrough_host: &'a str,
    /// The host whose placeholder is swapped.
    pub(super) secret_host: &'a str,
    /// The placeholder the client sends.
    pub(super) placeholder: &'a str,
    /// The real value.
    pub(super) secret: &'a str,
    /// PEM of the test server's CA.
    pub(super) upstream_ca_pem: &'a str,
}

/// A running mitmdump, killed on drop.
pub(super) struct Mitm {
    child: Child,
    /// Where it listens.
    pub(super) addr: SocketAddr,
    /// Its CA certificate, PEM, for the client to trust.
    pub(super) ca_pem: String,
    /// What `mitmdump --version` said, e.g. "mitmproxy 12.2.3 (Python 3.13.0)".
    pub(super) version: String,
    _dir: tempfile::TempDir,
}

impl Mitm {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mitmdump to use: the given one, the venv scripts/bench makes, or PATH's.
pub(super) fn find(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let venv = PathBuf::from("target/bench-mitmproxy/bin/mitmdump");
    if venv.is_file() {
        return Ok(venv);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("mitmdump"))
        .find(|p| p.is_file())
        .context(
            "mitmproxy is not installed: scripts/bench installs it from PyPI into \
             target/bench-mitmproxy (python3 -m venv target/bench-mitmproxy && \
             target/bench-mitmproxy/bin/pip install mitmproxy), or pass --mitmdump PATH",
        )
}

/// Starts mitmdump and waits until it listens and has written its CA.
pub(super) fn start(mitmdump: &Path, setup: &Setup<'_>) -> Result<Mitm> {
    let version = version(mitmdump)?;
    let dir = tempfile::tempdir()?;
    let addon = dir.path().join("bench_addon.py");
    std::fs::write(&addon, ADDON)?;
    let upstream_ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca, setup.upstream_ca_pem)?;
    let confdir = dir.path().join("conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log_path = dir.path().join("mitmdump.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(mitmdump)
        .args(["--quiet", "--listen-host", "127.0.0.1", "--listen-port"])
        .arg(port.to_string())
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .arg("--set")
        .arg(format!(
            "ssl_verify_upstream_trusted_ca={}",
            upstream_ca.display()
        ))
        .args(["--set", "termlog_verbosity=error", "--set", "flow_detail=0"])
        .arg("--ignore-hosts")
        .arg(format!("^{}", setup.passthrough_host.replace('.', "\\.")))
        .arg("-s")
        .arg(&addon)
        .env("BENCH_HOST_SUFFIX", setup.host_suffix)
        .env("BENCH_SERVER_IP", "127.0.0.1")
        .env("BENCH_SECRET_HOST", setup.secret_host)
        .env("BENCH_PLACEHOLDER", setup.placeholder)
        .env("BENCH_SECRET", setup.secret)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", mitmdump.display()))?;
    let mut mitm = Mitm {
        child,
        addr,
        ca_pem: String::new(),
        version,
        _dir: dir,
    };
    let ca_path = confdir.join("mitmproxy-ca-cert.pem");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = mitm.child.try_wait() {
            bail!(
                "mitmdump exited with {status} before listening: {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        let listening = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        if listening && let Ok(pem) = std::fs::read_to_string(&ca_path) {
            mitm.ca_pem = pem;
            return Ok(mitm);
        }
        if Instant::now() > deadline {
            bail!(
                "mitmdump did not listen on {addr} within 60 s: {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// "mitmproxy X (Python Y)" from `mitmdump --version`.
fn version(mitmdump: &Path) -> Result<String> {
    let out = Command::new(mitmdump)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", mitmdump.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    match (field("Mitmproxy:"), field("Python:")) {
        (Some(m), Some(p)) => Ok(format!("mitmproxy {m} (Python {p})")),
        (Some(m), None) => Ok(format!("mitmproxy {m}")),
        _ => bail!(
            "{} --version printed no version: {}",
            mitmdump.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
