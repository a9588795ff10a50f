//! The bubblewrap backend: builds bwrap's arguments from a `SandboxSpec`, starts it in a
//! per-run cgroup, captures its output, enforces the wall limit and reads the init's report.
//!
//! bwrap itself starts with an empty environment and gets its options through a pipe
//! (`--args`), so neither the host's environment nor its paths show in any process list. Our
//! init is the sandbox's pid 1 (`--as-pid-1`, no bwrap process inside) and is non-dumpable, so
//! nothing inside can read its environment or read or write its memory through /proc.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, OnceCell, watch};

use super::limits::{self, RunCgroup};
use super::output;
use super::{
    Backend, BoxFuture, CA_BUNDLE_PATH, Captured, DEFAULT_PATH, HOME_PATH, INIT_PATH,
    PROXY_SOCKET_PATH, RunOutcome, SandboxError, SandboxSpec, Termination, WORKSPACE_PATH,
};

/// Host files copied into the sandbox's /etc when present: a copy on the sandbox's root
/// tmpfs is cheaper than a mount each, and nothing else of /etc comes along.
const ETC_COPIES: &[&str] = &[
    "ld.so.cache",
    "localtime",
    "timezone",
    "protocols",
    "services",
    "os-release",
    "debian_version",
    "ssl/openssl.cnf",
    "pki/tls/openssl.cnf",
];

/// Host directories of /etc bound read-only when present: trust stores only. Never all of
/// /etc/ssl or /etc/pki, whose `private/` directories hold host TLS keys.
const ETC_BINDS: &[&str] = &[
    "ssl/certs",
    "pki/tls/certs",
    "pki/ca-trust",
    "crypto-policies",
];

/// Top-level system directories: bound read-only, or recreated as the same symlink when the
/// host has merged /usr (Debian 12: /bin -> usr/bin).
const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// How long to keep reading output after the sandbox has exited (only a leaked fd holder
/// could keep a pipe open that long).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The bubblewrap backend.
#[derive(Debug, Clone)]
pub struct Bwrap {
    program: PathBuf,
}

/// Options the installed bwrap supports (read once from `bwrap --help`).
#[derive(Debug, Clone, Copy, Default)]
struct Features {
    size: bool,
    perms: bool,
    disable_userns: bool,
}

