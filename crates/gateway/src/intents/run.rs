//! The `run` intent's process runner: one program, argv only (never a
//! shell), with a cleared environment, a working folder confined to the
//! workspace, and limits on time, output and memory.
//!
//! Two steps are kept apart on purpose. Building the command (`prepare` and
//! `direct_command`) decides *what* runs and *where*; supervising it
//! (`supervise`) spawns, streams output within the caps, enforces the
//! deadline and kills the process group. When runs move into the bwrap
//! bottle (`shared/specs/bottle.md`) only the build step changes: it will
//! produce `bwrap … -- program args` and the supervisor stays as it is.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

/// The only search path a run gets; also where its program is looked up.
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Caller variables refused by exact name: they would change which code
/// runs (loader tricks) or override what the runner sets itself.
const DENIED_ENV: &[&str] = &["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME"];

/// Caller variables refused by prefix: every dynamic-loader knob, and our
/// own configuration (which may carry the token).
const DENIED_ENV_PREFIXES: &[&str] = &["LD_", "BYTEBOT_"];

/// How long output is still read after the deadline kill, for the bytes
/// already in the pipes. Bounded because a process that left the group
/// (setsid) may hold a pipe open forever.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Read size for each pipe.
const CHUNK: usize = 64 * 1024;

/// What to run, where, and within which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Program and arguments; the program is looked up on `SEARCH_PATH`
    /// unless it contains a `/`.
    pub argv: Vec<String>,
    /// The folder the run is confined to; also `HOME`.
    pub workspace: PathBuf,
    /// A folder inside the workspace to start in (relative); default the
    /// workspace itself.
    pub cwd: Option<String>,
    /// Extra environment variables from the caller (checked by `validate`).
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit; at the deadline the whole process group is killed.
    pub timeout: Duration,
    /// Bytes kept of stdout, and separately of stderr.
    pub max_output_bytes: usize,
    /// Address-space limit (RLIMIT_AS) in MiB.
    pub memory_mb: u64,
}

/// Which output pipe a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What a finished (or killed) run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// The exit code, if the program exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, if one did (9 after a timeout).
    pub signal: Option<i32>,
    /// True when the deadline passed and the process group was killed (also
    /// when the program had exited but something it started, outside its
    /// process group, still held the output pipes open).
    pub timed_out: bool,
    /// Standard output, at most `max_output_bytes`.
    pub stdout: Vec<u8>,
    /// Standard error, at most `max_output_bytes`.
    pub stderr: Vec<u8>,
    /// True when stdout had more than was kept.
    pub stdout_truncated: bool,
    /// True when stderr had more than was kept.
    pub stderr_truncated: bool,
    /// Wall time from spawn to the end of the run.
    pub duration_ms: u64,
}

/// Why a run was refused or could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `argv` is empty or holds something no program can receive.
    #[error(
        "argv is not usable: {reason}; pass the program and its arguments as a list of strings"
    )]
    BadArgv {
        /// What is wrong.
        reason: String,
    },
    /// `command` uses shell syntax that would mean something else without a shell.
    #[error(
        "command has the {what} {ch:?} at byte {offset}, but commands run without a shell; \
         pass `argv` instead, or drop the {what}"
    )]
    ShellSyntax {
        /// The offending character.
        ch: char,
        /// Its byte offset in the command.
        offset: usize,
        /// What the shell would have done with it.
        what: &'static str,
    },
    /// `command` cannot be split into words.
    #[error("command cannot be split into arguments: {reason}")]
    BadCommand {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// `cwd` is not a folder inside the workspace.
    #[error("cwd is not usable: {reason}")]
    BadCwd {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A caller-given environment variable is refused.
    #[error("env variable {name:?} is refused: {reason}")]
    BadEnv {
        /// The variable's name.
        name: String,
        /// Why, and what is allowed.
        reason: String,
    },
    /// A limit in the spec cannot be enforced.
    #[error("the {what} limit is not usable: {reason}")]
    BadLimit {
        /// Which limit.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The program does not exist.
    #[error(
        "program {program:?} was not found (searched {SEARCH_PATH} unless it contains a '/'); \
         install it or give its full path"
    )]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// The program exists but cannot be executed.
    #[error(
        "program {program:?} ({path}) is not an executable file; make it executable or run it through its interpreter"
    )]
    NotExecutable {
        /// The program as given.
        program: String,
        /// Where it was found.
        path: String,
    },
    /// The workspace itself is missing or unreadable (a server-side problem).
    #[error("the workspace {path} is not usable: {source}; check the gateway's workspace setting")]
    Workspace {
        /// The configured workspace.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused to start the program.
    #[error(
        "could not start the program: {0}; check that it is executable and that the working folder still exists"
    )]
    Spawn(#[source] io::Error),
    /// Waiting for the program failed.
    #[error("lost track of the running program: {0}")]
    Wait(#[source] io::Error),
}

impl RunError {
    /// The request field a caller should fix (for a 422), or `None` when the
    /// fault is on the server side (workspace, limits from the policy, spawn).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RunError::BadArgv { .. }
            | RunError::NotFound { .. }
            | RunError::NotExecutable { .. } => Some("argv"),
            RunError::ShellSyntax { .. } | RunError::BadCommand { .. } => Some("command"),
            RunError::BadCwd { .. } => Some("cwd"),
            RunError::BadEnv { .. } => Some("env"),
            RunError::BadLimit {
                what: "timeout", ..
            } => Some("timeout_s"),
            RunError::BadLimit { .. }
            | RunError::Workspace { .. }
            | RunError::Spawn(_)
            | RunError::Wait(_) => None,
        }
    }
}

