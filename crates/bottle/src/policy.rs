//! The bottle's policy file: which hosts a run may reach, which secrets the proxy holds for it
//! (and for which hosts), the environment handed in, the limits and the extra read-only paths.
//!
//! A policy is JSON, parsed strictly (`deny_unknown_fields` everywhere) and then validated as a
//! whole, so a typo or a rule that would quietly open everything is refused at load with the
//! field and the reason, never discovered during a run. Secrets are read on the host side only
//! ([`ResolvedSecrets::resolve`]); the sandbox sees per-run placeholders shaped like them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The JSON of the built-in `default` profile: no network at all.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../../../config/bottle/default.json");
/// The JSON of the built-in `coding-agent` profile: model APIs with held keys, package registries.
pub const CODING_AGENT_PROFILE_JSON: &str =
    include_str!("../../../config/bottle/coding-agent.json");
/// Names of the built-in profiles, as `Policy::profile` takes them.
pub const PROFILES: &[&str] = &["default", "coding-agent"];

/// Shortest secret value accepted: below this the proxy could not tell the secret (or its
/// placeholder) apart from ordinary text when it swaps one for the other.
pub const MIN_SECRET_LEN: usize = 12;
/// Random characters every placeholder keeps at least, whatever prefix it copies.
const MIN_PLACEHOLDER_RANDOM: usize = 8;

/// Most secrets one policy may hold (the audit tracks them in a 64-bit mask).
const MAX_SECRETS: usize = 64;
const MAX_WALL_S: u64 = 7 * 24 * 3600;
const MAX_MEMORY_MB: u64 = 1024 * 1024;
const MAX_PROCESSES: u64 = 32_768;
const MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// Why a policy was refused. Every variant names where (file, field) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read the bottle policy {path}: {source}")]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The JSON is malformed or does not fit the policy's shape (unknown field, wrong type, bad
    /// host pattern).
    #[error("{origin}: line {line}, column {column}, at `{field}`: {message}")]
    Parse {
        /// File name, or the profile name for built-in profiles.
        origin: String,
        /// 1-based line of the offending token.
        line: usize,
        /// 1-based column of the offending token.
        column: usize,
        /// Path of the field, such as `network.allow[2]` (`.` for the top level).
        field: String,
        /// What was wrong.
        message: String,
    },
    /// The policy parsed but breaks a rule (a secret bound to a host the allow list refuses,
    /// duplicate names, absurd limits, ...).
    #[error("{origin}: `{field}`: {reason}")]
    Invalid {
        /// File name, or the profile name for built-in profiles.
        origin: String,
        /// Path of the field, such as `secrets[1].hosts[0]`.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// `Policy::profile` was asked for a name that is not built in.
    #[error(
        "there is no built-in bottle profile {0:?}; the built-in profiles are: default, coding-agent"
    )]
    UnknownProfile(String),
}

/// A whole bottle policy. Every section may be left out; its default is the closed one (no
/// network, no secrets, no environment, the default limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Which hosts the run may reach through the proxy.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Secrets the proxy holds and injects toward their hosts.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// Environment variables handed into the sandbox.
    #[serde(default)]
    pub env: EnvPolicy,
    /// Resource limits of a run.
    #[serde(default)]
    pub limits: Limits,
    /// Extra host paths made visible read-only.
    #[serde(default)]
    pub filesystem: FilesystemPolicy,
}

/// Host lists of a policy. Deny wins over allow; a host in neither is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Hosts the run may reach.
    #[serde(default)]
    pub allow: Vec<HostPattern>,
    /// Hosts refused even when an allow pattern covers them.
    #[serde(default)]
    pub deny: Vec<HostPattern>,
    /// Hosts (or addresses) that may resolve to loopback, private, link-local and other
    /// non-public addresses; everything else is refused there (SSRF guard).
    #[serde(default)]
    pub allow_private: Vec<HostPattern>,
}

/// One secret the proxy holds: where its real value comes from on the host, and the hosts it
/// is injected toward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Name of the environment variable the sandbox gets, holding the placeholder.
    pub name: String,
    /// Hosts the real value is injected toward (each must be allowed by `network.allow`).
    pub hosts: Vec<HostPattern>,
    /// Host environment variable holding the real value (exactly one of `env` and `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Host file holding the real value, mode 0600 or stricter, owned by the user running the
    /// bottle (exactly one of `env` and `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Also swap the placeholder in request bodies, not only in headers.
    #[serde(default)]
    pub in_body: bool,
    /// Skip this secret (no placeholder, no injection) when its source is missing, instead of
    /// refusing to start; for profiles that name keys a person may or may not have.
    #[serde(default)]
    pub optional: bool,
}

