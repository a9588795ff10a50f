//! The `run` intent's request side: one program, argv only (never a shell),
//! checked before anything runs. `split_command` turns a command line into
//! argv without a shell; `validate` checks argv, the working folder (confined
//! to the workspace), the caller's environment variables and the limits, at
//! plan time (a bad request gets 422 before approval) and again right before
//! the run (the workspace may have changed since).
//!
//! Running is the bottle's job (`crate::bottle`): every run executes in a
//! bubblewrap sandbox under the caller's profile; there is no other runner.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytebot_bottle::sandbox::DEFAULT_PATH;

/// Caller variables refused by exact name: they would change which code
/// runs (loader tricks) or override what the bottle sets itself.
const DENIED_ENV: &[&str] = &["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME"];

/// Caller variables refused by prefix: every dynamic-loader knob, and our
/// own configuration (which may carry the token).
const DENIED_ENV_PREFIXES: &[&str] = &["LD_", "BYTEBOT_"];

/// Host folders the bottle shows read-only at the same place; an absolute
/// program anywhere else on the host does not exist inside the sandbox.
const SANDBOX_SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"];

/// What to run, where, and within which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Program and arguments; the program is looked up on the sandbox's
    /// `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// The host folder the run is confined to (`/workspace` in the sandbox).
    pub workspace: PathBuf,
    /// A folder inside the workspace to start in (relative); default the
    /// workspace itself.
    pub cwd: Option<String>,
    /// Extra environment variables from the caller (checked by `validate`).
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit; at the deadline the whole sandbox is killed.
    pub timeout: Duration,
    /// Bytes kept of stdout, and separately of stderr.
    pub max_output_bytes: usize,
    /// Memory limit of the whole run, in MiB.
    pub memory_mb: u64,
    /// Processes and threads the run may have at once.
    pub processes: u32,
    /// What the run may reach on the network.
    pub network: NetworkRules,
}

/// The hosts a run may reach through the bottle's egress proxy. Empty `allow`:
/// no network at all, and no proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRules {
    /// Host patterns (`example.com`, `*.example.com`, an IP address).
    pub allow: Vec<String>,
    /// Of those (or IP addresses), the ones that may resolve to loopback,
    /// private or link-local addresses.
    pub private: Vec<String>,
}

impl NetworkRules {
    /// Exactly what the run may reach, in words, for the person approving the
    /// plan.
    pub fn describe(&self) -> String {
        if self.allow.is_empty() {
            return "none: the sandbox has no network at all (only its own loopback), no proxy"
                .to_string();
        }
        let mut text = format!(
            "only through the bottle's egress proxy (HTTP and HTTPS) to {}; every other host is \
             refused with 403; each request is audited",
            self.allow.join(", ")
        );
        if self.private.is_empty() {
            text.push_str("; loopback, private and link-local addresses are refused");
        } else {
            text.push_str(&format!(
                "; loopback, private and link-local addresses only for {}",
                self.private.join(", ")
            ));
        }
        text
    }
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
        "program {program:?} was not found (searched {DEFAULT_PATH} unless it contains a '/'); \
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
    /// An absolute program outside what the sandbox shows of the host.
    #[error(
        "program {program:?} is outside the folders the bottle shows (/usr, /bin, /sbin, /lib* \
         and the workspace); ask for a program from those, or put it in the workspace and give \
         its path relative to the working folder"
    )]
    OutsideSandbox {
        /// The program as given.
        program: String,
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
    /// The bottle cannot run anything on this host (bubblewrap or user
    /// namespaces missing, no sandbox init configured).
    #[error("{0}")]
    Unavailable(String),
    /// The bottle could not carry out this run (sandbox setup, proxy,
    /// workspace snapshot); nothing ran, or the run was cut short.
    #[error("the bottle could not run the program: {0}")]
    Sandbox(String),
}