impl Bwrap {
    /// Finds `bwrap` in `PATH`.
    pub fn new() -> Result<Self, SandboxError> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|dir| dir.join("bwrap"))
            .find(|p| p.is_file())
            .map(|program| Self { program })
            .ok_or(SandboxError::BwrapMissing)
    }

    /// Uses this bwrap executable.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// The bwrap executable in use.
    pub fn program(&self) -> &Path {
        &self.program
    }

    async fn features(&self) -> Features {
        static FEATURES: OnceCell<Features> = OnceCell::const_new();
        *FEATURES
            .get_or_init(|| async {
                let out = tokio::process::Command::new(&self.program)
                    .arg("--help")
                    .env_clear()
                    .stdin(Stdio::null())
                    .output()
                    .await;
                let text = out
                    .map(|o| {
                        let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                        t.push_str(&String::from_utf8_lossy(&o.stderr));
                        t
                    })
                    .unwrap_or_default();
                Features {
                    size: text.contains("--size"),
                    perms: text.contains("--perms"),
                    disable_userns: text.contains("--disable-userns"),
                }
            })
            .await
    }

    /// Checks that bwrap runs and may create the namespaces, with a minimal sandbox running
    /// `true`. Returns the error a real run would give.
    pub async fn check(&self) -> Result<(), SandboxError> {
        if !self.program.is_file() {
            return Err(SandboxError::BwrapMissing);
        }
        let mut args: Vec<OsString> = ["--unshare-all", "--unshare-user", "--die-with-parent"]
            .iter()
            .map(OsString::from)
            .collect();
        push_system(&mut args);
        for a in ["--proc", "/proc", "--dev", "/dev", "--", "true"] {
            args.push(a.into());
        }
        let out = tokio::process::Command::new(&self.program)
            .args(&args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| spawn_error(&self.program, e))?;
        if out.status.success() {
            return Ok(());
        }
        Err(setup_error(
            &String::from_utf8_lossy(&out.stderr),
            out.status.code(),
        ))
    }

    /// Runs `spec` in a bubblewrap sandbox.
    pub async fn run_spec(&self, spec: &SandboxSpec) -> Result<RunOutcome, SandboxError> {
        let prepared = Prepared::new(spec)?;
        if !self.program.is_file() {
            return Err(SandboxError::BwrapMissing);
        }
        let features = self.features().await;
        let limits = spec.limits;
        let (cgroup, enforcement) = RunCgroup::create(limits.memory_bytes, limits.processes);
        for w in &enforcement.warnings {
            tracing::warn!("bottle: {w}");
        }
        let rlimit_as = (enforcement.memory != super::Mechanism::CgroupV1
            && enforcement.memory != super::Mechanism::CgroupV2)
            .then_some(limits.memory_bytes);

        // fds handed to bwrap: 3 status (written by the init), 4 args, 5.. generated /etc files.
        let (status_r, status_w) = pipe()?;
        let mut etc_sources: Vec<(OwnedFd, String)> = Vec::new();
        for (dest, content) in generated_etc() {
            etc_sources.push((filled_pipe(content.as_bytes())?, dest.to_owned()));
        }
        for piece in ETC_COPIES {
            if let Some(fd) = open_host_file(&Path::new("/etc").join(piece))? {
                etc_sources.push((fd, format!("/etc/{piece}")));
            }
        }
        let etc_fds: Vec<(i32, &str)> = etc_sources
            .iter()
            .enumerate()
            .map(|(i, (_, dest))| (5 + i as i32, dest.as_str()))
            .collect();
        let args = build_args(&prepared, spec, features, &etc_fds);
        let command = build_command(spec, rlimit_as);
        tracing::debug!(?args, ?command, "bwrap arguments");
        let mut arg_bytes = Vec::new();
        for a in &args {
            arg_bytes.extend_from_slice(a.as_bytes());
            arg_bytes.push(0);
        }
        let args_fd = filled_pipe(&arg_bytes)?;

        let cgroup_files = match &cgroup {
            Some(cg) => cg
                .procs_files()
                .map_err(|e| SandboxError::io("opening the run cgroup", e))?,
            None => Vec::new(),
        };
        let cgroup_fds = limits::raw_fds(&cgroup_files);
        let mut moves: Vec<(i32, i32)> = vec![(status_w.as_raw_fd(), 3), (args_fd.as_raw_fd(), 4)];
        moves.extend(
            etc_sources
                .iter()
                .zip(etc_fds.iter())
                .map(|((fd, _), (target, _))| (fd.as_raw_fd(), *target)),
        );
        let first_free = 5 + etc_sources.len() as u32;

        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("--args")
            .arg("4")
            .args(&command)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: runs between fork and exec; only prctl, write, dup2 and fcntl/close_range
        // (async-signal-safe), on fds this function owns.
        unsafe {
            cmd.pre_exec(move || {
                // If we die, bwrap dies, and with it (--die-with-parent) the sandbox.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limits::join_cgroups_in_child(&cgroup_fds)?;
                for &(from, to) in &moves {
                    if libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Nothing else of ours leaks into the sandbox.
                super::init::cloexec_from(first_free);
                Ok(())
            });
        }

        let started = SystemTime::now();
        let t0 = Instant::now();
        let spawn_ns = super::init::monotonic_ns();
        let mut child = cmd.spawn().map_err(|e| spawn_error(&self.program, e))?;
        drop((status_w, args_fd, etc_sources, cgroup_files));
        let pgid = child.id().map(|p| p as libc::pid_t);

        let flood = Arc::new(Notify::new());
        let flood_at = output::flood_threshold(limits.output_bytes);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stdout = child.stdout.take().map(|s| {
            tokio::spawn(output::capture(
                s,
                limits.output_bytes,
                flood_at,
                flood.clone(),
                stop_rx.clone(),
            ))
        });
        let stderr = child.stderr.take().map(|s| {
            tokio::spawn(output::capture(
                s,
                limits.output_bytes,
                flood_at,
                flood.clone(),
                stop_rx,
            ))
        });

        let mut timed_out = false;
        let mut output_flood = false;
        let waited = tokio::select! {
            st = child.wait() => Some(st),
            () = tokio::time::sleep(limits.wall) => { timed_out = true; None }
            () = flood.notified() => { output_flood = true; None }
        };
        let exit = match waited {
            Some(st) => st,
            None => {
                if let Some(pgid) = pgid {
                    // SAFETY: signalling the process group bwrap leads (created above).
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                if let Some(cg) = &cgroup {
                    cg.kill_all();
                }
                child.wait().await
            }
        }
        .map_err(|e| SandboxError::io("waiting for bwrap", e))?;
        let duration = t0.elapsed();
        let ended = SystemTime::now();
        if let Some(cg) = &cgroup {
            cg.kill_all();
        }

        let stdout = finish_capture(stdout, &stop_tx).await;
        let stderr = finish_capture(stderr, &stop_tx).await;
        let report = read_status(status_r);
        let events = cgroup.as_ref().map(RunCgroup::events).unwrap_or_default();
        if let Some(cg) = cgroup {
            cg.finish().await;
        }

        use std::os::unix::process::ExitStatusExt as _;
        let status = match report.outcome {
            Some(t) => t,
            // Killed from outside after the command started (our limits, or the OOM killer
            // picking the init): report how bwrap ended.
            None if timed_out || output_flood || report.started => match exit.signal() {
                Some(sig) => Termination::Signaled(sig),
                None => Termination::Exited(exit.code().unwrap_or(-1)),
            },
            None => {
                let text = String::from_utf8_lossy(&stderr.bytes);
                return Err(match report.error {
                    Some(msg) => SandboxError::Setup(format!("the sandbox init failed: {msg}")),
                    None => setup_error(&text, exit.code()),
                });
            }
        };
        Ok(RunOutcome {
            status,
            stdout,
            stderr,
            timed_out,
            output_flood,
            oom_killed: events.oom_killed,
            process_limit_hit: events.process_limit_hit,
            started,
            ended,
            duration,
            startup: report
                .started_ns
                .and_then(|ns| ns.checked_sub(spawn_ns))
                .map(Duration::from_nanos),
            enforcement,
        })
    }
}

impl Backend for Bwrap {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn run<'a>(&'a self, spec: &'a SandboxSpec) -> BoxFuture<'a, Result<RunOutcome, SandboxError>> {
        Box::pin(self.run_spec(spec))
    }
}

async fn finish_capture(
    handle: Option<tokio::task::JoinHandle<Captured>>,
    stop: &watch::Sender<bool>,
) -> Captured {
    let Some(mut handle) = handle else {
        return Captured::default();
    };
    match tokio::time::timeout(DRAIN_AFTER_EXIT, &mut handle).await {
        Ok(got) => got.unwrap_or_default(),
        Err(_) => {
            let _ = stop.send(true);
            handle.await.unwrap_or_default()
        }
    }
}

/// The validated, canonical pieces of a spec.
#[derive(Debug)]
struct Prepared {
    workspace: PathBuf,
    init: PathBuf,
    /// Where the command starts, as the sandbox sees it (`/workspace` or a folder below).
    chdir: PathBuf,
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

impl Prepared {
    fn new(spec: &SandboxSpec) -> Result<Self, SandboxError> {
        if spec.argv.is_empty() {
            return Err(SandboxError::InvalidSpec(
                "argv is empty: give a command to run".into(),
            ));
        }
        let workspace = std::fs::canonicalize(&spec.workspace)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| SandboxError::WorkspaceMissing(spec.workspace.clone()))?;
        let init_program = spec.init.first().ok_or_else(|| {
            SandboxError::InvalidSpec(
                "init is empty: pass the init program (and its leading arguments)".into(),
            )
        })?;
        let init = std::fs::canonicalize(init_program)
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| SandboxError::InitMissing(PathBuf::from(init_program)))?;
        for (name, value) in &spec.env {
            if !valid_env_name(name) || value.contains('\0') {
                return Err(SandboxError::InvalidSpec(format!(
                    "environment variable {name:?} is not NAME=VALUE without '=' in the name or NUL anywhere"
                )));
            }
        }
        for p in &spec.read_only {
            let reserved = ["/proc", "/dev", "/run/bottle", WORKSPACE_PATH];
            if !p.is_absolute() || p == Path::new("/") || reserved.iter().any(|r| p.starts_with(r))
            {
                return Err(SandboxError::InvalidSpec(format!(
                    "read-only path {} must be absolute and not /, /proc, /dev, /run/bottle or /workspace",
                    p.display()
                )));
            }
            if !p.exists() {
                return Err(SandboxError::InvalidSpec(format!(
                    "read-only path {} does not exist",
                    p.display()
                )));
            }
        }
        if let Some(proxy) = &spec.proxy {
            if !proxy.socket.exists() {
                return Err(SandboxError::InvalidSpec(format!(
                    "proxy socket {} does not exist: start the egress proxy first",
                    proxy.socket.display()
                )));
            }
            if let Some(ca) = &proxy.ca_bundle
                && !ca.is_file()
            {
                return Err(SandboxError::InvalidSpec(format!(
                    "CA bundle {} does not exist",
                    ca.display()
                )));
            }
        }
        let chdir = sandbox_cwd(&workspace, spec.cwd.as_deref())?;
        Ok(Self {
            workspace,
            init,
            chdir,
        })
    }
}