/// The environment handed into the sandbox; everything else is cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvPolicy {
    /// Host variables passed through as they are (when set).
    #[serde(default)]
    pub pass: Vec<String>,
    /// Variables set to fixed values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

/// Resource limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time, in seconds.
    pub wall_s: u64,
    /// Memory, in MiB.
    pub memory_mb: u64,
    /// Processes (and threads) alive at once.
    pub processes: u64,
    /// Bytes of stdout plus stderr kept.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_s: 600,
            memory_mb: 2048,
            processes: 256,
            output_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Extra filesystem exposure of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPolicy {
    /// Absolute host paths made visible read-only inside the sandbox.
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
}

/// One entry of a host list: an exact name (`api.example.com`), a suffix (`*.example.com`:
/// every host strictly below `example.com`, not `example.com` itself) or an IP address
/// (`10.0.0.1`, `[::1]`), which matches only that address. Normalised: lowercase, no trailing
/// dot. A bare `*` (or `*.`, or an empty entry) is refused: an allow list that allows
/// everything is not an allow list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostPattern {
    /// Exactly this host name.
    Exact(String),
    /// Any host strictly below this domain (the text after `*.`).
    Suffix(String),
    /// Exactly this IP address; it never matches a host name.
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses one pattern as written in a policy; the error is the reason to show its author.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let generic =
            || format!("{text:?} is not a host pattern; use \"example.com\" or \"*.example.com\"");
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(
                "an empty host pattern matches nothing useful; remove it or name a host".to_owned(),
            );
        }
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(ip) = parse_ip(trimmed) {
            return Ok(HostPattern::Ip(ip));
        }
        if trimmed == "*" || trimmed == "*." || lower == "*." {
            return Err(format!(
                "{text:?} would allow every host, which a bottle policy may not do; \
                 list the hosts, or use \"*.example.com\" for a whole domain"
            ));
        }
        // Schemes, ports, paths and user info are the usual ways a URL ends up where a host
        // belongs; none of them is part of a host.
        if trimmed.contains([':', '/', '?', '#', '@', '\\'])
            || trimmed.contains(char::is_whitespace)
        {
            return Err(generic());
        }
        let (suffix, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if rest.contains('*') {
            return Err(format!(
                "{text:?}: a wildcard is allowed only as the whole first label, as in \"*.example.com\""
            ));
        }
        check_name(rest).map_err(|why| format!("{text:?} is not a host pattern: {why}"))?;
        if suffix && !rest.contains('.') {
            return Err(format!(
                "{text:?} covers a whole top-level domain; name the domain, as in \"*.example.com\""
            ));
        }
        Ok(if suffix {
            HostPattern::Suffix(rest.to_owned())
        } else {
            HostPattern::Exact(rest.to_owned())
        })
    }

    /// Whether this pattern covers `host`, a host already normalised by [`normalize_host`].
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(p) => p == host,
            // The dot before the suffix keeps `evil-example.com` out of `*.example.com`;
            // requiring a longer host keeps `example.com` itself out.
            HostPattern::Suffix(p) => {
                host.len() > p.len() + 1
                    && host.ends_with(p.as_str())
                    && host.as_bytes()[host.len() - p.len() - 1] == b'.'
            }
            HostPattern::Ip(ip) => parse_ip(host).is_some_and(|h| h == *ip),
        }
    }

    /// Whether every host this pattern matches is also matched by `other`.
    fn covered_by(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(h), o) => o.matches(h),
            (HostPattern::Suffix(s), HostPattern::Suffix(o)) => {
                s == o || HostPattern::Suffix(o.clone()).matches(s)
            }
            (HostPattern::Ip(a), HostPattern::Ip(b)) => a == b,
            _ => false,
        }
    }
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        HostPattern::parse(&value)
    }
}