/// A checked request: everything the build step needs, nothing left to
/// interpret.
#[derive(Debug)]
struct Prepared {
    /// The program's resolved path.
    program: PathBuf,
    /// argv as given (argv[0] is passed through unchanged).
    argv: Vec<String>,
    /// The canonical workspace.
    workspace: PathBuf,
    /// The canonical working folder, inside `workspace`.
    cwd: PathBuf,
    /// The complete environment of the run except TMPDIR (made at run time).
    env: BTreeMap<String, String>,
}

/// Checks argv/cwd/env without running anything (used at plan time so a bad
/// request gets 422 before approval). Returns the resolved cwd (absolute).
pub fn validate(spec: &RunSpec) -> Result<PathBuf, RunError> {
    prepare(spec).map(|p| p.cwd)
}

/// Runs it; `on_output` is called with each chunk as it arrives (for live
/// step.output events), already within the caps.
pub async fn run(
    spec: &RunSpec,
    on_output: impl FnMut(Stream, &[u8]) + Send,
) -> Result<RunOutput, RunError> {
    // Checked again here, not trusted from plan time: the workspace may have
    // changed since (a symlink planted by an earlier run).
    let mut prepared = prepare(spec)?;
    if let Some(tmp) = ensure_tmpdir(&prepared.workspace) {
        prepared
            .env
            .entry("TMPDIR".to_owned())
            .or_insert_with(|| tmp.to_string_lossy().into_owned());
    }
    tracing::debug!(program = %prepared.program.display(), cwd = %prepared.cwd.display(), "run: starting");
    let command = direct_command(&prepared, spec.memory_mb);
    supervise(command, spec.timeout, spec.max_output_bytes, on_output).await
}

