//! The init: the sandbox's first program of ours. It binds the bridge listener (before the
//! command starts, so nothing needs to poll for readiness), compiles the seccomp filter, starts
//! the command with the filter and rlimits applied between fork and exec, and reports the
//! command's fate on a status fd the host passed in. It runs as the sandbox's pid 1 (bwrap
//! `--as-pid-1`), so it reaps orphans, cannot be killed from inside, and its exit ends the
//! sandbox. The init itself stays unfiltered (it needs AF_UNIX to reach the proxy) and makes
//! itself non-dumpable so the command, running as the same uid, cannot read or write its
//! memory through /proc.
//!
//! Arguments (built by the host, not for people): `[--status-fd N] [--proxy-socket PATH]
//! [--proxy-port N] [--nproc N] [--rlimit-as BYTES] -- COMMAND [ARGS…]`.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::FromRawFd as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;

use super::seccomp;

/// Exit code when the init itself is misused or fails before the command starts.
const INIT_FAILURE: i32 = 125;

#[derive(Debug, Default)]
struct InitConfig {
    status_fd: Option<i32>,
    proxy_socket: Option<PathBuf>,
    proxy_port: u16,
    nproc: Option<u64>,
    rlimit_as: Option<u64>,
    argv: Vec<OsString>,
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: Option<OsString>) -> Result<T, String> {
    value
        .as_ref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a number"))
}

impl InitConfig {
    fn parse(args: Vec<OsString>) -> Result<Self, String> {
        let mut cfg = Self {
            proxy_port: super::BRIDGE_PORT,
            ..Self::default()
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            match arg.to_str() {
                Some("--") => {
                    cfg.argv = it.collect();
                    break;
                }
                Some("--status-fd") => cfg.status_fd = Some(parse_num("--status-fd", it.next())?),
                Some("--proxy-socket") => {
                    cfg.proxy_socket = Some(
                        it.next()
                            .map(PathBuf::from)
                            .ok_or("--proxy-socket needs a path")?,
                    );
                }
                Some("--proxy-port") => cfg.proxy_port = parse_num("--proxy-port", it.next())?,
                Some("--nproc") => cfg.nproc = Some(parse_num("--nproc", it.next())?),
                Some("--rlimit-as") => cfg.rlimit_as = Some(parse_num("--rlimit-as", it.next())?),
                _ => {
                    return Err(format!(
                        "unexpected argument {arg:?} (the command goes after --)"
                    ));
                }
            }
        }
        if cfg.argv.is_empty() {
            return Err("no command given after --".to_owned());
        }
        Ok(cfg)
    }
}

/// Marks every fd from 3 up close-on-exec so nothing the sandbox inherited reaches the command.
pub(crate) fn cloexec_from(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Kernels before 5.11: walk the table up to the soft fd limit.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own.
        let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur.min(65_536) as i32
        } else {
            1024
        };
        for fd in first as i32..max {
            // SAFETY: F_SETFD on an fd that may or may not be open; EBADF is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we own; async-signal-safe.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

struct Status(Option<File>);

impl Status {
    fn line(&mut self, text: &str) {
        if let Some(f) = self.0.as_mut() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// Runs the init with its arguments (everything after the program and its leading
/// arguments) and returns the exit code to exit with: the command's code, 128 + signal when
/// the command was killed, 127/126 when it could not be started, 125 when the init failed.
pub fn init_main(args: Vec<OsString>) -> i32 {
    let cfg = match InitConfig::parse(args) {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("bytebot-bottle-init: {msg}");
            return INIT_FAILURE;
        }
    };
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes our own process attributes.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    cloexec_from(3);
    // SAFETY: the host passes this fd for us alone; we take ownership once.
    let mut status = Status(cfg.status_fd.map(|fd| unsafe { File::from_raw_fd(fd) }));

    match run(&cfg, &mut status) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("bytebot-bottle-init: {msg}");
            status.line(&format!("error {}\n", msg.replace('\n', " ")));
            INIT_FAILURE
        }
    }
}

fn run(cfg: &InitConfig, status: &mut Status) -> Result<i32, String> {
    let filters = seccomp::compile()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        if let Some(socket) = &cfg.proxy_socket {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.proxy_port));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tokio::spawn(super::bridge::serve(listener, socket.clone()));
        }

        let (program, args) = cfg.argv.split_first().ok_or("no command")?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        let nproc = cfg.nproc;
        let rlimit_as = cfg.rlimit_as;
        // SAFETY: the closure runs between fork and exec and only calls setrlimit, prctl and
        // seccomp (async-signal-safe, no allocation: the filter was compiled above).
        unsafe {
            cmd.pre_exec(move || {
                set_rlimit(libc::RLIMIT_CORE, 0)?;
                if let Some(n) = nproc {
                    set_rlimit(libc::RLIMIT_NPROC, n)?;
                }
                if let Some(bytes) = rlimit_as {
                    set_rlimit(libc::RLIMIT_AS, bytes)?;
                }
                filters.apply()
            });
        }
        // Registered before the spawn so no SIGCHLD is missed.
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| format!("cannot watch SIGCHLD: {e}"))?;
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let name = program.to_string_lossy();
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    eprintln!("bottle: {name}: command not found");
                    127
                } else {
                    eprintln!("bottle: {name}: cannot run: {e}");
                    126
                };
                status.line(&format!("exit {code}\n"));
                return Ok(code);
            }
        };
        // After spawn returns the command has exec'd: this is its start, for the host's
        // startup measurement (CLOCK_MONOTONIC is shared with the host: no time namespace).
        status.line(&format!("started {}\n", monotonic_ns()));
        let main_pid = child.id() as libc::pid_t;
        // We are the sandbox's pid 1: orphans are reparented to us, so reap everything and
        // stop when the command itself has exited (the kernel then kills the rest).
        loop {
            loop {
                let mut raw = 0;
                // SAFETY: waitpid on our own children, non-blocking.
                let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == main_pid {
                    let exit = std::process::ExitStatus::from_raw(raw);
                    return Ok(match (exit.code(), exit.signal()) {
                        (Some(code), _) => {
                            status.line(&format!("exit {code}\n"));
                            code
                        }
                        (None, Some(sig)) => {
                            status.line(&format!("signal {sig}\n"));
                            128 + sig
                        }
                        (None, None) => INIT_FAILURE,
                    });
                }
            }
            sigchld.recv().await;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_host_protocol() {
        let cfg = InitConfig::parse(os(&[
            "--status-fd",
            "3",
            "--proxy-socket",
            "/run/bottle/proxy.sock",
            "--nproc",
            "67",
            "--rlimit-as",
            "1024",
            "--",
            "echo",
            "--nproc",
        ]))
        .unwrap();
        assert_eq!(cfg.status_fd, Some(3));
        assert_eq!(cfg.proxy_port, 3128);
        assert_eq!(cfg.nproc, Some(67));
        assert_eq!(cfg.rlimit_as, Some(1024));
        assert_eq!(cfg.argv, os(&["echo", "--nproc"]));
    }

    #[test]
    fn rejects_missing_command_and_unknown_flags() {
        assert!(InitConfig::parse(os(&["--status-fd", "3"])).is_err());
        assert!(InitConfig::parse(os(&["--bogus", "--", "true"])).is_err());
        assert!(InitConfig::parse(os(&["--nproc", "x", "--", "true"])).is_err());
    }
}
