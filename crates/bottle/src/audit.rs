//! The egress audit: one JSON line per proxied request (and per tunnel) in `audit.jsonl`, the
//! per-run summary that goes into the provenance record, and the reader behind
//! `bytebot bottle audit [--follow]`.
//!
//! Lines are written by one task fed through a channel: requests never wait on the disk, and a
//! line is always written whole by a single `write`, so concurrent requests cannot interleave.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// What one bottle run did on the network, as the proxy saw it. Produced by the proxy at the end
/// of a run and embedded in the provenance predicate; it names secrets, never their values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSummary {
    /// Each host the run was allowed to reach, with its traffic.
    pub hosts: Vec<HostTraffic>,
    /// Requests the policy refused, grouped by host and rule.
    pub denied: Vec<DeniedAttempts>,
    /// Names of the secrets injected into at least one request.
    pub secrets_used: Vec<String>,
}

/// Traffic to one allowed host during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTraffic {
    /// Host name as the sandbox asked for it.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Requests (or tunnels) made.
    pub requests: u64,
    /// Bytes sent from the sandbox toward the host.
    pub bytes_up: u64,
    /// Bytes received from the host into the sandbox.
    pub bytes_down: u64,
}

/// Refused attempts toward one host under one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedAttempts {
    /// Host name (or address) the sandbox asked for.
    pub host: String,
    /// The rule that refused it, as written in the audit line.
    pub rule: String,
    /// How many times.
    pub count: u64,
}

/// What the proxy decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let through (whatever the upstream then answered).
    Allow,
    /// Refused by the proxy; nothing reached the host.
    Deny,
}

/// How a request went through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A CONNECT tunnel whose bytes were copied as they are (no secret bound to the host).
    Tunnel,
    /// A request inside a TLS connection the proxy terminated (the host has a bound secret).
    Intercept,
    /// A plain-HTTP request (absolute form).
    Http,
}

/// One line of `audit.jsonl`. Byte counts are body bytes for requests and raw bytes for
/// tunnels; `secrets` holds names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the request finished (or was refused), RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The bottle run's id.
    pub bottle: String,
    /// Tunnel, intercepted request or plain HTTP.
    pub mode: Mode,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: String,
    /// Host as the sandbox named it (normalised).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Request path without the query string (empty for tunnels).
    pub path: String,
    /// Allowed or refused.
    pub decision: Decision,
    /// The rule that decided, e.g. `allow *.pypi.org`, `deny evil.example.com`,
    /// `not in allow list`, `private address 127.0.0.1 (loopback)`.
    pub rule: String,
    /// HTTP status returned to the sandbox (200 for an established tunnel, 0 when none).
    pub status: u16,
    /// Bytes from the sandbox toward the host.
    pub bytes_up: u64,
    /// Bytes from the host into the sandbox.
    pub bytes_down: u64,
    /// From the request's arrival to its last byte, in milliseconds.
    pub duration_ms: u64,
    /// Names of the secrets injected into this request.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The address actually connected to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// What went wrong, for allowed requests that failed (upstream unreachable, reset, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The current time in the audit's format (RFC 3339, UTC, milliseconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<io::Result<()>>),
}

#[derive(Default)]
struct Counters {
    hosts: BTreeMap<(String, u16), HostTraffic>,
    denied: BTreeMap<(String, String), u64>,
    secrets: BTreeSet<String>,
}

