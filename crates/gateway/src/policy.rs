//! The gateway policy: what each profile of callers may do. Deny by default.
//!
//! The policy lives in `config/policy.json` (see `docs/policy.md`). Every field
//! is optional, and a missing field denies: no intents, no apps, no hosts, no
//! files, no programs. A file that does not parse, names an unknown field, or
//! holds a value that cannot be right stops the gateway with the file, line,
//! column, JSON path and reason; nothing ever falls back to "allow".
//!
//! ```json
//! {
//!   "profiles": {
//!     "default": {
//!       "intents": ["screenshot", "open_app", "browse", "edit_file", "run", "task"],
//!       "apps": ["firefox", "terminal"],
//!       "browse": { "allow": ["example.com", "*.wikipedia.org"], "deny": ["*.internal"] },
//!       "files": { "read": ["**"], "write": ["notes/**", "*.md"], "max_bytes": 1048576 },
//!       "run": { "programs": ["echo", "ls", "python3"], "timeout_s": 30, "max_timeout_s": 120,
//!                "memory_mb": 512, "max_output_bytes": 1048576, "processes": 256,
//!                "network": ["pypi.org", "*.pythonhosted.org"], "network_private": [] },
//!       "auto_approve": ["low"],
//!       "rate_limit": { "per_minute": 600, "burst": 100 },
//!       "approver": false
//!     }
//!   }
//! }
//! ```
//!
//! - `profiles`: name → profile; names use letters, digits, `_` and `-`.
//! - `intents`: of `screenshot`, `open_app`, `browse`, `edit_file`, `run`, `task`.
//! - `apps`: names for `open_app`, compared case-insensitively.
//! - `browse.allow` / `browse.deny`: host patterns — `example.com` (exactly that
//!   host), `*.example.com` (hosts below it, not `example.com` itself), or an IP
//!   address (only that address; IP hosts match nothing else). Deny wins. A bare
//!   `*`, a scheme, port or path is an error.
//! - `files.read` / `files.write`: globs over workspace-relative paths; `*` does
//!   not cross `/`, `**` does. `files.max_bytes` (default 10 MiB) caps a write.
//! - `run.programs`: bare program names, or absolute paths that must then be
//!   asked for exactly. Every run executes in the bottle (a bubblewrap sandbox)
//!   with these limits: `timeout_s` (30) ≤ `max_timeout_s` (300), `memory_mb`
//!   (1024), `max_output_bytes` (1 MiB, stdout and stderr each), `processes`
//!   (256, at most 32768). `network`: host patterns the run may reach through
//!   the bottle's egress proxy (none by default: no network and no proxy at
//!   all); the bottle's pattern rules apply (no `*.tld`). `network_private`:
//!   those of them (or IP addresses) that may resolve to loopback, private or
//!   link-local addresses, which the proxy refuses otherwise. Limits must be
//!   positive.
//! - `auto_approve`: risks (`low`, `medium`, `high`) that run without a person's
//!   approval (none by default).
//! - `rate_limit`: `per_minute` (600) and `burst` (100) per key, both positive.
//! - `approver`: whether callers with this profile may approve plans (false).

mod hosts;
mod locate;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use globset::GlobSet;

pub use hosts::HostPattern;

use crate::plan::Risk;

/// The intent names a policy may list (the gateway's intents).
pub use crate::intents::INTENTS;

/// A checked policy: profiles by name.
#[derive(Debug, Clone)]
pub struct Policy {
    profiles: BTreeMap<String, Profile>,
}

impl Policy {
    /// The built-in policy, written to `config/policy.json` on first start:
    /// profile `default` (screenshots, a few apps, a short list of sites,
    /// files in the workspace, a few harmless programs, everything approved
    /// by a person) and `admin` (the same, and may approve plans).
    pub const DEFAULT_JSON: &'static str = include_str!("../../../config/policy.json");

    /// Parses and checks a policy; `source` names the text in errors
    /// (usually the file path).
    pub fn from_json(text: &str, source: &str) -> Result<Policy, PolicyError> {
        parse::parse(text, source)
    }

    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "; create it (docs/policy.md has a complete example)"
            } else {
                ""
            };
            PolicyError {
                source: source.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                reason: format!("cannot read the policy file: {e}{hint}"),
            }
        })?;
        Policy::from_json(&text, &source)
    }

    /// The profile called `name`, if the policy has one.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// The profile names, sorted.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}

/// Why a policy could not be used, and where in the file. Displays as
/// `file:line:column: path: reason`.
// Display and Error are written out: thiserror would take the `source` field
// for the underlying error, and here it is a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or other source) the policy came from.
    pub source: String,
    /// 1-based line of the problem; 0 when it is not about the text (I/O).
    pub line: usize,
    /// 1-based column (in characters) of the problem; 0 with `line` 0.
    pub column: usize,
    /// JSON path of the offending value, e.g. `profiles.default.browse.allow[1]`;
    /// empty when the problem is with the whole text.
    pub path: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for PolicyError {}

