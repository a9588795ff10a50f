//! The bottle behind the `run` intent: every approved run executes in a bubblewrap sandbox
//! (`bytebot_bottle::sandbox::Bwrap`) under the caller's policy profile, and leaves a signed
//! provenance record. There is no other runner: when the sandbox cannot start on this host,
//! `run` is refused at plan time (503) instead of running unconfined.
//!
//! What a run gets: the workspace read-write at `/workspace` (its working folder below it), the
//! read-only system, a fresh `/tmp` and home, the plan's argv (no shell) and environment
//! (`LANG` and the caller's variables; nothing of the host's), the profile's time, memory,
//! output and process limits. Network: with an empty allow-list none at all (no proxy);
//! otherwise an egress proxy on a unix socket in a private temporary folder, allowing exactly
//! the plan's hosts, appending one audit line per request. The gateway's policy names no
//! secrets, so the proxy holds none and intercepts nothing.
//!
//! Files, under `<data_dir>/bottle/` (the same folder `bytebot bottle` uses by default):
//! `ca.pem` + `ca-key.pem` (the proxy's CA), `audit.jsonl` (egress audit), `signing.key`
//! (+ `.pub`, the ed25519 signing key) and `runs/<bottle id>.intoto.jsonl` (one DSSE-signed
//! in-toto statement per run; subjects are the workspace files the run added or changed).

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytebot_bottle::audit::EgressSummary;
use bytebot_bottle::ca::Ca;
use bytebot_bottle::policy::{self as bottle_policy, HostPattern, NetworkPolicy, ResolvedSecrets};
use bytebot_bottle::provenance::{self, workspace};
use bytebot_bottle::proxy::{EgressProxy, Listen, ProxyConfig, ProxyHandle};
use bytebot_bottle::sandbox::{
    Backend, Bwrap, Captured, Enforcement, Limits, Mechanism, ProxyLink, RunOutcome, SandboxError,
    SandboxSpec, Termination,
};
use tokio::sync::OnceCell;

use crate::intents::run::{self, RunError, RunSpec};

/// The bottle's folder inside the gateway's data folder.
pub const BOTTLE_DIR: &str = "bottle";
/// The egress audit file, in the bottle folder.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The provenance signing key, in the bottle folder (its public key is `<name>.pub`).
pub const KEY_FILE: &str = "signing.key";
/// The folder of provenance records, in the bottle folder.
pub const RUNS_DIR: &str = "runs";

/// What one run in the bottle produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The run's id (audit lines and the provenance record carry it).
    pub bottle_id: String,
    /// True when the run was cancelled and its sandbox killed.
    pub cancelled: bool,
    /// The exit code, if the program exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, if one did (9 after a timeout).
    pub signal: Option<i32>,
    /// True when the time limit passed and the sandbox was killed.
    pub timed_out: bool,
    /// True when an output stream went far past its cap and the run was killed for it.
    pub output_flood: bool,
    /// True when the memory limit killed a process (known only with a memory cgroup).
    pub oom_killed: bool,
    /// True when a fork failed on the process limit (known only with a pids cgroup).
    pub process_limit_hit: bool,
    /// Standard output, at most `max_output_bytes`.
    pub stdout: Vec<u8>,
    /// Standard error, at most `max_output_bytes`.
    pub stderr: Vec<u8>,
    /// True when stdout had more than was kept.
    pub stdout_truncated: bool,
    /// True when stderr had more than was kept.
    pub stderr_truncated: bool,
    /// Wall time of the sandbox, in milliseconds.
    pub duration_ms: u64,
    /// What the run did on the network, as the egress proxy saw it (empty without network).
    pub egress: EgressSummary,
    /// Limits the host could not enforce, or only weakly, and how to fix that.
    pub warnings: Vec<String>,
    /// The signed record of the run, or why it could not be written.
    pub provenance: Result<Provenance, String>,
}

/// A run's signed provenance record.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Where the record was written (`<data_dir>/bottle/runs/<id>.intoto.jsonl`).
    pub path: PathBuf,
    /// Its bytes (one DSSE envelope as a JSON line).
    pub record: Vec<u8>,
    /// The workspace files it lists as the run's output (added or changed), relative paths.
    pub subjects: Vec<String>,
}