/// The command's working directory inside the sandbox for a `cwd` relative to the (canonical)
/// workspace: checked on the host to be a folder that stays inside the workspace once every
/// link is resolved, then named by its resolved path under `/workspace`.
fn sandbox_cwd(workspace: &Path, cwd: Option<&Path>) -> Result<PathBuf, SandboxError> {
    let Some(rel) = cwd.filter(|c| !c.as_os_str().is_empty()) else {
        return Ok(PathBuf::from(WORKSPACE_PATH));
    };
    let bad = |why: &str| {
        SandboxError::InvalidSpec(format!(
            "cwd {} {why}: give a folder relative to the workspace",
            rel.display()
        ))
    };
    if rel.has_root() {
        return Err(bad("is absolute"));
    }
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("contains '..'"));
    }
    let resolved = std::fs::canonicalize(workspace.join(rel))
        .map_err(|_| bad("does not exist in the workspace"))?;
    let inside = resolved
        .strip_prefix(workspace)
        .map_err(|_| bad("leads out of the workspace through a link"))?;
    if !resolved.is_dir() {
        return Err(bad("is not a folder"));
    }
    Ok(Path::new(WORKSPACE_PATH).join(inside))
}

fn push(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

fn push_bind(args: &mut Vec<OsString>, flag: &str, src: &Path, dest: &str) {
    args.push(flag.into());
    args.push(src.as_os_str().to_owned());
    args.push(dest.into());
}

/// The read-only system: /usr and the top-level lib/bin dirs (as symlinks on merged-/usr).
fn push_system(args: &mut Vec<OsString>) {
    for dir in SYSTEM_DIRS {
        let host = Path::new("/").join(dir);
        let dest = format!("/{dir}");
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&host) {
                    args.push("--symlink".into());
                    args.push(target.into_os_string());
                    args.push(dest.into());
                }
            }
            Ok(meta) if meta.is_dir() => push_bind(args, "--ro-bind", &host, &dest),
            _ => {}
        }
    }
}