impl RunError {
    /// The request field a caller should fix (for a 422), or `None` when the
    /// fault is on the server side (workspace, limits from the policy, the
    /// bottle).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RunError::BadArgv { .. }
            | RunError::NotFound { .. }
            | RunError::NotExecutable { .. }
            | RunError::OutsideSandbox { .. } => Some("argv"),
            RunError::ShellSyntax { .. } | RunError::BadCommand { .. } => Some("command"),
            RunError::BadCwd { .. } => Some("cwd"),
            RunError::BadEnv { .. } => Some("env"),
            RunError::BadLimit {
                what: "timeout", ..
            } => Some("timeout_s"),
            RunError::BadLimit { .. }
            | RunError::Workspace { .. }
            | RunError::Unavailable(_)
            | RunError::Sandbox(_) => None,
        }
    }
}

/// A checked request: what the bottle needs, nothing left to interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The canonical workspace.
    pub workspace: PathBuf,
    /// The working folder relative to `workspace`, links resolved (empty for
    /// the workspace itself).
    pub cwd: PathBuf,
    /// The run's environment besides what the bottle sets itself (`PATH`,
    /// `HOME`, `PWD`, proxy variables): `LANG` and the caller's variables.
    pub env: BTreeMap<String, String>,
}

/// Checks argv/cwd/env/limits without running anything (used at plan time so
/// a bad request gets 422 before approval). Returns the resolved cwd on the
/// host (absolute).
pub fn validate(spec: &RunSpec) -> Result<PathBuf, RunError> {
    check(spec).map(|c| c.workspace.join(c.cwd))
}

/// Checks everything in the spec and resolves the working folder and the
/// program, as the bottle does again right before it runs.
pub fn check(spec: &RunSpec) -> Result<Checked, RunError> {
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
    let mut env = BTreeMap::from([("LANG".to_owned(), "C.UTF-8".to_owned())]);
    for (name, value) in &spec.env {
        check_env(name, value)?;
        env.insert(name.clone(), value.clone());
    }
    resolve_program(&spec.argv[0], &cwd, &workspace)?;
    let cwd = cwd
        .strip_prefix(&workspace)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(Checked {
        workspace,
        cwd,
        env,
    })
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
    if spec.processes == 0 {
        return Err(RunError::BadLimit {
            what: "process",
            reason: "it is zero; set the policy's run processes limit".to_owned(),
        });
    }
    if spec.max_output_bytes == 0 {
        return Err(RunError::BadLimit {
            what: "output",
            reason: "it is zero bytes; set the policy's run max_output_bytes".to_owned(),
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

/// Finds the program as the sandbox will: as given when it contains a '/'
/// (relative to the working folder), else on the sandbox's `PATH` like execvp
/// would. What it finds must be somewhere the sandbox shows: the system
/// folders, or the workspace.
fn resolve_program(program: &str, cwd: &Path, workspace: &Path) -> Result<PathBuf, RunError> {
    let not_found = || RunError::NotFound {
        program: program.to_owned(),
    };
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = if program.contains('/') {
        // `join` keeps an absolute program as it is.
        let path = cwd.join(program);
        std::fs::metadata(&path).map_err(|_| not_found())?;
        if !executable(&path) {
            return Err(RunError::NotExecutable {
                program: program.to_owned(),
                path: path.display().to_string(),
            });
        }
        path
    } else {
        DEFAULT_PATH
            .split(':')
            .map(|dir| Path::new(dir).join(program))
            .find(|path| executable(path))
            .ok_or_else(not_found)?
    };
    // In the sandbox the workspace sits at /workspace, so an absolute program
    // must name a system folder; wherever a link leads, it must be one the
    // sandbox shows too.
    let in_system = |p: &Path| SANDBOX_SYSTEM_DIRS.iter().any(|dir| p.starts_with(dir));
    let real = path.canonicalize().map_err(|_| not_found())?;
    let named_ok = !program.starts_with('/') || in_system(&path);
    if !named_ok || !(in_system(&real) || real.starts_with(workspace)) {
        return Err(RunError::OutsideSandbox {
            program: program.to_owned(),
        });
    }
    Ok(path)
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
}
