//! The sandbox: one `Backend` trait, the bubblewrap backend, the in-sandbox init (TCP→unix
//! bridge to the egress proxy, seccomp, rlimits), run limits, and confined host-side reads of
//! what a sandbox wrote.
//!
//! Invariants: the sandboxed command starts from an empty environment plus the spec's
//! variables; it sees no host path but the read-only system, the workspace (read-write at
//! `/workspace`) and the spec's extra read-only paths; its only way out is the proxy socket,
//! reached through the init's listener on `127.0.0.1:3128`. docs/bottle-backends.md says how
//! the same spec maps onto Docker and Kubernetes.

mod bridge;
mod bwrap;
pub mod confine;
mod init;
mod limits;
mod output;
mod seccomp;

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub use bwrap::Bwrap;
pub use init::init_main;
pub use limits::{Enforcement, Mechanism};

/// Where the init program is bound inside the sandbox (read-only).
pub const INIT_PATH: &str = "/run/bottle/init";
/// Where the egress proxy's unix socket is bound inside the sandbox.
pub const PROXY_SOCKET_PATH: &str = "/run/bottle/proxy.sock";
/// Where the CA bundle is bound inside the sandbox when the proxy link has one.
pub const CA_BUNDLE_PATH: &str = "/run/bottle/ca.pem";
/// The port the init's bridge listens on, on the sandbox's own loopback.
pub const BRIDGE_PORT: u16 = 3128;
/// Mount point of the workspace inside the sandbox; the command's working directory unless the
/// spec's `cwd` names a folder below it.
pub const WORKSPACE_PATH: &str = "/workspace";
/// `HOME` inside the sandbox: a private tmpfs, so dotfiles never land in the workspace.
pub const HOME_PATH: &str = "/home/bottle";
/// `PATH` inside the sandbox unless the spec's environment sets one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Everything a backend needs to run one command in a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The command and its arguments; `argv[0]` is looked up in the sandbox's `PATH`.
    pub argv: Vec<OsString>,
    /// Host directory bound read-write at `/workspace`, the command's working directory
    /// unless `cwd` names a folder inside it.
    pub workspace: PathBuf,
    /// The command's working directory, relative to the workspace (`None`: the workspace
    /// itself). It must be a folder that stays inside the workspace once links are resolved on
    /// the host; the command starts in the same folder under `/workspace`, with `PWD` set to it.
    pub cwd: Option<PathBuf>,
    /// The command's whole environment, on top of which the sandbox adds only `PATH` and
    /// `HOME` (unless set here), `PWD=/workspace`, and the proxy and CA variables when `proxy`
    /// is set (those always win).
    pub env: Vec<(String, String)>,
    /// The egress proxy; `None` means no network at all (only the sandbox's own loopback).
    pub proxy: Option<ProxyLink>,
    /// Extra host paths (absolute) bound read-only at the same place, e.g. a toolchain in /opt.
    pub read_only: Vec<PathBuf>,
    /// Wall time, memory, process and output limits.
    pub limits: Limits,
    /// How to start the init inside the sandbox: program (a host path, bound read-only at
    /// [`INIT_PATH`]) and leading arguments, e.g. `[bytebot, "__bottle-init"]`.
    pub init: Vec<OsString>,
}

/// The host side of the sandbox's only way out.
#[derive(Debug, Clone)]
pub struct ProxyLink {
    /// Host path of the egress proxy's unix socket (HTTP proxy protocol, CONNECT included).
    pub socket: PathBuf,
    /// A complete PEM bundle the sandbox's TLS clients should trust (system roots plus the
    /// bottle CA); exported as `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `REQUESTS_CA_BUNDLE`,
    /// `GIT_SSL_CAINFO` and `CURL_CA_BUNDLE`.
    pub ca_bundle: Option<PathBuf>,
}