/// Splits a `command` string into argv WITHOUT a shell: quotes and
/// backslashes like POSIX sh, but any shell operator (| & ; < > ( ) $ ` and
/// newlines outside quotes, also glob chars * ? [ outside quotes) is an
/// error naming the character and saying to pass `argv` or drop the operator.
pub fn split_command(command: &str) -> Result<Vec<String>, RunError> {
    // Written by hand on purpose: generic splitters (shlex, shell-words)
    // treat `|`, `;`, `$(…)` and globs as ordinary characters, so `a | b`
    // would quietly run `a` with the arguments "|" and "b". We refuse them
    // instead, with the character and where it is.
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let syntax = |ch, offset, what| RunError::ShellSyntax { ch, offset, what };
    let mut words = Vec::new();
    let mut word = String::new();
    // Distinguishes an empty quoted word ('') from no word at all.
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut chars = command.char_indices().peekable();
    while let Some((at, ch)) = chars.next() {
        match quote {
            Quote::None => match ch {
                ' ' | '\t' => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                '\'' => (quote, in_word) = (Quote::Single, true),
                '"' => (quote, in_word) = (Quote::Double, true),
                '\\' => match chars.next() {
                    None => {
                        return Err(RunError::BadCommand {
                            reason: "it ends with a lone backslash; remove it or escape it as \\\\"
                                .to_owned(),
                        });
                    }
                    // Backslash-newline is a line continuation in sh: removed.
                    Some((_, '\n')) => {}
                    Some((_, escaped)) => {
                        word.push(escaped);
                        in_word = true;
                    }
                },
                '|' | '&' | ';' | '<' | '>' | '(' | ')' | '\n' => {
                    return Err(syntax(ch, at, "shell operator"));
                }
                '$' | '`' => return Err(syntax(ch, at, "shell expansion")),
                '*' | '?' | '[' => return Err(syntax(ch, at, "glob character")),
                // Only special at the start of a word, as in sh.
                '#' if !in_word => return Err(syntax(ch, at, "comment character")),
                '~' if !in_word => return Err(syntax(ch, at, "home-folder expansion")),
                _ => {
                    word.push(ch);
                    in_word = true;
                }
            },
            Quote::Single => match ch {
                '\'' => quote = Quote::None,
                _ => word.push(ch),
            },
            Quote::Double => match ch {
                '"' => quote = Quote::None,
                // Inside double quotes sh still expands these.
                '$' | '`' => return Err(syntax(ch, at, "shell expansion")),
                // Inside double quotes a backslash escapes only $ ` " \ and newline.
                '\\' => match chars.peek().map(|&(_, next)| next) {
                    Some('\n') => {
                        chars.next();
                    }
                    Some(next @ ('$' | '`' | '"' | '\\')) => {
                        chars.next();
                        word.push(next);
                    }
                    _ => word.push('\\'),
                },
                _ => word.push(ch),
            },
        }
    }
    let unterminated = match quote {
        Quote::None => None,
        Quote::Single => Some("single"),
        Quote::Double => Some("double"),
    };
    if let Some(kind) = unterminated {
        return Err(RunError::BadCommand {
            reason: format!("a {kind} quote is never closed; close it or pass `argv` instead"),
        });
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(RunError::BadCommand {
            reason: "it is empty; give a program to run".to_owned(),
        });
    }
    Ok(words)
}

/// Checks everything in the spec and resolves paths and the program.
fn prepare(spec: &RunSpec) -> Result<Prepared, RunError> {
    check_limits(spec)?;
    check_argv(&spec.argv)?;
    let workspace = spec
        .workspace
        .canonicalize()
        .map_err(|source| RunError::Workspace {
            path: spec.workspace.display().to_string(),
            source,
        })?;
    let cwd = resolve_cwd(&workspace, spec.cwd.as_deref())?;
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), SEARCH_PATH.to_owned()),
        ("HOME".to_owned(), workspace.to_string_lossy().into_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ]);
    for (name, value) in &spec.env {
        check_env(name, value)?;
        env.insert(name.clone(), value.clone());
    }
    let program = resolve_program(&spec.argv[0], &cwd)?;
    Ok(Prepared {
        program,
        argv: spec.argv.clone(),
        workspace,
        cwd,
        env,
    })
}

fn check_limits(spec: &RunSpec) -> Result<(), RunError> {
    if spec.timeout.is_zero() {
        return Err(RunError::BadLimit {
            what: "timeout",
            reason: "it is zero; give at least one second".to_owned(),
        });
    }
    if spec.memory_mb == 0 {
        return Err(RunError::BadLimit {
            what: "memory",
            reason: "it is zero MiB; set the policy's run memory limit".to_owned(),
        });
    }
    Ok(())
}

fn check_argv(argv: &[String]) -> Result<(), RunError> {
    let Some(program) = argv.first() else {
        return Err(RunError::BadArgv {
            reason: "it is empty".to_owned(),
        });
    };
    if program.is_empty() {
        return Err(RunError::BadArgv {
            reason: "the program (argv[0]) is an empty string".to_owned(),
        });
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(RunError::BadArgv {
            reason: format!("argv[{i}] contains a NUL byte, which no program can receive"),
        });
    }
    Ok(())
}

