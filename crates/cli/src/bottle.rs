//! `bytebot bottle run|audit` and `bytebot verify`: the bottle crate wired to the config's data
//! folder. The run sequence itself is in `bottle/run.rs`.
//!
//! Everything the bottle keeps lives in `<data_dir>/bottle/` (mode 0700): the proxy's CA
//! (`ca.pem`, `ca-key.pem`), the signing key (`signing.key`, public half `signing.key.pub`),
//! the audit log (`audit.jsonl`) and the signed run records (`runs/<bottle id>.intoto.jsonl`).

mod run;

use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use bytebot_bottle::audit::{self, AuditFollower};
use bytebot_bottle::provenance::{self as prov, VerifyingKey};
use clap::{Args, Subcommand};

use crate::config::Config;

/// The hidden first argument that makes `bytebot` the sandbox's init (see `main`). Fixed: the
/// gateway's bottle runs start the same binary with it.
pub const INIT_SUBCOMMAND: &str = "__bottle-init";

/// Exit code of `bytebot bottle run` when the bottle itself failed (bad policy, no bwrap, no
/// namespaces, missing workspace, a key or CA problem), as `docker run` and `timeout` do, so it
/// stays apart from the command's own codes (127/126: the command was not found / not runnable).
pub const SETUP_FAILURE: i32 = 125;

/// `bytebot bottle …`
#[derive(Debug, Subcommand)]
pub enum BottleCommand {
    /// Run a command in a sandbox whose only way out is an auditing egress proxy that holds the
    /// secrets; writes a signed provenance record of the run.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Print the egress audit log (one line per request; refusals marked DENY).
    Audit(AuditArgs),
}

const RUN_HELP: &str = "Exit code: the command's own (128+N when a signal ended it), 125 when the bottle could not run it.
Examples:
  bytebot bottle run -- make test                     no network at all (profile `default`)
  bytebot bottle run --policy coding-agent -- claude  model APIs with held keys, package registries
  bytebot bottle run --policy ./bottle.json --workspace ~/src/app --label nightly -- ./build.sh";

/// Arguments of `bytebot bottle run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A policy file (JSON; the README's Bottle section shows the format) or a built-in
    /// profile: `default` (no network) or `coding-agent`.
    #[arg(long, value_name = "FILE|PROFILE", default_value = "default")]
    pub policy: String,
    /// Directory bound read-write at /workspace (the command's working directory). Default: the
    /// current directory.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// A name kept in the provenance record.
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Print the closing summary on stderr as one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Test/dev hook: resolve HOST to ADDR (IP:PORT, port 0 keeps the requested one) instead
    /// of through DNS, like `curl --resolve`. The SSRF guard still applies: a loopback ADDR
    /// needs HOST in the policy's network.allow_private.
    #[arg(long = "dev-resolve", value_name = "HOST=ADDR", hide = true)]
    pub dev_resolve: Vec<String>,
    /// Test/dev hook: a PEM file of extra roots the proxy trusts for upstream TLS (a private
    /// registry's CA, a test server's CA), besides Mozilla's.
    #[arg(long = "dev-upstream-root", value_name = "PEM", hide = true)]
    pub dev_upstream_roots: Vec<PathBuf>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Arguments of `bytebot bottle audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Keep printing new lines as the proxy writes them (Ctrl+C to stop).
    #[arg(long, short)]
    pub follow: bool,
    /// The audit file. Default: <data_dir>/bottle/audit.jsonl.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Only the lines of this bottle run.
    #[arg(long, value_name = "ID")]
    pub bottle: Option<String>,
}

/// Arguments of `bytebot verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The run record (`<data_dir>/bottle/runs/<id>.intoto.jsonl`).
    pub file: PathBuf,
    /// The signer's public key. Default: this installation's <data_dir>/bottle/signing.key.pub.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Also check that the files the record lists are, byte for byte, those in DIR now.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// Where the bottle keeps its files inside the data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BottlePaths {
    /// `<data_dir>/bottle`, mode 0700; also the CA's folder (`ca.pem`, `ca-key.pem`).
    pub dir: PathBuf,
    /// The ed25519 key that signs run records (0600).
    pub signing_key: PathBuf,
    /// Its public half, what `bytebot verify` checks with by default.
    pub public_key: PathBuf,
    /// The egress audit log (0600), appended to by every run's proxy.
    pub audit: PathBuf,
    /// Signed run records.
    pub runs: PathBuf,
}