/// Limits of one run. `Default` gives 10 minutes, 2 GiB, 256 tasks, 1 MiB per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from start; the whole sandbox is killed when it passes.
    pub wall: Duration,
    /// Memory of the whole sandbox (cgroup), or address space per process (rlimit fallback).
    pub memory_bytes: u64,
    /// Tasks (processes and threads) the command may have at once.
    pub processes: u32,
    /// Bytes of stdout and of stderr kept, each; the rest is counted and dropped. A stream
    /// that passes `max(64 × output_bytes, 64 MiB)` ends the run as a flood.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(600),
            memory_bytes: 2 << 30,
            processes: 256,
            output_bytes: 1 << 20,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// It (or, after a timeout or flood, the whole sandbox) was killed by this signal.
    Signaled(i32),
}

/// One captured output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first `output_bytes` bytes.
    pub bytes: Vec<u8>,
    /// Everything the stream carried, kept or not.
    pub total: u64,
    /// Whether bytes were dropped.
    pub truncated: bool,
}

/// What happened in one run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Exit code or signal of the command.
    pub status: Termination,
    /// The command's standard output.
    pub stdout: Captured,
    /// The command's standard error.
    pub stderr: Captured,
    /// The wall limit ended the run.
    pub timed_out: bool,
    /// An output stream passed the flood threshold and the run was killed.
    pub output_flood: bool,
    /// The memory cgroup killed a process (only known when memory is limited by a cgroup).
    pub oom_killed: bool,
    /// A fork or clone failed on the process limit (only known with a pids cgroup).
    pub process_limit_hit: bool,
    /// When the sandbox was started.
    pub started: SystemTime,
    /// When it ended.
    pub ended: SystemTime,
    /// Monotonic duration of the run.
    pub duration: Duration,
    /// From spawning the sandbox to the command's exec, as the init measured it (the bottle's
    /// startup cost); `None` when the command never started.
    pub startup: Option<Duration>,
    /// How each limit was enforced in this run, with warnings for the ones that were not.
    pub enforcement: Enforcement,
}

impl RunOutcome {
    /// The exit code a shell would report: the code, or 128 + signal.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Termination::Exited(code) => code,
            Termination::Signaled(sig) => 128 + sig,
        }
    }

    /// Whether the command exited 0 within its limits.
    pub fn success(&self) -> bool {
        self.status == Termination::Exited(0) && !self.timed_out && !self.output_flood
    }
}

/// Why a sandbox could not be run (a command that fails inside is a `RunOutcome`, not this).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is not installed.
    #[error(
        "bubblewrap (bwrap) was not found in PATH: install it (Debian/Ubuntu: apt-get install bubblewrap)"
    )]
    BwrapMissing,
    /// The workspace directory does not exist or is not a directory.
    #[error("workspace {0} does not exist or is not a directory: create it first")]
    WorkspaceMissing(PathBuf),
    /// The init program is missing.
    #[error(
        "sandbox init {0} does not exist: pass the bytebot executable (or bytebot-bottle-init) as the spec's init"
    )]
    InitMissing(PathBuf),
    /// The kernel refused to create the namespaces.
    #[error("bubblewrap could not create namespaces ({detail}): {hint}")]
    UserNamespaces {
        /// What bwrap said.
        detail: String,
        /// Which setting to change.
        hint: String,
    },
    /// The spec is not usable.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// bwrap or the init failed before the command started.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// An I/O error on the host side.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A boxed future, so `Backend` stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to run a `SandboxSpec`: bubblewrap today; Docker and Kubernetes pods on paper
/// (docs/bottle-backends.md).
pub trait Backend: Send + Sync {
    /// Short name for logs and provenance, e.g. `"bwrap"`.
    fn name(&self) -> &'static str;

    /// Runs the spec to completion (or to its limits).
    fn run<'a>(&'a self, spec: &'a SandboxSpec) -> BoxFuture<'a, Result<RunOutcome, SandboxError>>;
}
