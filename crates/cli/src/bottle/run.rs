//! `bytebot bottle run`: policy → secrets → keys and CA → egress proxy → workspace snapshot →
//! the sandboxed command → provenance → summary.
//!
//! Everything that can be refused (policy, workspace, bwrap, secrets, keys, CA) is checked
//! before the command starts. Once it has started, the run is recorded whatever happens,
//! including Ctrl+C: the sandbox is stopped, the proxy flushes its audit lines and the signed
//! record says which signal ended it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use bytebot_bottle::audit::EgressSummary;
use bytebot_bottle::ca::Ca;
use bytebot_bottle::policy::{PROFILES, Policy, PolicyError, ResolvedSecrets};
use bytebot_bottle::provenance::{self as prov, BottleRun, Outcome, SigningKey, workspace};
use bytebot_bottle::proxy::{EgressProxy, Listen, ProxyConfig};
use bytebot_bottle::sandbox::{
    Bwrap, Captured, Limits, ProxyLink, RunOutcome, SandboxSpec, Termination,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::{BottlePaths, RunArgs, SETUP_FAILURE, init_argv};
use crate::config::Config;

/// Signals that stop a run (Linux numbers, as recorded in the provenance).
const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Longest path a unix socket may have (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Runs `bytebot bottle run`; returns the exit code.
pub(super) fn main(config: &Config, args: RunArgs) -> i32 {
    match run(config, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bottle: {e:#}");
            SETUP_FAILURE
        }
    }
}

/// What the bottle holds ready before the command starts.
struct Prepared {
    policy: Policy,
    workspace: PathBuf,
    backend: Bwrap,
    secrets: ResolvedSecrets,
    key: SigningKey,
    ca: Option<Arc<Ca>>,
    paths: BottlePaths,
    resolve: HashMap<String, SocketAddr>,
    extra_roots: Vec<String>,
    run_dir: tempfile::TempDir,
    bottle_id: String,
    init: Vec<OsString>,
}

fn run(config: &Config, args: RunArgs) -> Result<i32> {
    let t0 = Instant::now();
    let prepared = prepare(config, &args)?;
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "bottle: prepared");
    let before = workspace::snapshot(&prepared.workspace).with_context(|| {
        format!(
            "cannot take the workspace snapshot of {} (the provenance's \"before\")",
            prepared.workspace.display()
        )
    })?;
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "bottle: workspace snapshot taken"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_prepared(prepared, args, before))
}

fn prepare(config: &Config, args: &RunArgs) -> Result<Prepared> {
    let policy = load_policy(&args.policy)?;
    let asked = match &args.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let workspace = std::fs::canonicalize(&asked)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| {
            anyhow!(
                "workspace {} does not exist or is not a directory: create it, or pass --workspace DIR",
                asked.display()
            )
        })?;
    let backend = Bwrap::new()?;
    let resolve = parse_resolve(&args.dev_resolve)?;
    let extra_roots = args
        .dev_upstream_roots
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("--dev-upstream-root: cannot read {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let secrets = ResolvedSecrets::resolve(&policy).context("the policy's secrets")?;
    for name in secrets.skipped() {
        tracing::info!(
            secret = %name,
            "optional secret skipped: its source is not set, so the sandbox gets no {name}"
        );
    }

    let paths = BottlePaths::new(&config.data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.dir)
        .with_context(|| format!("cannot create {}", paths.dir.display()))?;
    let key = SigningKey::load_or_create(&paths.signing_key)?;
    let ca = if policy.network.allow.is_empty() {
        None
    } else {
        Some(Ca::load_or_create(&paths.dir)?)
    };
    let run_dir = private_run_dir()?;
    let init = init_argv().context("cannot find the bytebot executable (the sandbox's init)")?;
    Ok(Prepared {
        policy,
        workspace,
        backend,
        secrets,
        key,
        ca,
        paths,
        resolve,
        extra_roots,
        run_dir,
        bottle_id: uuid::Uuid::now_v7().to_string(),
        init,
    })
}