/// The gateway's handle on the bottle: the sandbox backend (found and checked once), the init
/// to start inside it, and the folder of its CA, audit, key and records.
pub struct Bottle {
    dir: PathBuf,
    init: Vec<OsString>,
    backend: OnceCell<Bwrap>,
    ca: OnceCell<Arc<Ca>>,
}

impl Bottle {
    /// A bottle keeping its files in `dir` and starting `init` (program and leading arguments)
    /// in each sandbox. Nothing is checked or created until the first plan or run.
    pub fn new(init: Vec<OsString>, dir: PathBuf) -> Bottle {
        Bottle {
            dir,
            init,
            backend: OnceCell::new(),
            ca: OnceCell::new(),
        }
    }

    /// The bottle's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The egress audit file.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// The provenance signing key (its public key is [`provenance::public_key_path`] of it).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// The folder of provenance records.
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join(RUNS_DIR)
    }

    /// Whether runs can execute here: an init is configured and present, bubblewrap is
    /// installed and may create the namespaces (checked once, by running `true` in a minimal
    /// sandbox). The error says what is missing and how to fix it.
    pub async fn ready(&self) -> Result<&Bwrap, String> {
        let Some(program) = self.init.first() else {
            return Err(
                "run executes only in the bottle, and this gateway has no sandbox init \
                 configured (GatewayConfig::bottle_init; `bytebot` sets it to itself): nothing \
                 can run"
                    .to_string(),
            );
        };
        if !Path::new(program).is_file() {
            return Err(format!(
                "run executes only in the bottle, and its init {} does not exist; reinstall \
                 bytebot or point bottle_init at an existing program",
                Path::new(program).display()
            ));
        }
        self.backend
            .get_or_try_init(|| async {
                let bwrap = Bwrap::new().map_err(unavailable)?;
                bwrap.check().await.map_err(unavailable)?;
                Ok(bwrap)
            })
            .await
    }

    /// The installation's CA (made on first use).
    async fn ca(&self) -> Result<Arc<Ca>, String> {
        self.ca
            .get_or_try_init(|| async {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || Ca::load_or_create(&dir))
                    .await
                    .map_err(|e| format!("the CA task failed: {e}"))?
                    .map_err(|e| format!("cannot load or make the bottle's CA: {e}"))
            })
            .await
            .cloned()
    }

    /// Runs `spec` in a sandbox and records it. `bottle_id` names the run in audit lines and
    /// its record (letters, digits, `.`, `_`, `-`); `label` says where it came from. The spec
    /// is checked again first: the workspace may have changed since the plan. When `cancel`
    /// completes first, the sandbox is killed and the run still gets its record (it may have
    /// changed the workspace before it was stopped); the output then says `cancelled`.
    pub async fn run(
        &self,
        spec: &RunSpec,
        bottle_id: &str,
        label: &str,
        cancel: impl Future<Output = ()> + Send,
    ) -> Result<RunOutput, RunError> {
        let checked = run::check(spec)?;
        let backend = self.ready().await.map_err(RunError::Unavailable)?;
        let policy = policy_for(spec)?;

        let ws = checked.workspace.clone();
        let before = blocking(move || workspace::snapshot(&ws))
            .await
            .map_err(|e| {
                RunError::Sandbox(format!(
                    "cannot take the workspace's snapshot for the provenance record: {e}; nothing ran"
                ))
            })?;

        // The proxy's socket lives in a private folder (0700) that goes away with the run.
        let mut proxy: Option<(ProxyHandle, tempfile::TempDir)> = None;
        if !policy.network.allow.is_empty() {
            let folder = tempfile::Builder::new()
                .prefix("bytebot-bottle-")
                .tempdir()
                .map_err(|e| {
                    RunError::Sandbox(format!("cannot make a private folder for the proxy: {e}"))
                })?;
            let ca = self.ca().await.map_err(RunError::Sandbox)?;
            let handle = EgressProxy::start(ProxyConfig {
                bottle_id: bottle_id.to_string(),
                network: policy.network.clone(),
                secrets: ResolvedSecrets::none(),
                ca,
                audit_path: self.audit_path(),
                listen: Listen::Unix(folder.path().join("proxy.sock")),
                extra_upstream_roots: Vec::new(),
                resolve: HashMap::new(),
            })
            .await
            .map_err(|e| RunError::Sandbox(e.to_string()))?;
            proxy = Some((handle, folder));
        }

        let sandbox = SandboxSpec {
            argv: spec.argv.iter().map(OsString::from).collect(),
            workspace: checked.workspace.clone(),
            cwd: Some(checked.cwd.clone()),
            env: checked.env.clone().into_iter().collect(),
            proxy: proxy.as_ref().and_then(|(handle, _)| {
                handle.socket_path().map(|socket| ProxyLink {
                    socket: socket.to_path_buf(),
                    // Nothing is intercepted (no secrets), so the sandbox keeps the system's
                    // roots and never has to trust the bottle's CA.
                    ca_bundle: None,
                })
            }),
            read_only: Vec::new(),
            limits: Limits {
                wall: spec.timeout,
                memory_bytes: spec.memory_mb.saturating_mul(1024 * 1024),
                processes: spec.processes,
                output_bytes: spec.max_output_bytes,
            },
            init: self.init.clone(),
        };
        tracing::debug!(bottle_id, argv = ?spec.argv, cwd = %checked.cwd.display(), "run: starting in the bottle");
        let started = (SystemTime::now(), Instant::now());
        let mut cancelled = false;
        let outcome = tokio::select! {
            outcome = backend.run(&sandbox) => outcome,
            () = cancel => {
                // Dropping the backend's future killed bwrap and with it the sandbox (and its
                // cgroup); what is left to say is when.
                cancelled = true;
                Ok(killed(started))
            }
        };
        let egress = match proxy {
            Some((handle, _folder)) => handle.shutdown().await,
            None => EgressSummary::default(),
        };
        let outcome = outcome.map_err(|e| match e {
            SandboxError::BwrapMissing | SandboxError::UserNamespaces { .. } => {
                RunError::Unavailable(unavailable(e))
            }
            other => RunError::Sandbox(other.to_string()),
        })?;

        let predicate = predicate(spec, bottle_id, label, backend, &policy, &outcome, &egress);
        let provenance = self.record(predicate, &checked.workspace, before).await;
        if let Err(e) = &provenance {
            tracing::error!(bottle_id, error = %e, "run: no provenance record");
        }
        Ok(RunOutput {
            bottle_id: bottle_id.to_string(),
            cancelled,
            exit_code: exit_code(outcome.status),
            signal: signal(outcome.status),
            timed_out: outcome.timed_out,
            output_flood: outcome.output_flood,
            oom_killed: outcome.oom_killed,
            process_limit_hit: outcome.process_limit_hit,
            stdout_truncated: outcome.stdout.truncated,
            stderr_truncated: outcome.stderr.truncated,
            stdout: outcome.stdout.bytes,
            stderr: outcome.stderr.bytes,
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            egress,
            warnings: outcome.enforcement.warnings,
            provenance,
        })
    }

    /// Writes the run's signed record: `predicate` completed with the workspace after the run
    /// against `before`, and the files the run added or changed as its subjects.
    async fn record(
        &self,
        predicate: provenance::BottleRun,
        ws: &Path,
        before: workspace::Snapshot,
    ) -> Result<Provenance, String> {
        let (ws, key_path, runs) = (ws.to_path_buf(), self.key_path(), self.runs_dir());
        blocking(move || {
            let after = workspace::snapshot(&ws)
                .map_err(|e| format!("cannot take the workspace's snapshot after the run: {e}"))?;
            let diff = workspace::diff(&before, &after);
            let id = predicate.bottle_id.clone();
            let mut predicate = predicate;
            predicate.workspace = provenance::WorkspaceRecord::new(&before, &after, &diff);
            let subjects = provenance::subjects(&diff);
            let names = subjects.iter().map(|s| s.name.clone()).collect();
            let statement = provenance::Statement::new(subjects, predicate);
            let key = provenance::SigningKey::load_or_create(&key_path)
                .map_err(|e| format!("cannot load or make the provenance signing key: {e}"))?;
            let envelope = provenance::sign(&statement, &key)
                .map_err(|e| format!("cannot sign the provenance record: {e}"))?;
            let record = envelope
                .to_json_line()
                .map_err(|e| format!("cannot encode the provenance record: {e}"))?
                .into_bytes();
            let path = envelope
                .write(&runs, &id)
                .map_err(|e| format!("cannot write the provenance record: {e}"))?;
            Ok::<_, String>(Provenance {
                path,
                record,
                subjects: names,
            })
        })
        .await
    }
}