impl BottlePaths {
    /// The paths under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("bottle");
        let signing_key = dir.join("signing.key");
        Self {
            public_key: prov::public_key_path(&signing_key),
            audit: dir.join("audit.jsonl"),
            runs: dir.join("runs"),
            signing_key,
            dir,
        }
    }
}

/// The init part of a sandbox spec: this executable with [`INIT_SUBCOMMAND`].
pub fn init_argv() -> std::io::Result<Vec<OsString>> {
    Ok(vec![
        std::env::current_exe()?.into_os_string(),
        INIT_SUBCOMMAND.into(),
    ])
}

/// Runs a `bytebot bottle` subcommand; returns the process exit code.
pub fn main(config: &Config, command: BottleCommand) -> i32 {
    match command {
        BottleCommand::Run(args) => run::main(config, args),
        BottleCommand::Audit(args) => audit_main(config, args),
    }
}

/// `bytebot verify`: 0 when the record verifies (and, with `--workspace`, the files match),
/// 1 with the reason otherwise.
pub fn verify(config: &Config, args: VerifyArgs) -> i32 {
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(|| BottlePaths::new(&config.data_dir).public_key);
    let key = match VerifyingKey::from_file(&key_path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!(
                "verify: cannot use the public key {}: {e}\n\
                 pass --key with the signing.key.pub of the installation that made the record",
                key_path.display()
            );
            return 1;
        }
    };
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("verify: cannot read {}: {e}", args.file.display());
            return 1;
        }
    };
    let run = match prov::verify(&bytes, &key) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("verify: FAILED: {}: {e}", args.file.display());
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(prov::render(&run).as_bytes());
    if let Some(dir) = &args.workspace {
        let check = prov::verify_against_workspace(&run, dir);
        let _ = writeln!(out);
        let _ = out.write_all(prov::render_workspace_check(&check).as_bytes());
        let _ = out.flush();
        if !check.is_clean() {
            eprintln!(
                "verify: FAILED: the files in {} are not those the record lists",
                dir.display()
            );
            return 1;
        }
    }
    0
}

fn audit_main(config: &Config, args: AuditArgs) -> i32 {
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| BottlePaths::new(&config.data_dir).audit);
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let wanted = |e: &audit::AuditEntry| args.bottle.as_ref().is_none_or(|b| &e.bottle == b);
    if !args.follow {
        let entries = match audit::read_file(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "no audit yet: {} does not exist (a bottle run's proxy writes it on its first \
                     request; runs without network have none)",
                    path.display()
                );
                return 0;
            }
            Err(e) => {
                eprintln!("audit: cannot read {}: {e}", path.display());
                return 1;
            }
        };
        let mut out = std::io::stdout().lock();
        for (i, entry) in entries.iter().enumerate() {
            match entry {
                Ok(e) if wanted(e) => {
                    if writeln!(out, "{}", audit::render(e, color)).is_err() {
                        // The reader went away (`| head`): nothing left to do.
                        return 0;
                    }
                }
                Ok(_) => {}
                Err(why) => eprintln!("audit: entry {} is not an audit line: {why}", i + 1),
            }
        }
        return 0;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("audit: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let mut follower = AuditFollower::new(&path);
        loop {
            let line = tokio::select! {
                line = follower.next_line() => line,
                _ = tokio::signal::ctrl_c() => return 0,
            };
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("audit: cannot read {}: {e}", path.display());
                    return 1;
                }
            };
            let text = match audit::parse_line(&line) {
                Ok(e) if wanted(&e) => audit::render(&e, color),
                Ok(_) => continue,
                Err(why) => {
                    eprintln!("audit: not an audit line: {why}");
                    continue;
                }
            };
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return 0;
            }
        }
    })
}