impl From<HostPattern> for String {
    fn from(value: HostPattern) -> Self {
        value.to_string()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(h) => write!(f, "*.{h}"),
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Normalises a host as a request names it: lowercase, one trailing dot and IPv6 brackets
/// removed (IP addresses come back in their canonical text form). `None` when it is neither a
/// host name nor an IP address.
pub fn normalize_host(host: &str) -> Option<String> {
    let lower = host.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(ip) = parse_ip(trimmed) {
        return Some(ip.to_string());
    }
    check_name(trimmed).ok()?;
    Some(trimmed.to_owned())
}

/// An IPv4 address in dotted form, or an IPv6 address bare or in brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse::<IpAddr>().ok()
}

/// Checks a lowercase DNS name; the error says what is wrong with it.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host is empty".to_owned());
    }
    if !name.is_ascii() {
        return Err("write international names in their ASCII (\"xn--\") form".to_owned());
    }
    if name.len() > 253 {
        return Err("a host name has at most 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row, or a leading dot)".to_owned());
        }
        if label.len() > 63 {
            return Err(format!("the label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("{c:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    // A numeric last label is how odd address spellings look (`10.1`, `2130706433`); clients
    // read those as IP addresses, so they are not host names.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("the last label is numeric; write an IP address in dotted form".to_owned());
    }
    Ok(())
}

/// The verdict of the host lists on one host, with the pattern that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDecision<'a> {
    /// An allow pattern covers the host and no deny pattern does.
    Allow(&'a HostPattern),
    /// A deny pattern covers the host.
    Deny(&'a HostPattern),
    /// No allow pattern covers the host.
    NotAllowed,
}

impl NetworkPolicy {
    /// Decides one host (normalised by [`normalize_host`]): deny first, then allow, else refused.
    pub fn decide(&self, host: &str) -> HostDecision<'_> {
        if let Some(p) = self.deny.iter().find(|p| p.matches(host)) {
            return HostDecision::Deny(p);
        }
        match self.allow.iter().find(|p| p.matches(host)) {
            Some(p) => HostDecision::Allow(p),
            None => HostDecision::NotAllowed,
        }
    }

    /// Whether `host` (or the address it resolved to) may be a non-public address.
    pub fn private_allowed(&self, host: &str, addr: IpAddr) -> bool {
        self.allow_private
            .iter()
            .any(|p| p.matches(host) || matches!(p, HostPattern::Ip(ip) if *ip == addr))
    }

    /// Whether every host `pattern` matches is allowed by the allow list.
    fn allows_all_of(&self, pattern: &HostPattern) -> bool {
        self.allow.iter().any(|a| pattern.covered_by(a))
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a policy given as JSON text (errors name it "policy").
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, "policy")
    }

    /// One of the built-in profiles ([`PROFILES`]): `default` (no network) or `coding-agent`.
    pub fn profile(name: &str) -> Result<Policy, PolicyError> {
        let text = match name {
            "default" => DEFAULT_PROFILE_JSON,
            "coding-agent" => CODING_AGENT_PROFILE_JSON,
            other => return Err(PolicyError::UnknownProfile(other.to_owned())),
        };
        Policy::parse(text, &format!("built-in profile {name:?}"))
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let policy: Policy = serde_path_to_error::deserialize(de).map_err(|err| {
            let field = err.path().to_string();
            let inner = err.into_inner();
            let (line, column) = (inner.line(), inner.column());
            let full = inner.to_string();
            let message = full
                .strip_suffix(&format!(" at line {line} column {column}"))
                .unwrap_or(&full)
                .to_owned();
            PolicyError::Parse {
                origin: origin.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        policy.validate(origin)?;
        Ok(policy)
    }

    /// The policy's digest for provenance: `sha256:` and the hex SHA-256 of its canonical JSON
    /// (fields in declaration order, maps sorted, no spaces, patterns normalised), so two files
    /// that differ only in layout or case have the same digest.
    pub fn digest(&self) -> String {
        // Serialising plain data structures to JSON cannot fail; an empty digest input would
        // still be a stable (if useless) value, never a panic.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
    }

    /// Checks the rules a policy must follow beyond its shape.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let invalid = |field: String, reason: String| PolicyError::Invalid {
            origin: origin.to_owned(),
            field,
            reason,
        };
        for (i, p) in self.network.allow_private.iter().enumerate() {
            if !matches!(p, HostPattern::Ip(_)) && !self.network.allows_all_of(p) {
                return Err(invalid(
                    format!("network.allow_private[{i}]"),
                    format!(
                        "{p} is not allowed by network.allow, so allowing its private addresses \
                         has no effect; add it to network.allow or remove it here"
                    ),
                ));
            }
        }

        if self.secrets.len() > MAX_SECRETS {
            return Err(invalid(
                "secrets".to_owned(),
                format!(
                    "{} secrets; a bottle holds at most {MAX_SECRETS}",
                    self.secrets.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, s) in self.secrets.iter().enumerate() {
            let at = |what: &str| format!("secrets[{i}]{what}");
            check_env_name(&s.name).map_err(|why| invalid(at(".name"), why))?;
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    at(".name"),
                    format!(
                        "the secret name {:?} is used twice; give each secret its own name",
                        s.name
                    ),
                ));
            }
            match (&s.env, &s.file) {
                (None, None) => {
                    return Err(invalid(
                        at(""),
                        format!(
                            "secret {:?} says neither where its value comes from; add \"env\" \
                             (a host environment variable) or \"file\" (a host file)",
                            s.name
                        ),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at(""),
                        format!(
                            "secret {:?} has both \"env\" and \"file\"; keep one of them",
                            s.name
                        ),
                    ));
                }
                (Some(env), None) => {
                    check_env_name(env).map_err(|why| invalid(at(".env"), why))?;
                }
                (None, Some(file)) => {
                    if !file.is_absolute() {
                        return Err(invalid(
                            at(".file"),
                            format!(
                                "{} is not an absolute path; write the full path",
                                file.display()
                            ),
                        ));
                    }
                }
            }
            if s.hosts.is_empty() {
                return Err(invalid(
                    at(".hosts"),
                    format!(
                        "secret {:?} is bound to no host, so it could never be used; name the \
                         hosts it is for",
                        s.name
                    ),
                ));
            }
            for (j, h) in s.hosts.iter().enumerate() {
                if matches!(h, HostPattern::Ip(_)) {
                    return Err(invalid(
                        at(&format!(".hosts[{j}]")),
                        format!(
                            "secrets are bound to host names, not addresses ({h}); the proxy \
                             needs a name to present a certificate for"
                        ),
                    ));
                }
                if !self.network.allows_all_of(h) {
                    return Err(invalid(
                        at(&format!(".hosts[{j}]")),
                        format!(
                            "secret {:?} is bound to {h}, which network.allow does not allow; \
                             add {h} to network.allow or bind the secret to an allowed host",
                            s.name
                        ),
                    ));
                }
                if let HostPattern::Exact(name) = h
                    && let HostDecision::Deny(rule) = self.network.decide(name)
                {
                    return Err(invalid(
                        at(&format!(".hosts[{j}]")),
                        format!(
                            "secret {:?} is bound to {h}, which network.deny refuses (rule \
                             '{rule}'); remove one of the two",
                            s.name
                        ),
                    ));
                }
            }
        }

        for (i, name) in self.env.pass.iter().enumerate() {
            check_env_name(name).map_err(|why| invalid(format!("env.pass[{i}]"), why))?;
            if let Some(s) = self
                .secrets
                .iter()
                .find(|s| &s.name == name || s.env.as_ref() == Some(name))
            {
                return Err(invalid(
                    format!("env.pass[{i}]"),
                    format!(
                        "passing {name} through would hand secret {:?} (or its real value) to \
                         the sandbox, which gets a placeholder instead; remove it from env.pass",
                        s.name
                    ),
                ));
            }
        }
        for (name, value) in &self.env.set {
            let field = format!("env.set.{name}");
            check_env_name(name).map_err(|why| invalid(field.clone(), why))?;
            if value.contains('\0') {
                return Err(invalid(
                    field,
                    "the value contains a NUL character".to_owned(),
                ));
            }
            if self.secrets.iter().any(|s| &s.name == name) {
                return Err(invalid(
                    field,
                    format!(
                        "{name} is a secret's name; the sandbox gets its placeholder, so it cannot also be set"
                    ),
                ));
            }
        }

        let limits = [
            ("wall_s", self.limits.wall_s, MAX_WALL_S, "seconds"),
            ("memory_mb", self.limits.memory_mb, MAX_MEMORY_MB, "MiB"),
            (
                "processes",
                self.limits.processes,
                MAX_PROCESSES,
                "processes",
            ),
            (
                "output_bytes",
                self.limits.output_bytes,
                MAX_OUTPUT_BYTES,
                "bytes",
            ),
        ];
        for (name, value, max, unit) in limits {
            if value == 0 {
                return Err(invalid(
                    format!("limits.{name}"),
                    "0 would stop every run at once; give a positive limit, or leave the field out for the default".to_owned(),
                ));
            }
            if value > max {
                return Err(invalid(
                    format!("limits.{name}"),
                    format!(
                        "{value} {unit} is beyond any sensible run (at most {max}); a limit this high is no limit"
                    ),
                ));
            }
        }

        for (i, p) in self.filesystem.read_only.iter().enumerate() {
            if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(invalid(
                    format!("filesystem.read_only[{i}]"),
                    format!("{} must be an absolute path without \"..\"", p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an environment variable name (letters, digits and '_', not starting with a digit)"
        ))
    }
}

/// Why the secrets of a policy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The host environment variable is not set (or not UTF-8).
    #[error(
        "secret {name:?}: the environment variable {var} is not set; export it before starting the bottle, or mark the secret \"optional\""
    )]
    EnvMissing {
        /// The secret.
        name: String,
        /// The host variable it is read from.
        var: String,
    },
    /// The file could not be opened or read.
    #[error("secret {name:?}: cannot read {path}: {source}")]
    FileRead {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is readable by group or others.
    #[error(
        "secret {name:?}: {path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    FileMode {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file belongs to another user.
    #[error(
        "secret {name:?}: {path} is owned by uid {owner}, not by you (uid {you}); run `chown {you} {path}` or keep the secret in a file of your own"
    )]
    FileOwner {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The current user.
        you: u32,
    },
    /// The value is unusable (empty, too short, spaces or control characters). The value
    /// itself is never part of the message.
    #[error("secret {name:?} (from {source_desc}): {reason}")]
    BadValue {
        /// The secret.
        name: String,
        /// Where it was read from.
        source_desc: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A real secret value. Its `Debug` shows no part of it; the only way to the text is
/// [`SecretValue::expose`], used by the proxy where it injects or scrubs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The real value, for the one place that needs it (the proxy's swap).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// One secret ready for a run: the real value (host side only), the per-run placeholder the
/// sandbox sees, and the hosts it is injected toward.
#[derive(Debug, Clone)]
pub struct ResolvedSecret {
    /// Name (also the sandbox environment variable holding the placeholder).
    pub name: String,
    /// Hosts the real value is injected toward.
    pub hosts: Vec<HostPattern>,
    /// Whether request bodies are swapped too, not only headers.
    pub in_body: bool,
    /// The per-run stand-in: same prefix and length as the real value, random otherwise.
    pub placeholder: String,
    /// The real value.
    pub value: SecretValue,
}

impl ResolvedSecret {
    /// Whether this secret is bound to `host` (normalised).
    pub fn bound_to(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }
}

/// The secrets of a policy, read for one run. `Debug` shows names and placeholders, never
/// values.
#[derive(Debug, Clone, Default)]
pub struct ResolvedSecrets {
    secrets: Vec<ResolvedSecret>,
    skipped: Vec<String>,
}

impl ResolvedSecrets {
    /// No secrets at all.
    pub fn none() -> ResolvedSecrets {
        ResolvedSecrets::default()
    }

    /// Reads every secret of `policy` from the host environment and files, and makes fresh
    /// placeholders for this run.
    pub fn resolve(policy: &Policy) -> Result<ResolvedSecrets, SecretError> {
        ResolvedSecrets::resolve_with(policy, |var| std::env::var(var).ok())
    }

    /// Like [`ResolvedSecrets::resolve`], reading environment variables through `env` (tests
    /// and callers that hold their own environment).
    pub fn resolve_with(
        policy: &Policy,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ResolvedSecrets, SecretError> {
        let mut out = ResolvedSecrets::default();
        let mut rng = rand::rng();
        for spec in &policy.secrets {
            let read = match (&spec.env, &spec.file) {
                (Some(var), _) => match env(var) {
                    Some(v) => Some((v, format!("environment variable {var}"))),
                    None if spec.optional => None,
                    None => {
                        return Err(SecretError::EnvMissing {
                            name: spec.name.clone(),
                            var: var.clone(),
                        });
                    }
                },
                (None, Some(path)) => match read_secret_file(&spec.name, path) {
                    Ok(v) => Some((v, path.display().to_string())),
                    Err(SecretError::FileRead { source, .. })
                        if spec.optional && source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        None
                    }
                    Err(e) => return Err(e),
                },
                // Validation refuses this shape; treat it as a missing source all the same.
                (None, None) => None,
            };
            let Some((raw, source_desc)) = read else {
                out.skipped.push(spec.name.clone());
                continue;
            };
            let value = clean_secret(&raw).map_err(|reason| SecretError::BadValue {
                name: spec.name.clone(),
                source_desc,
                reason,
            })?;
            // A placeholder must not be, or contain, another secret's value or placeholder, or
            // one swap could undo another; a clash is astronomically rare, so just draw again.
            let placeholder = loop {
                let p = placeholder_for(&value, &mut rng);
                let clash = out.secrets.iter().any(|s| {
                    s.placeholder.contains(&p)
                        || p.contains(&s.placeholder)
                        || s.value.expose().contains(&p)
                        || p.contains(s.value.expose())
                });
                if !clash {
                    break p;
                }
            };
            out.secrets.push(ResolvedSecret {
                name: spec.name.clone(),
                hosts: spec.hosts.clone(),
                in_body: spec.in_body,
                placeholder,
                value: SecretValue(value),
            });
        }
        Ok(out)
    }

    /// Every resolved secret.
    pub fn iter(&self) -> impl Iterator<Item = &ResolvedSecret> {
        self.secrets.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The secrets bound to `host` (normalised).
    pub fn for_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a ResolvedSecret> + 'a {
        self.secrets.iter().filter(move |s| s.bound_to(host))
    }

    /// Names of optional secrets skipped because their source was missing.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// `NAME=placeholder` pairs for the sandbox's environment.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.secrets
            .iter()
            .map(|s| (s.name.clone(), s.placeholder.clone()))
            .collect()
    }
}

/// Reads a secret file after checking it is the current user's and not readable by others.
/// The checks use the opened file's metadata, so a swap between check and read changes nothing.
fn read_secret_file(name: &str, path: &Path) -> Result<String, SecretError> {
    let read_err = |source| SecretError::FileRead {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::FileMode {
            name: name.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let you = unsafe { libc::geteuid() };
    if meta.uid() != you {
        return Err(SecretError::FileOwner {
            name: name.to_owned(),
            path: path.to_owned(),
            owner: meta.uid(),
            you,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    Ok(text)
}

/// Trims the line end a file or `export` leaves and checks the value can travel in a header.
fn clean_secret(raw: &str) -> Result<String, String> {
    let value = raw.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err("the value is empty".to_owned());
    }
    if let Some(pos) = value.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "the value has a space, control or non-ASCII character (at position {pos}); it could not be sent in a header"
        ));
    }
    if value.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the value has {} characters; the proxy needs at least {MIN_SECRET_LEN} to tell it apart from ordinary text",
            value.len()
        ));
    }
    Ok(value.to_owned())
}

/// A placeholder shaped like `secret`: the same prefix (everything up to and including the last
/// `-` or `_` in the first 16 characters, else the first 3), the same length, random ASCII
/// letters and digits for the rest, always at least 8 of them, and never equal to the secret.
/// Tools that check a key's format before sending it accept the placeholder.
pub fn placeholder_for(secret: &str, rng: &mut impl Rng) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = secret.as_bytes();
    let len = bytes.len();
    let head = &bytes[..len.min(16)];
    let mut prefix = head
        .iter()
        .rposition(|b| *b == b'-' || *b == b'_')
        .map_or(len.min(3), |i| i + 1);
    if len.saturating_sub(prefix) < MIN_PLACEHOLDER_RANDOM {
        prefix = len.saturating_sub(MIN_PLACEHOLDER_RANDOM).min(3);
    }
    loop {
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&bytes[..prefix]);
        out.extend((prefix..len).map(|_| ALNUM[rng.random_range(0..ALNUM.len())]));
        if out != bytes {
            // Only ASCII was pushed after an ASCII-checked prefix.
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}