/// Opens a host file to hand to bwrap (`None` when it is missing or not a regular file).
fn open_host_file(path: &Path) -> Result<Option<OwnedFd>, SandboxError> {
    match File::open(path) {
        Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => Ok(Some(high(f.into())?)),
        _ => Ok(None),
    }
}

/// Files of /etc written fresh for the sandbox: no host users, no host name service.
fn generated_etc() -> Vec<(&'static str, String)> {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (user, group) = if uid == 0 {
        ("root", "root")
    } else {
        ("bottle", "bottle")
    };
    let mut passwd = format!("{user}:x:{uid}:{gid}:{user}:{HOME_PATH}:/bin/sh\n");
    let mut groups = format!("{group}:x:{gid}:\n");
    if uid != 65534 {
        passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    }
    if gid != 65534 {
        groups.push_str("nogroup:x:65534:\n");
    }
    vec![
        ("/etc/passwd", passwd),
        ("/etc/group", groups),
        (
            "/etc/hosts",
            "127.0.0.1\tlocalhost\n127.0.1.1\tbottle\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                .to_owned(),
        ),
        (
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\nethers: files\nrpc: files\n"
                .to_owned(),
        ),
        ("/etc/hostname", "bottle\n".to_owned()),
    ]
}

/// bwrap's options (passed through `--args`, NUL-separated, so no host path or variable
/// shows in any process list).
fn build_args(
    prepared: &Prepared,
    spec: &SandboxSpec,
    features: Features,
    etc_fds: &[(i32, &str)],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    push(
        &mut args,
        &[
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--cap-drop",
            "ALL",
            "--hostname",
            "bottle",
            "--clearenv",
        ],
    );
    if features.disable_userns {
        push(&mut args, &["--disable-userns"]);
    }

    // Environment: the spec's, then PATH and HOME unless it set them, then the proxy's.
    let mut env: Vec<(String, String)> = spec.env.clone();
    let has = |env: &Vec<(String, String)>, name: &str| env.iter().any(|(k, _)| k == name);
    if !has(&env, "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !has(&env, "HOME") {
        env.push(("HOME".into(), HOME_PATH.into()));
    }
    if let Some(proxy) = &spec.proxy {
        let url = format!("http://127.0.0.1:{}", super::BRIDGE_PORT);
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            env.push((name.into(), url.clone()));
            env.push((name.to_ascii_lowercase(), url.clone()));
        }
        // Servers inside the sandbox are reached directly, not through the egress proxy.
        env.push(("NO_PROXY".into(), "localhost,127.0.0.1,::1".into()));
        env.push(("no_proxy".into(), "localhost,127.0.0.1,::1".into()));
        if proxy.ca_bundle.is_some() {
            for name in [
                "SSL_CERT_FILE",
                "NODE_EXTRA_CA_CERTS",
                "REQUESTS_CA_BUNDLE",
                "GIT_SSL_CAINFO",
                "CURL_CA_BUNDLE",
            ] {
                env.push((name.into(), CA_BUNDLE_PATH.into()));
            }
        }
    }
    for (k, v) in env {
        push(&mut args, &["--setenv", &k, &v]);
    }

    push_system(&mut args);
    // /etc: a few copied files, the trust stores, the alternatives; read-only once the root
    // is remounted below.
    for (fd, dest) in etc_fds {
        if features.perms {
            push(&mut args, &["--perms", "0444"]);
        }
        push(&mut args, &["--file", &fd.to_string(), dest]);
    }
    for piece in ETC_BINDS {
        let host = Path::new("/etc").join(piece);
        push_bind(&mut args, "--ro-bind-try", &host, &format!("/etc/{piece}"));
    }

    let size = spec.limits.memory_bytes.to_string();
    let sized_tmpfs = |args: &mut Vec<OsString>, dest: &str| {
        if features.size {
            push(args, &["--size", &size]);
        }
        push(args, &["--tmpfs", dest]);
    };
    push(&mut args, &["--proc", "/proc", "--dev", "/dev"]);
    sized_tmpfs(&mut args, "/dev/shm");
    push(&mut args, &["--remount-ro", "/dev"]);
    sized_tmpfs(&mut args, "/tmp");
    sized_tmpfs(&mut args, HOME_PATH);
    push(&mut args, &["--symlink", "../tmp", "/var/tmp"]);

    push_bind(&mut args, "--bind", &prepared.workspace, WORKSPACE_PATH);
    for p in &spec.read_only {
        args.push("--ro-bind".into());
        args.push(p.as_os_str().to_owned());
        args.push(p.as_os_str().to_owned());
    }
    push_bind(&mut args, "--ro-bind", &prepared.init, INIT_PATH);
    if let Some(proxy) = &spec.proxy {
        push_bind(&mut args, "--ro-bind", &proxy.socket, PROXY_SOCKET_PATH);
        if let Some(ca) = &proxy.ca_bundle {
            push_bind(&mut args, "--ro-bind", ca, CA_BUNDLE_PATH);
        }
    }
    push(&mut args, &["--remount-ro", "/", "--chdir"]);
    args.push(prepared.chdir.as_os_str().to_owned());
    args
}