/// The audit file of one proxy, with the run's counters. Recording never blocks: lines go to a
/// writer task over a channel; [`AuditLog::flush`] waits until everything recorded so far is
/// on disk.
pub struct AuditLog {
    path: PathBuf,
    tx: mpsc::UnboundedSender<Msg>,
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating, mode 0600, or appending to) the audit file and starts its writer task
    /// on the current tokio runtime.
    pub async fn open(path: &Path) -> io::Result<Arc<AuditLog>> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(file, rx));
        Ok(Arc::new(AuditLog {
            path: path.to_owned(),
            tx,
            counters: Mutex::new(Counters::default()),
        }))
    }

    /// The audit file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one entry: counts it in the summary and queues its line.
    pub fn record(&self, entry: &AuditEntry) {
        {
            let mut c = self
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match entry.decision {
                Decision::Allow => {
                    let t = c
                        .hosts
                        .entry((entry.host.clone(), entry.port))
                        .or_insert_with(|| HostTraffic {
                            host: entry.host.clone(),
                            port: entry.port,
                            ..HostTraffic::default()
                        });
                    t.requests += 1;
                    t.bytes_up += entry.bytes_up;
                    t.bytes_down += entry.bytes_down;
                    for s in &entry.secrets {
                        if !c.secrets.contains(s) {
                            c.secrets.insert(s.clone());
                        }
                    }
                }
                Decision::Deny => {
                    *c.denied
                        .entry((entry.host.clone(), entry.rule.clone()))
                        .or_default() += 1;
                }
            }
        }
        match serde_json::to_vec(entry) {
            Ok(mut line) => {
                line.push(b'\n');
                // The writer only stops when every sender is gone, and this is one.
                let _ = self.tx.send(Msg::Line(line));
            }
            Err(e) => tracing::error!(error = %e, "bottle audit: cannot encode an entry"),
        }
    }

    /// Waits until every line recorded before this call is written.
    pub async fn flush(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .map_err(|_| io::Error::other("the audit writer has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("the audit writer has stopped"))?
    }

    /// What the run did so far: allowed traffic per host, refusals per host and rule, secrets used.
    pub fn summary(&self) -> EgressSummary {
        let c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        EgressSummary {
            hosts: c.hosts.values().cloned().collect(),
            denied: c
                .denied
                .iter()
                .map(|((host, rule), count)| DeniedAttempts {
                    host: host.clone(),
                    rule: rule.clone(),
                    count: *count,
                })
                .collect(),
            secrets_used: c.secrets.iter().cloned().collect(),
        }
    }
}

/// The writer task: takes whatever is queued, writes it in one go, repeats. Batching keeps the
/// number of writes (each a trip to the blocking pool) well below the number of requests under
/// load, while a lone request still gets its line out at once.
async fn write_lines(mut file: tokio::fs::File, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut buf = Vec::with_capacity(8192);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => buf.extend_from_slice(&line),
                Msg::Flush(done) => waiting.push(done),
            }
            next = if buf.len() < 1 << 20 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let mut result = Ok(());
        if !buf.is_empty() {
            result = file.write_all(&buf).await;
            if result.is_ok() {
                result = file.flush().await;
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "bottle audit: cannot write the audit file");
            }
            buf.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Parses one audit line.
pub fn parse_line(line: &str) -> Result<AuditEntry, serde_json::Error> {
    serde_json::from_str(line)
}

/// Reads a whole audit file: each line parsed, or the error text for a line that is not an
/// audit entry (kept so a reader can say which line was bad).
pub fn read_file(path: &Path) -> io::Result<Vec<Result<AuditEntry, String>>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_line(l).map_err(|e| e.to_string()))
        .collect())
}

/// One readable line for a person: time, decision, method host:port path, status, bytes each
/// way, duration, secrets. Refusals carry a `DENY` marker and their rule, in red when `color`
/// is set (the caller decides, usually from whether stdout is a terminal).
pub fn render(entry: &AuditEntry, color: bool) -> String {
    let time = entry
        .time
        .get(..23)
        .unwrap_or(&entry.time)
        .replace('T', " ");
    let target = if entry.path.is_empty() {
        format!("{}:{}", entry.host, entry.port)
    } else {
        format!("{}:{}{}", entry.host, entry.port, entry.path)
    };
    let mut line = match entry.decision {
        Decision::Allow => format!(
            "{time}  allow  {:<7} {target}  {}  up {} down {}  {} ms",
            entry.method,
            entry.status,
            human_bytes(entry.bytes_up),
            human_bytes(entry.bytes_down),
            entry.duration_ms,
        ),
        Decision::Deny => format!(
            "{time}  DENY   {:<7} {target}  {}  ({})",
            entry.method, entry.status, entry.rule
        ),
    };
    if !entry.secrets.is_empty() {
        line.push_str(&format!("  secrets: {}", entry.secrets.join(",")));
    }
    if let Some(e) = &entry.error {
        line.push_str(&format!("  error: {e}"));
    }
    if color && entry.decision == Decision::Deny {
        format!("\x1b[1;31m{line}\x1b[0m")
    } else {
        line
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Follows an audit file like `tail -f`: yields every line from the start, then new lines as
/// the proxy appends them (polling every 200 ms). Waits for the file to appear, and starts over
/// if it is truncated or replaced by a shorter one.
pub struct AuditFollower {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
    pending: Vec<u8>,
    ready: std::collections::VecDeque<String>,
    poll: Duration,
}

impl AuditFollower {
    /// Follows `path` from its first line.
    pub fn new(path: &Path) -> AuditFollower {
        AuditFollower {
            path: path.to_owned(),
            file: None,
            offset: 0,
            pending: Vec::new(),
            ready: std::collections::VecDeque::new(),
            poll: Duration::from_millis(200),
        }
    }

    /// The next complete line (without its newline); waits for one to be written.
    pub async fn next_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Ok(line);
            }
            if !self.read_more().await? {
                tokio::time::sleep(self.poll).await;
            }
        }
    }

    /// Reads what was appended since last time; false when there was nothing new.
    async fn read_more(&mut self) -> io::Result<bool> {
        let len = match tokio::fs::metadata(&self.path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.file = None;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if len < self.offset {
            // Truncated or replaced: start over.
            self.file = None;
            self.offset = 0;
            self.pending.clear();
        }
        if len == self.offset {
            return Ok(false);
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let mut f = tokio::fs::File::open(&self.path).await?;
                f.seek(io::SeekFrom::Start(self.offset)).await?;
                self.file.insert(f)
            }
        };
        let mut chunk = Vec::with_capacity((len - self.offset).min(1 << 20) as usize);
        let n = file.read_to_end(&mut chunk).await?;
        self.offset += n as u64;
        self.pending.extend_from_slice(&chunk);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim_end_matches('\r')
                .to_owned();
            if !text.trim().is_empty() {
                self.ready.push_back(text);
            }
        }
        Ok(n > 0)
    }
}