/// A refusal: which rule refused and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("denied by {rule}: {reason}")]
pub struct Denied {
    /// JSON path of the rule that refused, e.g. `profiles.default.browse.deny[0]`
    /// or `profiles.default.intents` (when the thing was not listed).
    pub rule: String,
    /// What was refused and how to allow it.
    pub reason: String,
}

/// Whether a path is to be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading a file.
    Read,
    /// Creating or changing a file.
    Write,
}

/// What one profile of callers may do.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name (its key under `profiles`).
    pub name: String,
    /// Allowed intents (names from [`INTENTS`]).
    pub intents: Vec<String>,
    /// Apps `open_app` may start, as written (compared case-insensitively).
    pub apps: Vec<String>,
    /// Hosts `browse` may open.
    pub browse: BrowseRules,
    /// Workspace paths that may be read and written, and the size cap.
    pub files: FileRules,
    /// Programs `run` may start, and the bottle's limits.
    pub run: RunRules,
    /// Risks that need no person's approval.
    pub auto_approve: Vec<Risk>,
    /// Requests allowed per key.
    pub rate_limit: RateLimit,
    /// Whether callers with this profile may approve plans.
    pub approver: bool,
}

/// Browse host lists; deny wins over allow.
#[derive(Debug, Clone)]
pub struct BrowseRules {
    /// Hosts that may be opened.
    pub allow: Vec<HostPattern>,
    /// Hosts that may not be opened even if allowed.
    pub deny: Vec<HostPattern>,
}

/// File globs (workspace-relative) and the size cap.
#[derive(Debug, Clone)]
pub struct FileRules {
    /// Paths that may be read.
    pub read: PathGlobs,
    /// Paths that may be written.
    pub write: PathGlobs,
    /// Largest file that may be written, in bytes.
    pub max_bytes: u64,
}

/// A list of globs as written, and the compiled matcher.
#[derive(Debug, Clone)]
pub struct PathGlobs {
    /// The globs as written in the policy.
    pub patterns: Vec<String>,
    set: GlobSet,
}

impl PathGlobs {
    /// Whether any glob matches the workspace-relative path.
    pub fn is_match(&self, rel_path: &str) -> bool {
        self.set.is_match(rel_path)
    }
}

/// What `run` may start, and the limits of the bottle it runs in.
#[derive(Debug, Clone)]
pub struct RunRules {
    /// Bare program names, or absolute paths that must be asked for exactly.
    pub programs: Vec<String>,
    /// Time limit when the caller names none, in seconds.
    pub timeout_s: u64,
    /// Largest time limit a caller may ask for, in seconds.
    pub max_timeout_s: u64,
    /// Memory limit, in MiB.
    pub memory_mb: u64,
    /// Most output (stdout and stderr each) kept, in bytes.
    pub max_output_bytes: u64,
    /// Processes and threads a run may have at once.
    pub processes: u32,
    /// Hosts the bottle may reach; empty means no network.
    pub network: Vec<HostPattern>,
    /// Of those hosts (or IP addresses), the ones that may resolve to loopback, private or
    /// link-local addresses.
    pub network_private: Vec<HostPattern>,
}

/// The limits a `run` gets, as the bottle needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLimits {
    /// Time limit when the caller names none, in seconds.
    pub timeout_s: u64,
    /// Largest time limit a caller may ask for, in seconds.
    pub max_timeout_s: u64,
    /// Memory limit, in MiB.
    pub memory_mb: u64,
    /// Most output kept, in bytes.
    pub max_output_bytes: u64,
    /// Processes and threads a run may have at once.
    pub processes: u32,
    /// Host patterns the bottle may reach (`example.com`, `*.example.com`, an IP).
    pub network: Vec<String>,
    /// Host patterns (or IPs) that may resolve to non-public addresses.
    pub network_private: Vec<String>,
}

/// Requests allowed per key: a steady rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per minute, sustained.
    pub per_minute: u32,
    /// Requests allowed at once above the steady rate.
    pub burst: u32,
}

impl Profile {
    fn rule(&self, field: &str) -> String {
        format!("profiles.{}.{field}", self.name)
    }

    /// Whether the profile may use `intent`.
    pub fn check_intent(&self, intent: &str) -> Result<(), Denied> {
        let rule = self.rule("intents");
        if !INTENTS.contains(&intent) {
            return Err(Denied {
                reason: format!(
                    "{intent:?} is not an intent; the intents are {}",
                    INTENTS.join(", ")
                ),
                rule,
            });
        }
        if self.intents.iter().any(|i| i == intent) {
            return Ok(());
        }
        Err(Denied {
            reason: format!("the intent {intent:?} is not allowed; add it to {rule} to allow it"),
            rule,
        })
    }

    /// Whether `open_app` may start `app` (exact name, any case).
    pub fn check_app(&self, app: &str) -> Result<(), Denied> {
        let wanted = app.to_lowercase();
        if self.apps.iter().any(|a| a.to_lowercase() == wanted) {
            return Ok(());
        }
        let rule = self.rule("apps");
        Err(Denied {
            reason: format!("the app {app:?} is not allowed; add it to {rule} to allow it"),
            rule,
        })
    }