/// What a record says about a run, but for the workspace (`Bottle::record` fills that in).
fn predicate(
    spec: &RunSpec,
    bottle_id: &str,
    label: &str,
    backend: &Bwrap,
    policy: &bottle_policy::Policy,
    outcome: &RunOutcome,
    egress: &EgressSummary,
) -> provenance::BottleRun {
    provenance::BottleRun {
        producer: provenance::PRODUCER.to_string(),
        bottle_id: bottle_id.to_string(),
        label: Some(label.to_string()),
        backend: backend.name().to_string(),
        argv: spec.argv.clone(),
        policy_sha256: policy.digest().trim_start_matches("sha256:").to_string(),
        workspace: provenance::WorkspaceRecord::default(),
        started_at: outcome.started.into(),
        ended_at: outcome.ended.into(),
        outcome: provenance::Outcome {
            exit_code: exit_code(outcome.status),
            signal: signal(outcome.status),
            timed_out: outcome.timed_out,
            output_truncated: outcome.stdout.truncated || outcome.stderr.truncated,
        },
        egress: egress.clone(),
    }
}

/// The outcome of a sandbox killed on cancel: SIGKILL, no output kept.
fn killed((started, t0): (SystemTime, Instant)) -> RunOutcome {
    RunOutcome {
        status: Termination::Signaled(libc::SIGKILL),
        stdout: Captured::default(),
        stderr: Captured::default(),
        timed_out: false,
        output_flood: false,
        oom_killed: false,
        process_limit_hit: false,
        started,
        ended: SystemTime::now(),
        duration: t0.elapsed(),
        startup: None,
        enforcement: Enforcement {
            processes: Mechanism::None,
            memory: Mechanism::None,
            warnings: Vec::new(),
        },
    }
}

