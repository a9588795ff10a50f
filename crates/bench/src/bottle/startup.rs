//! Start time: from spawning to the command's first instruction. The command is the clock
//! probe (`bytebot-bench-clock`), which prints CLOCK_MONOTONIC first thing in `main`; the
//! bench stamps the same clock just before it spawns (or, for our backend, just before it
//! calls `run_spec`, so the host-side setup counts too). Variants are interleaved, one start
//! of each in turn, so machine noise falls on all of them alike.

use super::{Options, Quantiles, sibling};
use anyhow::{Context, Result, bail, ensure};
use bytebot_bottle::ca::Ca;
use bytebot_bottle::policy::{NetworkPolicy, ResolvedSecrets};
use bytebot_bottle::proxy::{EgressProxy, Listen, ProxyConfig};
use bytebot_bottle::sandbox::{Bwrap, Limits, ProxyLink, SandboxSpec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Warm-up starts of each variant, not counted.
const WARMUP: usize = 3;

/// One variant's figures.
pub(super) struct StartRow {
    pub(super) variant: Variant,
    /// Spawn → the probe's first instruction in `main`.
    pub(super) first: Quantiles,
    /// Spawn → the run returned (the probe exited, everything cleaned up).
    pub(super) whole: Quantiles,
    /// Ours only: bwrap's spawn → the init saw the command exec'd (the init's own report).
    pub(super) init_report: Option<Quantiles>,
}

/// Every variant, plus what ran.
pub(super) struct Startup {
    pub(super) rows: Vec<StartRow>,
    /// The init program and its leading arguments.
    pub(super) init: String,
    /// Why `bytebot __bottle-init` was not measured, when it was not.
    pub(super) cli_init_missing: Option<String>,
    /// `bwrap --version`.
    pub(super) bwrap_version: String,
}

/// What one row starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// The probe without a sandbox.
    Probe,
    /// Bare bwrap around the probe.
    Bare,
    /// Our backend, no proxy.
    Ours,
    /// Our backend with the bridge to a running proxy.
    Bridge,
    /// The same with the `bytebot` binary as the init, as `bytebot bottle run` does it.
    CliInit,
    /// A proxy started for the run, then the bottle with the bridge.
    FreshProxy,
}

impl Variant {
    pub(super) fn label(self) -> &'static str {
        match self {
            Variant::Probe => "the probe alone, no sandbox (exec, loader, Rust start-up)",
            Variant::Bare => "bare `bwrap --ro-bind / / --unshare-all --die-with-parent PROBE`",
            Variant::Ours => {
                "bottle, bwrap backend, no proxy: namespaces, read-only system, fresh /tmp /proc /dev, cgroup limits, our init as pid 1, seccomp, rlimits"
            }
            Variant::Bridge => {
                "bottle with the proxy bridge: the same, plus the proxy socket bound in, the CA bundle, and the init listening on 127.0.0.1:3128 first"
            }
            Variant::CliInit => {
                "the same with `bytebot __bottle-init` as the init (the whole CLI binary, as `bytebot bottle run` starts it)"
            }
            Variant::FreshProxy => {
                "bottle with the bridge, its egress proxy started for the run first (CA loaded, unix socket bound)"
            }
        }
    }
}

#[derive(Default)]
struct Samples {
    first: Vec<f64>,
    whole: Vec<f64>,
    init: Vec<f64>,
}

/// CLOCK_MONOTONIC in nanoseconds, the clock the probe prints.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only fills the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds from `t0` to the stamp the probe printed.
fn first_ms(stdout: &[u8], t0: u64) -> Result<f64> {
    let text = String::from_utf8_lossy(stdout);
    let ns: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("the probe printed {text:?}, not a CLOCK_MONOTONIC stamp"))?;
    ensure!(
        ns >= t0,
        "the probe's clock ({ns}) is before the spawn ({t0}): the sandbox does not share CLOCK_MONOTONIC"
    );
    Ok((ns - t0) as f64 / 1e6)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The probe and the init, as the options or the build put them.