/// The working folder: the workspace, or a relative folder inside it that
/// stays inside it after every symlink is resolved.
fn resolve_cwd(workspace: &Path, cwd: Option<&str>) -> Result<PathBuf, RunError> {
    let bad = |reason: String| RunError::BadCwd { reason };
    let Some(cwd) = cwd.filter(|c| !c.is_empty()) else {
        return Ok(workspace.to_path_buf());
    };
    if cwd.contains('\0') {
        return Err(bad("it contains a NUL byte".to_owned()));
    }
    let relative = Path::new(cwd);
    if relative.has_root() {
        return Err(bad(format!(
            "{cwd:?} is absolute; give a folder relative to the workspace (drop the leading '/')"
        )));
    }
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!(
            "{cwd:?} contains '..'; give a folder inside the workspace without '..'"
        )));
    }
    let resolved = workspace.join(relative).canonicalize().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            bad(format!(
                "{cwd:?} does not exist in the workspace; create it first or leave cwd out"
            ))
        } else {
            bad(format!("{cwd:?} cannot be resolved: {e}"))
        }
    })?;
    // The canonical path has every symlink resolved, so a link pointing out
    // of the workspace shows up here as a path outside it.
    if !resolved.starts_with(workspace) {
        return Err(bad(format!(
            "{cwd:?} leads outside the workspace through a symlink; use a real folder inside it"
        )));
    }
    if !resolved.is_dir() {
        return Err(bad(format!("{cwd:?} is not a folder")));
    }
    Ok(resolved)
}

fn check_env(name: &str, value: &str) -> Result<(), RunError> {
    let bad = |reason: &str| RunError::BadEnv {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(bad(
            "names must match ^[A-Z_][A-Z0-9_]*$ (upper-case letters, digits, underscores)",
        ));
    }
    if DENIED_ENV.contains(&name) || DENIED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(bad(
            "PATH, HOME, LD_* and BYTEBOT_* are set by the gateway or never passed; drop it",
        ));
    }
    if value.contains('\0') {
        return Err(bad("the value contains a NUL byte; remove it"));
    }
    Ok(())
}

/// Finds the program: as given when it contains a '/' (relative to the
/// working folder), else on `SEARCH_PATH` like execvp would.
fn resolve_program(program: &str, cwd: &Path) -> Result<PathBuf, RunError> {
    let not_found = || RunError::NotFound {
        program: program.to_owned(),
    };
    if program.contains('/') {
        // `join` keeps an absolute program as it is.
        let path = cwd.join(program);
        let meta = std::fs::metadata(&path).map_err(|_| not_found())?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(path);
        }
        return Err(RunError::NotExecutable {
            program: program.to_owned(),
            path: path.display().to_string(),
        });
    }
    SEARCH_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(not_found)
}

/// Makes `<workspace>/.tmp` for TMPDIR. `None` when it cannot be made or is
/// not a real folder (a symlink planted there must not send temp files out).
fn ensure_tmpdir(workspace: &Path) -> Option<PathBuf> {
    let dir = workspace.join(".tmp");
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            tracing::debug!(error = %e, "run: no TMPDIR, cannot create .tmp in the workspace");
            return None;
        }
    }
    let is_real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_dir());
    is_real_dir.then_some(dir)
}