/// What bwrap runs: the init (its program at INIT_PATH with the spec's leading arguments, then
/// ours) and the command. bwrap takes these on its real command line, after `--`; inside the
/// sandbox they are the init's own argv.
fn build_command(spec: &SandboxSpec, rlimit_as: Option<u64>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--".into(), INIT_PATH.into()];
    args.extend(spec.init.iter().skip(1).cloned());
    push(&mut args, &["--status-fd", "3"]);
    if spec.proxy.is_some() {
        push(
            &mut args,
            &[
                "--proxy-socket",
                PROXY_SOCKET_PATH,
                "--proxy-port",
                &super::BRIDGE_PORT.to_string(),
            ],
        );
    }
    let nproc = spec
        .limits
        .processes
        .saturating_add(limits::RLIMIT_OVERHEAD_TASKS);
    push(&mut args, &["--nproc", &nproc.to_string()]);
    if let Some(bytes) = rlimit_as {
        push(&mut args, &["--rlimit-as", &bytes.to_string()]);
    }
    args.push("--".into());
    args.extend(spec.argv.iter().cloned());
    args
}

/// A pipe, both ends close-on-exec and numbered above the fds we move into place after fork.
fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::io(
            "creating a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(r)?, high(w)?))
}

/// Re-numbers an fd to 32 or above, so moving fds onto 3..N after fork never clobbers one.
fn high(fd: OwnedFd) -> Result<OwnedFd, SandboxError> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 32) };
    if n < 0 {
        return Err(SandboxError::io(
            "duplicating a pipe fd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: n was just created by fcntl.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A pipe already holding `data` (and closed for writing); returns the read end.
fn filled_pipe(data: &[u8]) -> Result<OwnedFd, SandboxError> {
    let (r, w) = pipe()?;
    if data.len() > 60_000 {
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        let got =
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, data.len() as i32 + 4096) };
        if got < 0 || (got as usize) < data.len() {
            return Err(SandboxError::InvalidSpec(format!(
                "the sandbox arguments are too large ({} bytes): shorten the environment or argv",
                data.len()
            )));
        }
    }
    let mut w = File::from(w);
    w.write_all(data)
        .map_err(|e| SandboxError::io("writing bwrap's arguments", e))?;
    Ok(r)
}

#[derive(Debug, Default)]
struct StatusReport {
    started: bool,
    started_ns: Option<u64>,
    outcome: Option<Termination>,
    error: Option<String>,
}

/// Reads what the init wrote on fd 3 (everything is written by now; never blocks).
fn read_status(fd: OwnedFd) -> StatusReport {
    // SAFETY: setting O_NONBLOCK on a pipe we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut file = File::from(fd);
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 || text.len() > 4096 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    parse_status(&String::from_utf8_lossy(&text))
}

fn parse_status(text: &str) -> StatusReport {
    let mut report = StatusReport::default();
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "started" => {
                report.started = true;
                report.started_ns = rest.trim().parse().ok();
            }
            "exit" => report.outcome = rest.trim().parse().ok().map(Termination::Exited),
            "signal" => report.outcome = rest.trim().parse().ok().map(Termination::Signaled),
            "error" => report.error = Some(rest.to_owned()),
            _ => {}
        }
    }
    report
}