    /// Whether `browse` may open `host`. Deny patterns win over allow patterns.
    pub fn check_host(&self, host: &str) -> Result<(), Denied> {
        let normal = hosts::normalise_host(host).map_err(|reason| Denied {
            rule: self.rule("browse"),
            reason,
        })?;
        if let Some(i) = self.browse.deny.iter().position(|p| p.matches(&normal)) {
            let rule = format!("{}[{i}]", self.rule("browse.deny"));
            return Err(Denied {
                reason: format!(
                    "the host {host:?} matches the deny pattern \"{}\"; remove that pattern \
                     from the deny list to allow it",
                    self.browse.deny[i]
                ),
                rule,
            });
        }
        if self.browse.allow.iter().any(|p| p.matches(&normal)) {
            return Ok(());
        }
        let rule = self.rule("browse.allow");
        Err(Denied {
            reason: format!("the host {host:?} is not allowed; add it to {rule} to allow it"),
            rule,
        })
    }

    /// Whether a workspace-relative, already normalised path may be read or
    /// written. Paths that are absolute or contain `..` are refused outright.
    pub fn check_path(&self, rel_path: &str, access: Access) -> Result<(), Denied> {
        let (globs, rule, verb) = match access {
            Access::Read => (&self.files.read, self.rule("files.read"), "reading"),
            Access::Write => (&self.files.write, self.rule("files.write"), "writing"),
        };
        // The caller normalises, but a path that could leave the workspace is
        // refused here too rather than trusted to the globs.
        if rel_path.is_empty()
            || rel_path.starts_with('/')
            || rel_path.split('/').any(|part| part == "..")
        {
            return Err(Denied {
                reason: format!(
                    "{verb} {rel_path:?} is refused: give a path inside the workspace, \
                     relative to it and without \"..\""
                ),
                rule,
            });
        }
        if globs.is_match(rel_path) {
            return Ok(());
        }
        Err(Denied {
            reason: format!(
                "{verb} {rel_path:?} is not allowed; add a glob matching it \
                 (e.g. {rel_path:?}) to {rule} to allow it"
            ),
            rule,
        })
    }

    /// Whether `run` may start `program`: its exact name as listed. A program
    /// given with a `/` is allowed only if that exact path is listed.
    pub fn check_program(&self, program: &str) -> Result<(), Denied> {
        if !program.is_empty() && self.run.programs.iter().any(|p| p == program) {
            return Ok(());
        }
        let rule = self.rule("run.programs");
        let reason = match program.rsplit_once('/') {
            Some((_, name)) if !name.is_empty() => format!(
                "the program {program:?} is given with a path and that path is not listed; \
                 ask for it by its bare name ({name:?}) if that is listed, or add {program:?} \
                 to {rule} to allow it"
            ),
            _ => format!("the program {program:?} is not allowed; add it to {rule} to allow it"),
        };
        Err(Denied { rule, reason })
    }

    /// Whether a file of `bytes` bytes may be written.
    pub fn check_file_size(&self, bytes: u64) -> Result<(), Denied> {
        if bytes <= self.files.max_bytes {
            return Ok(());
        }
        let rule = self.rule("files.max_bytes");
        Err(Denied {
            reason: format!(
                "{bytes} bytes is over the limit of {} bytes; raise {rule} to allow it",
                self.files.max_bytes
            ),
            rule,
        })
    }

    /// The limits for a `run`.
    pub fn run_limits(&self) -> RunLimits {
        RunLimits {
            timeout_s: self.run.timeout_s,
            max_timeout_s: self.run.max_timeout_s,
            memory_mb: self.run.memory_mb,
            max_output_bytes: self.run.max_output_bytes,
            processes: self.run.processes,
            network: self.run.network.iter().map(ToString::to_string).collect(),
            network_private: self
                .run
                .network_private
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Whether a plan of this risk needs a person's approval: true unless the
    /// risk is listed in `auto_approve`.
    pub fn needs_approval(&self, risk: Risk) -> bool {
        !self.auto_approve.contains(&risk)
    }

    /// The capability names this profile has, as `GET /capabilities` lists them.
    pub fn caps(&self) -> Vec<&'static str> {
        let has = |intent: &str| self.intents.iter().any(|i| i == intent);
        let mut caps = Vec::new();
        if has("screenshot") {
            caps.push("screenshot");
        }
        if has("open_app") {
            caps.push("app.open");
        }
        if has("browse") {
            caps.push("browser");
        }
        if has("edit_file") && !self.files.read.patterns.is_empty() {
            caps.push("fs.read");
        }
        if has("edit_file") && !self.files.write.patterns.is_empty() {
            caps.push("fs.write");
        }
        if has("run") {
            caps.push("shell");
        }
        if has("task") {
            caps.push("agent");
        }
        caps
    }

    /// The per-key rate limit.
    pub fn rate_limit(&self) -> RateLimit {
        self.rate_limit
    }

    /// Whether callers with this profile may approve plans.
    pub fn is_approver(&self) -> bool {
        self.approver
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}