/// A file path or a built-in profile name; profile names win (`./default` names a file).
fn load_policy(spec: &str) -> Result<Policy> {
    if PROFILES.contains(&spec) {
        return Ok(Policy::profile(spec)?);
    }
    Policy::load(Path::new(spec)).map_err(|e| match e {
        PolicyError::Read { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow!(
                "{e}\n--policy takes a policy file or a built-in profile ({})",
                PROFILES.join(", ")
            )
        }
        other => anyhow!("bad policy: {other}"),
    })
}

fn parse_resolve(entries: &[String]) -> Result<HashMap<String, SocketAddr>> {
    entries
        .iter()
        .map(|entry| {
            let (host, addr) = entry
                .split_once('=')
                .ok_or_else(|| anyhow!("--dev-resolve {entry:?}: write HOST=IP:PORT"))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| anyhow!("--dev-resolve {entry:?}: {addr:?} is not IP:PORT ({e})"))?;
            Ok((host.to_owned(), addr))
        })
        .collect()
}

/// A fresh 0700 folder for the proxy socket and the CA bundle: in `$XDG_RUNTIME_DIR` (private
/// to the user, memory-backed) when there is one, else in the temp folder. Removed on drop.
fn private_run_dir() -> Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("bytebot-bottle-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a private run folder in {}", base.display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.path().display()))?;
    let socket_len = dir.path().join("proxy.sock").as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        bail!(
            "the run folder {} is too deep for a unix socket ({socket_len} bytes, at most \
             {MAX_SOCKET_PATH}); set TMPDIR (or XDG_RUNTIME_DIR) to a shorter folder",
            dir.path().display()
        );
    }
    Ok(dir)
}

/// How the sandbox run ended, from the host's side.
enum Ended {
    Ran(RunOutcome),
    /// We were asked to stop (this signal) and stopped the sandbox.
    Interrupted(i32),
}