fn spawn_error(program: &Path, e: std::io::Error) -> SandboxError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SandboxError::BwrapMissing
    } else {
        SandboxError::io(format!("starting {}", program.display()), e)
    }
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Turns bwrap's complaint into an error that says which setting to change.
fn setup_error(stderr: &str, code: Option<i32>) -> SandboxError {
    // bwrap's own complaints start with "bwrap:"; a usage text means an option it lacks.
    let detail = stderr
        .lines()
        .find(|l| l.starts_with("bwrap:"))
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim()
        .to_owned();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("namespace") || lower.contains("uid map") || lower.contains("setting up uid")
    {
        let hint = if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
            "user namespaces are disabled: sysctl -w user.max_user_namespaces=15000".to_owned()
        } else if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
            "unprivileged user namespaces are disabled: sysctl -w kernel.unprivileged_userns_clone=1".to_owned()
        } else if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
            "AppArmor restricts unprivileged user namespaces: sysctl -w \
             kernel.apparmor_restrict_unprivileged_userns=0, or install an AppArmor profile for bwrap"
                .to_owned()
        } else {
            "the kernel or a container runtime refused to create namespaces; in Docker run with \
             --security-opt seccomp=unconfined --security-opt apparmor=unconfined (or --privileged)"
                .to_owned()
        };
        return SandboxError::UserNamespaces { detail, hint };
    }
    let code = code.map_or_else(|| "a signal".to_owned(), |c| format!("code {c}"));
    SandboxError::Setup(format!(
        "bwrap exited with {code} before the command started: {detail}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::sandbox::{Limits, ProxyLink};

    fn spec(dir: &Path) -> SandboxSpec {
        SandboxSpec {
            argv: vec!["echo".into(), "hi".into()],
            workspace: dir.to_path_buf(),
            cwd: None,
            env: vec![("LANG".into(), "C.UTF-8".into())],
            proxy: None,
            read_only: vec![],
            limits: Limits::default(),
            init: vec!["/bin/sh".into(), "__bottle-init".into()],
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn args_isolate_everything_and_end_with_the_init_then_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let p = Prepared::new(&s).unwrap();
        let feats = Features {
            size: true,
            perms: true,
            disable_userns: true,
        };
        let mut all = build_args(&p, &s, feats, &[(5, "/etc/passwd")]);
        all.extend(build_command(&s, Some(1 << 30)));
        let args = joined(&all);
        for needle in [
            "--unshare-all --unshare-user --die-with-parent --new-session --as-pid-1 --cap-drop ALL",
            "--clearenv",
            "--disable-userns",
            "--setenv LANG C.UTF-8",
            "--setenv HOME /home/bottle",
            "--ro-bind /usr /usr",
            "--perms 0444 --file 5 /etc/passwd",
            "--size 2147483648 --tmpfs /tmp",
            "--remount-ro / --chdir /workspace -- /run/bottle/init __bottle-init --status-fd 3 --nproc 257 --rlimit-as 1073741824 -- echo hi",
        ] {
            assert!(args.contains(needle), "missing {needle:?} in {args}");
        }
        assert!(args.contains(&format!("--bind {} /workspace", p.workspace.display())));
        for forbidden in [
            "/root",
            "/home ",
            "HTTP_PROXY",
            "--share-net",
            "/etc/passwd /etc/passwd",
            "/etc/ssl /etc/ssl",
            "/etc/pki /etc/pki",
            "private",
        ] {
            assert!(
                !args.contains(forbidden),
                "unexpected {forbidden:?} in {args}"
            );
        }
    }

    #[test]
    fn proxy_adds_the_socket_ca_and_both_cases_of_proxy_variables() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("proxy.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem").unwrap();
        let mut s = spec(dir.path());
        s.proxy = Some(ProxyLink {
            socket: sock.clone(),
            ca_bundle: Some(ca.clone()),
        });
        s.env.push(("HTTP_PROXY".into(), "http://evil:1".into()));
        let p = Prepared::new(&s).unwrap();
        let mut args = build_args(&p, &s, Features::default(), &[]);
        args.extend(build_command(&s, None));
        let text = joined(&args);
        assert!(text.contains(&format!(
            "--ro-bind {} /run/bottle/proxy.sock",
            sock.display()
        )));
        assert!(text.contains(&format!("--ro-bind {} /run/bottle/ca.pem", ca.display())));
        assert!(text.contains("--setenv https_proxy http://127.0.0.1:3128"));
        assert!(text.contains("--setenv SSL_CERT_FILE /run/bottle/ca.pem"));
        assert!(text.contains("--proxy-socket /run/bottle/proxy.sock --proxy-port 3128"));
        // The sandbox's own proxy variable comes last, so it wins.
        let last_http = text.rfind("--setenv HTTP_PROXY ").unwrap();
        assert!(text[last_http..].starts_with("--setenv HTTP_PROXY http://127.0.0.1:3128"));
        assert!(!text.contains("--rlimit-as"));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.workspace = dir.path().join("missing");
        assert!(matches!(
            Prepared::new(&s),
            Err(SandboxError::WorkspaceMissing(_))
        ));
        let mut s = spec(dir.path());
        s.env.push(("A=B".into(), "x".into()));
        assert!(matches!(
            Prepared::new(&s),
            Err(SandboxError::InvalidSpec(_))
        ));
        let mut s = spec(dir.path());
        s.read_only.push("/proc/self".into());
        assert!(matches!(
            Prepared::new(&s),
            Err(SandboxError::InvalidSpec(_))
        ));
        let mut s = spec(dir.path());
        s.init = vec![dir.path().join("no-init").into()];
        assert!(matches!(
            Prepared::new(&s),
            Err(SandboxError::InitMissing(_))
        ));
        let mut s = spec(dir.path());
        s.argv.clear();
        assert!(matches!(
            Prepared::new(&s),
            Err(SandboxError::InvalidSpec(_))
        ));
    }

    #[test]
    fn cwd_must_stay_in_the_workspace_and_becomes_the_chdir() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/inner")).unwrap();
        std::fs::write(dir.path().join("file.txt"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("sub/inner", dir.path().join("alias")).unwrap();
        let mut s = spec(dir.path());
        for bad in ["/tmp", "..", "sub/../..", "escape", "missing", "file.txt"] {
            s.cwd = Some(bad.into());
            assert!(
                matches!(Prepared::new(&s), Err(SandboxError::InvalidSpec(_))),
                "{bad:?}"
            );
        }
        for (cwd, chdir) in [
            (None, "/workspace"),
            (Some(""), "/workspace"),
            (Some("sub/inner"), "/workspace/sub/inner"),
            (Some("./alias/"), "/workspace/sub/inner"),
        ] {
            s.cwd = cwd.map(PathBuf::from);
            let p = Prepared::new(&s).unwrap();
            assert_eq!(p.chdir, Path::new(chdir), "{cwd:?}");
            let args = joined(&build_args(&p, &s, Features::default(), &[]));
            assert!(
                args.ends_with(&format!("--remount-ro / --chdir {chdir}")),
                "{args}"
            );
        }
    }

    #[test]
    fn status_lines_are_parsed() {
        let r = parse_status("started 12345\nexit 3\n");
        assert_eq!(r.outcome, Some(Termination::Exited(3)));
        assert!(r.started);
        assert_eq!(r.started_ns, Some(12345));
        let r = parse_status("started\nsignal 9\n");
        assert_eq!(r.outcome, Some(Termination::Signaled(9)));
        let r = parse_status("error cannot listen\n");
        assert_eq!(r.outcome, None);
        assert_eq!(r.error.as_deref(), Some("cannot listen"));
    }

    #[test]
    fn namespace_failures_become_a_hint() {
        let e = setup_error(
            "bwrap: No permissions to creating new namespace, likely because...\n",
            Some(1),
        );
        assert!(matches!(e, SandboxError::UserNamespaces { .. }), "{e}");
        let e = setup_error(
            "bwrap: Can't find source path /nope: No such file or directory\n",
            Some(1),
        );
        assert!(matches!(e, SandboxError::Setup(_)), "{e}");
    }

    #[test]
    fn args_pipe_survives_large_content() {
        let data = vec![b'a'; 200_000];
        let r = filled_pipe(&data).unwrap();
        let mut f = File::from(r);
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), data.len());
    }
}