fn programs(opts: &Options) -> Result<(PathBuf, Vec<OsString>)> {
    let probe = match &opts.clock {
        Some(p) => p.clone(),
        None => sibling("bytebot-bench-clock").context("cannot locate this executable")?,
    };
    ensure!(
        probe.is_file(),
        "the clock probe {} does not exist; build it: cargo build --release -p bytebot-bench",
        probe.display()
    );
    let init: Vec<OsString> = if opts.init.is_empty() {
        vec![
            sibling("bytebot-bottle-init")
                .context("cannot locate this executable")?
                .into(),
        ]
    } else {
        opts.init.clone()
    };
    let program = Path::new(&init[0]);
    ensure!(
        program.is_file(),
        "the sandbox init {} does not exist; build it: cargo build --release -p bytebot-bottle \
         (or pass --bottle-init target/release/bytebot __bottle-init)",
        program.display()
    );
    Ok((probe, init))
}

/// Measures every variant `opts.iterations` times; `bytebot` is the CLI binary whose
/// `__bottle-init` is measured too when it has one.
pub(super) fn measure(opts: &Options, bytebot: &Path) -> Result<Startup> {
    let (probe, init) = programs(opts)?;
    let bwrap = Bwrap::new()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bwrap.check())?;
    let bwrap_version = Command::new(bwrap.program())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    let dir = tempfile::tempdir()?;
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace)?;
    // The sandbox sees only the system and its workspace, so the probe goes there.
    std::fs::copy(&probe, workspace.join("bytebot-bench-clock"))
        .with_context(|| format!("copying {} into the workspace", probe.display()))?;
    let ca_dir = dir.path().join("ca");
    let ca = Ca::load_or_create(&ca_dir)?;
    let bundle = dir.path().join("ca-bundle.pem");
    ca.write_bundle(&bundle)?;
    let proxy_config = |ca: Arc<Ca>, socket: PathBuf| ProxyConfig {
        bottle_id: "bytebot-bench-start".to_owned(),
        network: NetworkPolicy::default(),
        secrets: ResolvedSecrets::none(),
        ca,
        audit_path: dir.path().join("audit.jsonl"),
        listen: Listen::Unix(socket),
        extra_upstream_roots: Vec::new(),
        resolve: Default::default(),
    };
    let shared_socket = dir.path().join("proxy.sock");
    let shared = rt.block_on(EgressProxy::start(proxy_config(
        Arc::clone(&ca),
        shared_socket.clone(),
    )))?;
    let spec = |proxy: Option<PathBuf>| SandboxSpec {
        argv: vec!["/workspace/bytebot-bench-clock".into()],
        workspace: workspace.clone(),
        cwd: None,
        env: vec![("LANG".into(), "C.UTF-8".into())],
        proxy: proxy.map(|socket| ProxyLink {
            socket,
            ca_bundle: Some(bundle.clone()),
        }),
        read_only: Vec::new(),
        limits: Limits::default(),
        init: init.clone(),
    };
    let plain_spec = spec(None);
    let bridge_spec = spec(Some(shared_socket.clone()));
    let cli_spec = SandboxSpec {
        init: vec![bytebot.into(), "__bottle-init".into()],
        ..spec(Some(shared_socket))
    };
    // The CLI binary may be older than its `__bottle-init`: try it once before counting on it.
    let cli_init_missing = match rt.block_on(bwrap.run_spec(&cli_spec)) {
        Ok(o) if o.success() => None,
        Ok(o) => Some(format!(
            "`{} __bottle-init` ended the probe with {:?}: {}",
            bytebot.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr.bytes).trim()
        )),
        Err(e) => Some(format!("`{} __bottle-init`: {e}", bytebot.display())),
    };
    let variants: Vec<Variant> = [
        Variant::Probe,
        Variant::Bare,
        Variant::Ours,
        Variant::Bridge,
        Variant::CliInit,
        Variant::FreshProxy,
    ]
    .into_iter()
    .filter(|v| *v != Variant::CliInit || cli_init_missing.is_none())
    .collect();

    let one = |v: Variant, i: usize, s: &mut Samples| -> Result<()> {
        match v {
            Variant::Probe | Variant::Bare => {
                let mut cmd = if v == Variant::Probe {
                    Command::new(&probe)
                } else {
                    let mut c = Command::new(bwrap.program());
                    c.args(["--ro-bind", "/", "/", "--unshare-all", "--die-with-parent"])
                        .arg(&probe);
                    c
                };
                cmd.stdin(Stdio::null()).stderr(Stdio::piped());
                let started = Instant::now();
                let t0 = monotonic_ns();
                let out = cmd.output()?;
                let whole = started.elapsed();
                ensure!(
                    out.status.success(),
                    "{} exited with {}: {}",
                    v.label(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                s.first.push(first_ms(&out.stdout, t0)?);
                s.whole.push(ms(whole));
            }
            Variant::Ours | Variant::Bridge | Variant::CliInit | Variant::FreshProxy => {
                let started = Instant::now();
                let t0 = monotonic_ns();
                let (outcome, fresh) = if v == Variant::FreshProxy {
                    let socket = dir.path().join(format!("run-{i}.sock"));
                    let (outcome, proxy) = rt.block_on(async {
                        let ca = Ca::load_or_create(&ca_dir)?;
                        let proxy = EgressProxy::start(proxy_config(ca, socket.clone())).await?;
                        let outcome = bwrap.run_spec(&spec(Some(socket))).await;
                        Ok::<_, anyhow::Error>((outcome, proxy))
                    })?;
                    (outcome, Some(proxy))
                } else {
                    let s = match v {
                        Variant::Ours => &plain_spec,
                        Variant::CliInit => &cli_spec,
                        _ => &bridge_spec,
                    };
                    (rt.block_on(bwrap.run_spec(s)), None)
                };
                let whole = started.elapsed();
                if let Some(proxy) = fresh {
                    rt.block_on(proxy.shutdown());
                }
                let o = outcome?;
                if !o.success() {
                    bail!(
                        "{}: the probe ended with {:?}: {}",
                        v.label(),
                        o.status,
                        String::from_utf8_lossy(&o.stderr.bytes).trim()
                    );
                }
                s.first.push(first_ms(&o.stdout.bytes, t0)?);
                s.whole.push(ms(whole));
                if let Some(d) = o.startup {
                    s.init.push(ms(d));
                }
            }
        }
        Ok(())
    };

    let mut samples: Vec<Samples> = variants.iter().map(|_| Samples::default()).collect();
    let mut scratch = Samples::default();
    for i in 0..WARMUP + opts.iterations.max(1) {
        for (k, v) in variants.iter().enumerate() {
            let into = if i < WARMUP {
                &mut scratch
            } else {
                &mut samples[k]
            };
            one(*v, i, into)?;
        }
    }
    rt.block_on(shared.shutdown());

    let rows = variants
        .iter()
        .zip(samples)
        .map(|(v, s)| StartRow {
            variant: *v,
            first: Quantiles::of(s.first),
            whole: Quantiles::of(s.whole),
            init_report: (!s.init.is_empty()).then(|| Quantiles::of(s.init)),
        })
        .collect();
    Ok(Startup {
        rows,
        init: init
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        cli_init_missing,
        bwrap_version,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_the_probe_stamp() {
        let t0 = 1_000_000_000;
        assert_eq!(first_ms(b"1002500000\n", t0).unwrap(), 2.5);
        assert!(first_ms(b"999\n", t0).is_err());
        assert!(first_ms(b"", t0).is_err());
    }
}