async fn run_prepared(p: Prepared, args: RunArgs, before: workspace::Snapshot) -> Result<i32> {
    let (proxy, link) = match &p.ca {
        Some(ca) => {
            let socket = p.run_dir.path().join("proxy.sock");
            let bundle = p.run_dir.path().join("ca-bundle.pem");
            ca.write_bundle(&bundle)?;
            let handle = EgressProxy::start(ProxyConfig {
                bottle_id: p.bottle_id.clone(),
                network: p.policy.network.clone(),
                secrets: p.secrets.clone(),
                ca: Arc::clone(ca),
                audit_path: p.paths.audit.clone(),
                listen: Listen::Unix(socket.clone()),
                extra_upstream_roots: p.extra_roots.clone(),
                resolve: p.resolve.clone(),
            })
            .await?;
            let link = ProxyLink {
                socket,
                ca_bundle: Some(bundle),
            };
            (Some(handle), Some(link))
        }
        None => (None, None),
    };

    let spec = SandboxSpec {
        argv: args.command.clone(),
        workspace: p.workspace.clone(),
        cwd: None,
        env: sandbox_env(&p.policy, &p.secrets),
        proxy: link,
        read_only: p.policy.filesystem.read_only.clone(),
        limits: limits(&p.policy),
        init: p.init.clone(),
    };

    let watch = |kind: i32| signal(SignalKind::from_raw(kind)).context("cannot watch for Ctrl+C");
    let (mut sigint, mut sigterm, mut sighup) = (watch(SIGINT)?, watch(SIGTERM)?, watch(SIGHUP)?);
    let started = SystemTime::now();
    let t0 = Instant::now();
    let ended = tokio::select! {
        r = p.backend.run_spec(&spec) => match r {
            Ok(outcome) => Ended::Ran(outcome),
            Err(e) => {
                if let Some(proxy) = proxy {
                    proxy.shutdown().await;
                }
                return Err(e.into());
            }
        },
        _ = sigint.recv() => Ended::Interrupted(SIGINT),
        _ = sigterm.recv() => Ended::Interrupted(SIGTERM),
        _ = sighup.recv() => Ended::Interrupted(SIGHUP),
    };
    // The sandbox is gone either way: a dropped run kills bwrap, and with it the sandbox.
    let wall = t0.elapsed();
    tracing::debug!(ms = wall.as_secs_f64() * 1e3, "bottle: sandbox ended");

    let (outcome, started, ended_at, duration) = match &ended {
        Ended::Ran(o) => {
            pass_output(o);
            let outcome = Outcome {
                exit_code: match o.status {
                    Termination::Exited(c) => Some(c),
                    Termination::Signaled(_) => None,
                },
                signal: match o.status {
                    Termination::Signaled(s) => Some(s),
                    Termination::Exited(_) => None,
                },
                timed_out: o.timed_out,
                output_truncated: outcome_truncated(o),
            };
            (outcome, o.started, o.ended, o.duration)
        }
        Ended::Interrupted(sig) => {
            eprintln!("bottle: stopped by signal {sig}; the sandbox was killed");
            let outcome = Outcome {
                exit_code: None,
                signal: Some(*sig),
                ..Outcome::default()
            };
            (outcome, started, SystemTime::now(), wall)
        }
    };
    let exit_code = match &ended {
        Ended::Ran(o) => o.exit_code(),
        Ended::Interrupted(sig) => 128 + sig,
    };

    let egress = match proxy {
        Some(proxy) => proxy.shutdown().await,
        None => EgressSummary::default(),
    };
    let record = record(
        &p,
        &args,
        &before,
        outcome.clone(),
        started,
        ended_at,
        egress.clone(),
    )
    .await
    .with_context(|| {
        format!("the command ended (exit {exit_code}) but its provenance could not be written")
    })?;

    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "bottle: run recorded"
    );
    let summary = Summary {
        bottle_id: &p.bottle_id,
        exit_code,
        signal: outcome.signal,
        timed_out: outcome.timed_out,
        interrupted: matches!(ended, Ended::Interrupted(_)),
        output_truncated: outcome.output_truncated,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        hosts: &egress.hosts,
        denied: egress.denied.iter().map(|d| d.count).sum(),
        denied_hosts: &egress.denied,
        secrets_used: &egress.secrets_used,
        provenance: &record,
        audit: p.ca.is_some().then_some(p.paths.audit.as_path()),
    };
    summary.print(args.json);
    Ok(exit_code)
}

/// Snapshots the workspace again and writes the signed record; returns its path.
async fn record(
    p: &Prepared,
    args: &RunArgs,
    before: &workspace::Snapshot,
    outcome: Outcome,
    started: SystemTime,
    ended: SystemTime,
    egress: EgressSummary,
) -> Result<PathBuf> {
    let ws = p.workspace.clone();
    let after = tokio::task::spawn_blocking(move || workspace::snapshot(&ws))
        .await
        .context("the snapshot task failed")?
        .context("cannot take the workspace snapshot after the run")?;
    let diff = workspace::diff(before, &after);
    let digest = p.policy.digest();
    let predicate = BottleRun {
        producer: prov::PRODUCER.to_owned(),
        bottle_id: p.bottle_id.clone(),
        label: args.label.clone(),
        backend: "bwrap".to_owned(),
        argv: args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        policy_sha256: digest.strip_prefix("sha256:").unwrap_or(&digest).to_owned(),
        workspace: prov::WorkspaceRecord::new(before, &after, &diff),
        started_at: DateTime::<Utc>::from(started),
        ended_at: DateTime::<Utc>::from(ended),
        outcome,
        egress,
    };
    let statement = prov::Statement::new(prov::subjects(&diff), predicate);
    Ok(prov::sign(&statement, &p.key)?.write(&p.paths.runs, &p.bottle_id)?)
}