fn exit_code(status: Termination) -> Option<i32> {
    match status {
        Termination::Exited(code) => Some(code),
        Termination::Signaled(_) => None,
    }
}

fn signal(status: Termination) -> Option<i32> {
    match status {
        Termination::Signaled(sig) => Some(sig),
        Termination::Exited(_) => None,
    }
}

/// The bottle policy of one run: its network rules and limits, nothing else (the gateway's
/// policy holds no secrets, no extra environment, no extra read-only paths).
fn policy_for(spec: &RunSpec) -> Result<bottle_policy::Policy, RunError> {
    let patterns = |list: &[String]| {
        list.iter()
            .map(|text| {
                HostPattern::parse(text).map_err(|reason| {
                    RunError::Sandbox(format!(
                        "the plan's network rule {text:?} is not usable: {reason}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let policy = bottle_policy::Policy {
        network: NetworkPolicy {
            allow: patterns(&spec.network.allow)?,
            deny: Vec::new(),
            allow_private: patterns(&spec.network.private)?,
        },
        limits: bottle_policy::Limits {
            wall_s: spec.timeout.as_secs().max(1),
            memory_mb: spec.memory_mb,
            processes: u64::from(spec.processes),
            output_bytes: u64::try_from(spec.max_output_bytes).unwrap_or(u64::MAX),
        },
        ..Default::default()
    };
    policy
        .validate("the run's policy")
        .map_err(|e| RunError::Sandbox(e.to_string()))?;
    Ok(policy)
}

/// The message for a host that cannot run sandboxes.
fn unavailable(e: SandboxError) -> String {
    format!("run executes only in the bottle, and the bottle cannot start on this host: {e}")
}

/// Runs blocking file work (snapshots, signing) off the async threads.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("a blocking task failed: {e}")),
    }
}
