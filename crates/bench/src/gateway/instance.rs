//! A real `bytebot up` for the gateway benchmarks: its own data folder,
//! config, policy and client key, started as a child process; and the
//! client side of HMAC signing.

use anyhow::{Context, Result, bail, ensure};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Soft RLIMIT_NOFILE raised to the hard limit (inherited by `bytebot up`,
/// which holds one socket per subscriber); returns the soft limit now in force.
pub(super) fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

type HmacSha256 = Hmac<Sha256>;

/// Key id of the bench's client key (HMAC secret and bearer token).
const KEY_ID: &str = "bench";

/// What a client needs to call the instance.
#[derive(Clone)]
pub(super) struct Creds {
    pub(super) base: String,
    pub(super) secret: Arc<Vec<u8>>,
    pub(super) bearer: Arc<String>,
}

/// A running `bytebot up` with its own data folder, config, policy and keys.
pub(super) struct Instance {
    pub(super) child: Child,
    pub(super) dir: PathBuf,
    pub(super) creds: Creds,
    /// Keeps the child's stdout pipe drained.
    _banner: std::thread::JoinHandle<()>,
}

impl Instance {
    pub(super) fn start(bin: &Path) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "{} does not exist; build it first: cargo build --release -p bytebot-cli",
                bin.display()
            );
        }
        let dir = std::env::temp_dir().join(format!("bytebot-bench-gw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let bearer = format!("bt_{}", hex::encode(rand::random::<[u8; 24]>()));
        let main_token = format!("main_{}", hex::encode(rand::random::<[u8; 24]>()));
        let secret_file = dir.join("bench.secret");
        write_private(&secret_file, secret.as_bytes())?;
        let policy = dir.join("policy.json");
        std::fs::write(&policy, policy_json().to_string())?;
        let config = dir.join("bytebot.toml");
        let toml = format!(
            r#"token = "{main_token}"
data_dir = "{data}"

[log]
level = "warn"

[desktop]
listen = "127.0.0.1:0"
vnc = false
window_manager = ""

[agent]
listen = "127.0.0.1:0"

[gateway]
listen = "127.0.0.1:0"
policy = "{policy}"
local_profile = "bench"

[[gateway.keys]]
id = "{KEY_ID}"
profile = "bench"
secret_file = "{secret_file}"
token_sha256 = "{token_sha}"

[store]
url = "sqlite:{db}"
"#,
            data = dir.join("data").display(),
            policy = policy.display(),
            secret_file = secret_file.display(),
            token_sha = hex::encode(Sha256::digest(bearer.as_bytes())),
            db = dir.join("data/bytebot.db").display(),
        );
        std::fs::write(&config, toml)?;
        let log_path = dir.join("bytebot.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .args(["up", "--own-display"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // Our config file must be the whole configuration.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BYTEBOT_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd.spawn().context("starting bytebot up")?;
        let stdout = child
            .stdout
            .take()
            .context("bytebot up has no stdout pipe")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let banner = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(addr) = gateway_addr(&line) {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    bail!(
                        "bytebot up printed no `  gateway       http://…` line within 60 s; its log ({}):\n{}",
                        log_path.display(),
                        tail(&log, 20)
                    );
                }
            }
        };
        Ok(Self {
            child,
            dir,
            creds: Creds {
                base: format!("http://{addr}"),
                secret: Arc::new(secret.into_bytes()),
                bearer: Arc::new(bearer),
            },
            _banner: banner,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (so it stops its own Xvfb), then SIGKILL after 10 s.
    pub(super) fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill only sends a signal to our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A profile that may plan screenshots and run `sh`/`echo`, without a rate
/// limit that could interfere.
fn policy_json() -> Value {
    json!({"profiles": {"bench": {
        "intents": ["screenshot", "run"],
        "run": {"programs": ["echo", "sh"], "timeout_s": 30},
        "rate_limit": {"per_minute": 100_000_000, "burst": 1_000_000},
    }}})
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// The address in the banner line `  gateway       http://127.0.0.1:PORT  (…)`.
fn gateway_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("  gateway")?.trim_start();
    rest.strip_prefix("http://")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The four `X-BYTEBOT-*` headers of a signed request, made fresh for each
/// request (timestamp, random nonce, HMAC over the spec's signing string).
pub(super) fn sign(
    secret: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<[(&'static str, String); 4]> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_secs()
        .to_string();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mut mac = HmacSha256::new_from_slice(secret).context("HMAC key")?;
    mac.update(format!("v1\n{ts}\n{nonce}\n{method}\n{path}\n").as_bytes());
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    Ok([
        ("x-bytebot-key-id", KEY_ID.to_string()),
        ("x-bytebot-timestamp", ts),
        ("x-bytebot-nonce", nonce),
        ("x-bytebot-sig", sig),
    ])
}

/// One signed JSON POST; the answer's JSON when it is 200.
pub(super) async fn signed_post(
    client: &reqwest::Client,
    c: &Creds,
    path: &str,
    body: &Value,
) -> Result<Value> {
    let body = body.to_string();
    let mut req = client
        .post(format!("{}{path}", c.base))
        .header("content-type", "application/json");
    for (name, value) in sign(&c.secret, "POST", path, body.as_bytes())? {
        req = req.header(name, value);
    }
    let r = req.body(body).send().await?;
    let status = r.status();
    let text = r.text().await?;
    ensure!(
        status == reqwest::StatusCode::OK,
        "POST {path}: HTTP {status}: {text}"
    );
    Ok(serde_json::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn finds_the_gateway_in_the_banner() {
        let line = "  gateway       http://127.0.0.1:40123  (plan/approve/execute; OpenAPI at http://127.0.0.1:40123/openapi.json)";
        assert_eq!(gateway_addr(line), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(gateway_addr("  desktop API   http://127.0.0.1:1"), None);
    }
}