/// The sandbox's environment: the policy's passed-through variables (when set on the host),
/// its fixed ones, and each secret's placeholder under the secret's name.
fn sandbox_env(policy: &Policy, secrets: &ResolvedSecrets) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for name in &policy.env.pass {
        match std::env::var(name) {
            Ok(value) => env.push((name.clone(), value)),
            Err(std::env::VarError::NotUnicode(_)) => {
                tracing::warn!(variable = %name, "not passed into the bottle: its value is not UTF-8");
            }
            Err(std::env::VarError::NotPresent) => {}
        }
    }
    env.extend(policy.env.set.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(secrets.env_pairs());
    env
}

/// The sandbox's limits from the policy's. The policy's `output_bytes` caps each stream.
fn limits(policy: &Policy) -> Limits {
    let l = policy.limits;
    Limits {
        wall: Duration::from_secs(l.wall_s),
        memory_bytes: l.memory_mb.saturating_mul(1 << 20),
        processes: u32::try_from(l.processes).unwrap_or(u32::MAX),
        output_bytes: usize::try_from(l.output_bytes).unwrap_or(usize::MAX),
    }
}

/// Hands the command's output to ours, and says so when some of it was cut.
fn pass_output(o: &RunOutcome) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) must not stop the run from being recorded.
    let _ = out.write_all(&o.stdout.bytes).and_then(|()| out.flush());
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(&o.stderr.bytes);
    for (name, c) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        note_truncated(&mut err, name, c);
    }
    if o.output_flood {
        let _ = writeln!(
            err,
            "bottle: the command flooded its output and was stopped"
        );
    }
    if o.timed_out {
        let _ = writeln!(
            err,
            "bottle: the command ran past the wall-time limit (limits.wall_s) and was stopped"
        );
    }
    if o.oom_killed {
        let _ = writeln!(
            err,
            "bottle: a process ran out of memory (limits.memory_mb) and was killed"
        );
    }
    if o.process_limit_hit {
        let _ = writeln!(
            err,
            "bottle: the command hit the process limit (limits.processes)"
        );
    }
}

fn note_truncated(err: &mut impl std::io::Write, name: &str, c: &Captured) {
    if c.truncated {
        let _ = writeln!(
            err,
            "bottle: {name} was cut at {} bytes of {} (limits.output_bytes)",
            c.bytes.len(),
            c.total
        );
    }
}

fn outcome_truncated(o: &RunOutcome) -> bool {
    o.stdout.truncated || o.stderr.truncated || o.output_flood
}

/// The closing line on stderr.
#[derive(Serialize)]
struct Summary<'a> {
    bottle_id: &'a str,
    exit_code: i32,
    signal: Option<i32>,
    timed_out: bool,
    interrupted: bool,
    output_truncated: bool,
    duration_ms: u64,
    hosts: &'a [bytebot_bottle::audit::HostTraffic],
    denied: u64,
    denied_hosts: &'a [bytebot_bottle::audit::DeniedAttempts],
    secrets_used: &'a [String],
    provenance: &'a Path,
    audit: Option<&'a Path>,
}

impl Summary<'_> {
    fn print(&self, json: bool) {
        let line = if json {
            serde_json::to_string(self).unwrap_or_default()
        } else {
            self.text()
        };
        eprintln!("{line}");
    }

    fn text(&self) -> String {
        let mut ended = match self.signal {
            Some(sig) => format!("killed by signal {sig} (exit {})", self.exit_code),
            None => format!("exit {}", self.exit_code),
        };
        if self.timed_out {
            ended.push_str(", timed out");
        }
        if self.interrupted {
            ended.push_str(", interrupted");
        }
        let hosts = if self.hosts.is_empty() {
            "none".to_owned()
        } else {
            self.hosts
                .iter()
                .map(|h| format!("{}:{}", h.host, h.port))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut line = format!(
            "bottle {}: {ended} in {:.2} s; hosts: {hosts}; denied: {}",
            self.bottle_id,
            self.duration_ms as f64 / 1000.0,
            self.denied
        );
        if !self.secrets_used.is_empty() {
            line.push_str(&format!("; secrets used: {}", self.secrets_used.join(",")));
        }
        line.push_str(&format!("; provenance: {}", self.provenance.display()));
        line
    }
}