/// The build step for running directly on the host (until the bottle):
/// program, argv, working folder, environment and the memory limit.
/// Supervision settings (pipes, process group) are added by `supervise`.
fn direct_command(prepared: &Prepared, memory_mb: u64) -> Command {
    let mut command = Command::new(&prepared.program);
    command
        .arg0(&prepared.argv[0])
        .args(&prepared.argv[1..])
        .current_dir(&prepared.cwd)
        .env_clear()
        .envs(&prepared.env);
    let bytes = memory_mb.saturating_mul(1024 * 1024);
    let bytes = libc::rlim_t::try_from(bytes).unwrap_or(libc::RLIM_INFINITY);
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    let set_memory_limit = move || {
        // SAFETY: setrlimit reads the `rlimit` we pass by reference and
        // nothing else; `limit` is a plain copy owned by this closure.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe work is allowed. It makes one setrlimit call and
    // builds an io::Error from errno on failure; neither allocates nor takes
    // a lock.
    unsafe {
        command.pre_exec(set_memory_limit);
    }
    command
}

/// Bytes kept from one pipe, up to the cap.
struct Capture {
    kept: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Capture {
            kept: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Keeps what fits of `chunk` and returns that part.
    fn accept<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = room.min(chunk.len());
        if take < chunk.len() {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&chunk[..take]);
        &chunk[..take]
    }
}

/// Kills the run's process group when told to, and when dropped (so a
/// cancelled run leaves nothing behind), until disarmed.
struct GroupKiller {
    pgid: Option<libc::pid_t>,
}

impl GroupKiller {
    fn new(pid: Option<u32>) -> Self {
        // Never 0 or 1: kill(-0) would hit our own group and kill(-1)
        // everything we may signal.
        let pgid = pid
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .filter(|&p| p > 1);
        GroupKiller { pgid }
    }

    fn kill(&self) {
        let Some(pgid) = self.pgid else { return };
        // SAFETY: kill(2) takes two integers and touches no memory of ours;
        // the negative pid addresses the process group the child leads.
        let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if rc != 0 {
            // ESRCH (group already gone) is the usual and harmless case.
            tracing::trace!(pgid, error = %io::Error::last_os_error(), "run: kill group");
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the next chunk from a pipe that is still open. Only polled while
/// `pipe` is `Some`.
async fn read_chunk<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(reader) => reader.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Keeps what fits of a chunk and passes that part on.
fn take_chunk(
    read: io::Result<usize>,
    buf: &[u8],
    capture: &mut Capture,
    stream: Stream,
    on_output: &mut impl FnMut(Stream, &[u8]),
) -> bool {
    match read {
        Ok(0) => false,
        Ok(n) => {
            let kept = capture.accept(&buf[..n]);
            if !kept.is_empty() {
                on_output(stream, kept);
            }
            true
        }
        Err(e) => {
            tracing::warn!(?stream, error = %e, "run: reading output failed; treating it as closed");
            false
        }
    }
}

/// The supervise step: spawns `command` as a process-group leader with
/// stdin closed and both outputs piped, streams output within the caps, and
/// kills the group at the deadline. When the program exits, whatever it left
/// running in its group is killed too (the bottle's pid namespace will do
/// the same), so a backgrounded child neither outlives the run nor keeps the
/// pipes open.
async fn supervise(
    mut command: Command,
    timeout: Duration,
    max_output_bytes: usize,
    mut on_output: impl FnMut(Stream, &[u8]) + Send,
) -> Result<RunOutput, RunError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let mut killer = GroupKiller::new(child.id());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Capture::new(max_output_bytes);
    let mut err = Capture::new(max_output_bytes);
    let mut out_buf = vec![0u8; CHUNK];
    let mut err_buf = vec![0u8; CHUNK];
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut status = None;
    let mut timed_out = false;

    while status.is_none() || stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_chunk(&mut stdout, &mut out_buf), if stdout.is_some() => {
                if !take_chunk(read, &out_buf, &mut out, Stream::Stdout, &mut on_output) {
                    stdout = None;
                }
            }
            read = read_chunk(&mut stderr, &mut err_buf), if stderr.is_some() => {
                if !take_chunk(read, &err_buf, &mut err, Stream::Stderr, &mut on_output) {
                    stderr = None;
                }
            }
            exited = child.wait(), if status.is_none() => {
                status = Some(exited.map_err(RunError::Wait)?);
                // The leader is reaped; its pid stays reserved while any
                // group member lives, so this reaches only its leftovers.
                killer.kill();
            }
            () = &mut deadline => {
                if timed_out {
                    // The grace for draining is over too.
                    break;
                }
                timed_out = true;
                // The leader is not reaped yet, so the group id is still ours.
                killer.kill();
                deadline.as_mut().reset(Instant::now() + DRAIN_GRACE);
            }
        }
    }
    let status = match status {
        Some(status) => status,
        // Only after a timeout: the leader got SIGKILL, so this is prompt.
        None => child.wait().await.map_err(RunError::Wait)?,
    };
    killer.disarm();
    Ok(RunOutput {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: out.kept,
        stderr: err.kept,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn split(command: &str) -> Vec<String> {
        split_command(command).unwrap()
    }

    fn refused(command: &str) -> (char, usize) {
        match split_command(command) {
            Err(RunError::ShellSyntax { ch, offset, .. }) => (ch, offset),
            other => panic!("{command:?}: expected ShellSyntax, got {other:?}"),
        }
    }

    #[test]
    fn split_plain_words_and_blanks() {
        assert_eq!(split("ls -la  /tmp\tx"), ["ls", "-la", "/tmp", "x"]);
        assert_eq!(split("  echo  "), ["echo"]);
    }

    #[test]
    fn split_quotes() {
        assert_eq!(split("echo 'a b' \"c d\""), ["echo", "a b", "c d"]);
        assert_eq!(split("echo a'b c'd"), ["echo", "ab cd"]);
        assert_eq!(split("echo '' \"\""), ["echo", "", ""]);
        // Inside quotes operators and globs are plain text.
        assert_eq!(
            split("grep 'a|b;c&d>e<f(g)h*i?j[k' \"x|y*z;\" '$HOME' '`x`'"),
            ["grep", "a|b;c&d>e<f(g)h*i?j[k", "x|y*z;", "$HOME", "`x`"]
        );
        assert_eq!(split("echo 'it''s'"), ["echo", "its"]);
        assert_eq!(split("echo \"it's\""), ["echo", "it's"]);
        assert_eq!(split("echo 'a\nb'"), ["echo", "a\nb"]);
    }

    #[test]
    fn split_backslashes() {
        assert_eq!(split(r"echo a\ b"), ["echo", "a b"]);
        assert_eq!(
            split(r"echo \| \; \* \$x \\"),
            ["echo", "|", ";", "*", "$x", "\\"]
        );
        // Inside single quotes a backslash is literal.
        assert_eq!(split(r"echo 'a\b'"), ["echo", r"a\b"]);
        // Inside double quotes it escapes only $ ` " \ and newline.
        assert_eq!(
            split(r#"echo "a\"b" "\$x" "\\" "\n" "\`""#),
            ["echo", "a\"b", "$x", "\\", "\\n", "`"]
        );
        // Backslash-newline is a continuation, outside and inside double quotes.
        assert_eq!(split("echo a\\\nb \"c\\\nd\""), ["echo", "ab", "cd"]);
        assert_eq!(split(r"echo \'"), ["echo", "'"]);
    }

    #[test]
    fn split_refuses_every_operator_outside_quotes() {
        for op in [
            '|', '&', ';', '<', '>', '(', ')', '$', '`', '\n', '*', '?', '[',
        ] {
            let command = format!("echo a{op}b");
            assert_eq!(refused(&command), (op, 6), "{command:?}");
            let err = split_command(&command).unwrap_err().to_string();
            assert!(err.contains(&format!("{op:?}")), "{err}");
            assert!(err.contains("argv"), "{err}");
        }
        assert_eq!(refused("ls | wc -l"), ('|', 3));
        assert_eq!(refused("a && b"), ('&', 2));
        assert_eq!(refused("echo $(id)"), ('$', 5));
        assert_eq!(refused("cat < x"), ('<', 4));
        assert_eq!(refused("ls *.rs"), ('*', 3));
    }

    #[test]
    fn split_refuses_expansions_inside_double_quotes() {
        assert_eq!(refused("echo \"$HOME\""), ('$', 6));
        assert_eq!(refused("echo \"`id`\""), ('`', 6));
    }

    #[test]
    fn split_refuses_comment_and_tilde_only_at_word_start() {
        assert_eq!(refused("echo # note"), ('#', 5));
        assert_eq!(refused("ls ~/x"), ('~', 3));
        assert_eq!(split("echo a#b HEAD~1"), ["echo", "a#b", "HEAD~1"]);
    }

    #[test]
    fn split_refuses_empty_and_unterminated() {
        for command in ["", "   ", "\t"] {
            assert!(
                matches!(split_command(command), Err(RunError::BadCommand { .. })),
                "{command:?}"
            );
        }
        for command in ["echo 'abc", "echo \"abc", "echo abc\\", "echo \"a\\\""] {
            let err = split_command(command).unwrap_err();
            assert!(
                matches!(err, RunError::BadCommand { .. }),
                "{command:?}: {err}"
            );
            assert_eq!(err.field(), Some("command"));
        }
    }

    #[test]
    fn env_names_are_checked() {
        for good in ["FOO", "_X", "A1_B2", "LANG", "TMPDIR"] {
            assert!(check_env(good, "v").is_ok(), "{good}");
        }
        for bad in [
            "",
            "foo",
            "Foo",
            "1A",
            "A-B",
            "A B",
            "PATH",
            "HOME",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "BYTEBOT_TOKEN",
        ] {
            match check_env(bad, "v") {
                Err(RunError::BadEnv { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(check_env("FOO", "a\0b").is_err());
    }

    #[test]
    fn capture_keeps_up_to_the_cap() {
        let mut capture = Capture::new(5);
        assert_eq!(capture.accept(b"abc"), b"abc");
        assert_eq!(capture.accept(b"defg"), b"de");
        assert_eq!(capture.accept(b"h"), b"");
        assert_eq!(capture.kept, b"abcde");
        assert!(capture.truncated);
        let mut exact = Capture::new(3);
        exact.accept(b"abc");
        assert!(!exact.truncated);
    }
}
