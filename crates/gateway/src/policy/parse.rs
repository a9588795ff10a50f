//! Reading the policy file: serde for the shape, then checks for what serde
//! cannot see (intent names, globs, host patterns, limits), every problem
//! placed at a line and column of the text.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSetBuilder};
use serde::Deserialize;

use super::hosts::HostPattern;
use super::locate::Index;
use super::{
    BrowseRules, FileRules, INTENTS, PathGlobs, Policy, PolicyError, Profile, RateLimit, RunRules,
};
use crate::plan::Risk;

/// Defaults: each is what a field means when it is left out.
const DEFAULT_TIMEOUT_S: u64 = 30;
const DEFAULT_MAX_TIMEOUT_S: u64 = 300;
const DEFAULT_MEMORY_MB: u64 = 1024;
const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
const DEFAULT_PROCESSES: u32 = 256;
/// Most processes a profile may allow a run (the bottle's own ceiling).
const MAX_PROCESSES: u32 = 32_768;
const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_PER_MINUTE: u32 = 600;
const DEFAULT_BURST: u32 = 100;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy object such as {\"profiles\": {\"default\": {…}}}"
)]
struct RawPolicy {
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a profile object")]
struct RawProfile {
    intents: Vec<String>,
    apps: Vec<String>,
    browse: RawBrowse,
    files: RawFiles,
    run: RawRun,
    auto_approve: Vec<Risk>,
    rate_limit: RawRateLimit,
    approver: bool,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "an object with \"allow\" and \"deny\" lists"
)]
struct RawBrowse {
    allow: Vec<String>,
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "an object with \"read\", \"write\" and \"max_bytes\""
)]
struct RawFiles {
    read: Vec<String>,
    write: Vec<String>,
    max_bytes: u64,
}

impl Default for RawFiles {
    fn default() -> Self {
        RawFiles {
            read: Vec::new(),
            write: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a run object")]
struct RawRun {
    programs: Vec<String>,
    timeout_s: u64,
    max_timeout_s: u64,
    memory_mb: u64,
    max_output_bytes: u64,
    processes: u32,
    network: Vec<String>,
    network_private: Vec<String>,
}

impl Default for RawRun {
    fn default() -> Self {
        RawRun {
            programs: Vec::new(),
            timeout_s: DEFAULT_TIMEOUT_S,
            max_timeout_s: DEFAULT_MAX_TIMEOUT_S,
            memory_mb: DEFAULT_MEMORY_MB,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            processes: DEFAULT_PROCESSES,
            network: Vec::new(),
            network_private: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "an object with \"per_minute\" and \"burst\""
)]
struct RawRateLimit {
    per_minute: u32,
    burst: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            per_minute: DEFAULT_PER_MINUTE,
            burst: DEFAULT_BURST,
        }
    }
}

/// Parses and checks a policy text; see [`Policy::from_json`].
pub(super) fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = serde_json::from_str(text).map_err(|e| serde_error(text, source, &e))?;
    let index = Index::scan(text);
    // serde refuses duplicate fields in structs but lets a later profile of the
    // same name replace an earlier one; a silently lost profile is not allowed.
    if let Some((path, offset)) = index.duplicate() {
        let key = path.rsplit('.').next().unwrap_or(path);
        return Err(error_at(
            text,
            source,
            offset,
            path,
            format!("the key {key:?} appears twice; keep one"),
        ));
    }
    // serde also fills a struct from a JSON list, by position (`[["run"]]`
    // would be a profile allowing `run`); the policy is written with names.
    let mut objects = vec![String::new()];
    for name in raw.profiles.keys() {
        let at = format!("profiles.{name}");
        for section in ["browse", "files", "run", "rate_limit"] {
            objects.push(format!("{at}.{section}"));
        }
        objects.push(at);
    }
    for path in &objects {
        if let Some(offset) = index.find(path)
            && text.as_bytes().get(offset) != Some(&b'{')
        {
            let what = if path.is_empty() {
                "the policy"
            } else {
                "this"
            };
            return Err(error_at(
                text,
                source,
                offset,
                path,
                format!("{what} must be an object {{…}} with named fields, not a list"),
            ));
        }
    }
    let mut problems = Problems::default();
    let mut profiles = BTreeMap::new();
    for (name, raw) in raw.profiles {
        let profile = check_profile(&name, raw, &mut problems);
        profiles.insert(name, profile);
    }
    // Of several problems, report the one that comes first in the file.
    if let Some((offset, path, reason)) = problems
        .0
        .into_iter()
        .map(|(path, reason)| (index.offset_of(&path), path, reason))
        .min_by_key(|(offset, _, _)| *offset)
    {
        return Err(error_at(text, source, offset, &path, reason));
    }
    Ok(Policy { profiles })
}

/// Problems found after parsing: JSON path and reason.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: String, reason: String) {
        self.0.push((path, reason));
    }
}

fn check_profile(name: &str, raw: RawProfile, problems: &mut Problems) -> Profile {
    let at = format!("profiles.{name}");
    // The name goes into rule paths and key configs; dots or spaces would make
    // those ambiguous.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.add(
            at.clone(),
            format!("profile name {name:?} may use only letters, digits, '_' and '-'"),
        );
    }
    for (i, intent) in raw.intents.iter().enumerate() {
        if !INTENTS.contains(&intent.as_str()) {
            problems.add(
                format!("{at}.intents[{i}]"),
                format!(
                    "{intent:?} is not an intent; use one of {}",
                    INTENTS.join(", ")
                ),
            );
        }
    }
    for (i, app) in raw.apps.iter().enumerate() {
        if app.trim().is_empty() || app.trim() != app || app.contains(['/', '\0']) {
            problems.add(
                format!("{at}.apps[{i}]"),
                format!(
                    "{app:?} is not an app name; give the bare name such as \"firefox\", \
                     without a path or surrounding spaces"
                ),
            );
        }
    }
    let browse = BrowseRules {
        allow: host_list(&raw.browse.allow, &format!("{at}.browse.allow"), problems),
        deny: host_list(&raw.browse.deny, &format!("{at}.browse.deny"), problems),
    };
    let files = check_files(&at, raw.files, problems);
    let run = check_run(&at, raw.run, problems);
    let rate_limit = RateLimit {
        per_minute: raw.rate_limit.per_minute,
        burst: raw.rate_limit.burst,
    };
    for (field, value) in [
        ("per_minute", rate_limit.per_minute),
        ("burst", rate_limit.burst),
    ] {
        if value == 0 {
            problems.add(
                format!("{at}.rate_limit.{field}"),
                "a rate limit of 0 would refuse every request; use a positive number \
                     (to refuse everything, leave \"intents\" empty)"
                    .to_owned(),
            );
        }
    }
    Profile {
        name: name.to_owned(),
        intents: raw.intents,
        apps: raw.apps,
        browse,
        files,
        run,
        auto_approve: raw.auto_approve,
        rate_limit,
        approver: raw.approver,
    }
}

fn host_list(patterns: &[String], at: &str, problems: &mut Problems) -> Vec<HostPattern> {
    let mut out = Vec::new();
    for (i, text) in patterns.iter().enumerate() {
        match HostPattern::parse(text) {
            Ok(pattern) => out.push(pattern),
            Err(reason) => problems.add(format!("{at}[{i}]"), reason),
        }
    }
    out
}

fn check_files(at: &str, raw: RawFiles, problems: &mut Problems) -> FileRules {
    if raw.max_bytes == 0 {
        problems.add(
            format!("{at}.files.max_bytes"),
            "a size cap of 0 bytes is not allowed; use a positive size \
             (to forbid writing, leave \"write\" empty)"
                .to_owned(),
        );
    }
    FileRules {
        read: globs(raw.read, &format!("{at}.files.read"), problems),
        write: globs(raw.write, &format!("{at}.files.write"), problems),
        max_bytes: raw.max_bytes,
    }
}

fn globs(patterns: Vec<String>, at: &str, problems: &mut Problems) -> PathGlobs {
    let mut builder = GlobSetBuilder::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let path = format!("{at}[{i}]");
        if pattern.is_empty() {
            problems.add(path, "an empty glob matches nothing; remove it".to_owned());
            continue;
        }
        // Paths are relative to the workspace; a glob that leaves it is a mistake.
        if pattern.starts_with('/') || pattern.split('/').any(|part| part == "..") {
            problems.add(
                path,
                format!(
                    "{pattern:?} leaves the workspace; globs are relative to the workspace \
                     (e.g. \"notes/**\") and may not start with '/' or contain \"..\""
                ),
            );
            continue;
        }
        match GlobBuilder::new(pattern).literal_separator(true).build() {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(e) => problems.add(
                path,
                format!("{pattern:?} is not a valid glob: {}", e.kind()),
            ),
        }
    }
    // Every glob was built above, so the set builds; an empty set denies all.
    let set = builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty());
    PathGlobs { patterns, set }
}

fn check_run(at: &str, raw: RawRun, problems: &mut Problems) -> RunRules {
    let run_at = format!("{at}.run");
    for (i, program) in raw.programs.iter().enumerate() {
        let bad = program.is_empty()
            || program.contains(|c: char| c.is_whitespace() || c.is_control())
            || program.ends_with('/')
            || matches!(program.as_str(), "." | "..")
            || (program.contains('/') && !program.starts_with('/'));
        if bad {
            problems.add(
                format!("{run_at}.programs[{i}]"),
                format!(
                    "{program:?} is not a program name; give the bare name (\"python3\") \
                     or an absolute path (\"/usr/bin/python3\"), without arguments"
                ),
            );
        }
    }
    for (field, value) in [
        ("timeout_s", raw.timeout_s),
        ("max_timeout_s", raw.max_timeout_s),
        ("memory_mb", raw.memory_mb),
        ("max_output_bytes", raw.max_output_bytes),
        ("processes", u64::from(raw.processes)),
    ] {
        if value == 0 {
            problems.add(
                format!("{run_at}.{field}"),
                "0 is not a usable limit; use a positive number \
                     (to forbid running programs, leave \"programs\" empty)"
                    .to_owned(),
            );
        }
    }
    // A zero max_timeout_s is reported above; comparing against it adds nothing.
    if raw.max_timeout_s > 0 && raw.timeout_s > raw.max_timeout_s {
        problems.add(
            format!("{run_at}.timeout_s"),
            format!(
                "timeout_s ({}) is larger than max_timeout_s ({}); the default time limit \
                 must not exceed the largest one a caller may ask for",
                raw.timeout_s, raw.max_timeout_s
            ),
        );
    }
    if raw.processes > MAX_PROCESSES {
        problems.add(
            format!("{run_at}.processes"),
            format!(
                "{} processes is more than the bottle allows; use at most {MAX_PROCESSES}",
                raw.processes
            ),
        );
    }
    let network = host_list(&raw.network, &format!("{run_at}.network"), problems);
    let network_private = host_list(
        &raw.network_private,
        &format!("{run_at}.network_private"),
        problems,
    );
    check_bottle_network(&run_at, &raw.network, &raw.network_private, problems);
    RunRules {
        network,
        network_private,
        processes: raw.processes,
        programs: raw.programs,
        timeout_s: raw.timeout_s,
        max_timeout_s: raw.max_timeout_s,
        memory_mb: raw.memory_mb,
        max_output_bytes: raw.max_output_bytes,
    }
}

/// The run's host lists become the bottle's egress policy, whose rules are stricter than the
/// browse lists' (no `*.tld`; a private-address exception only for a host the allow list
/// covers, or an IP address): checked here so a list the bottle would refuse stops the
/// gateway at start, not a run.
fn check_bottle_network(
    run_at: &str,
    allow: &[String],
    private: &[String],
    problems: &mut Problems,
) {
    use bytebot_bottle::policy::{HostPattern as BottlePattern, NetworkPolicy, PolicyError};
    let mut network = NetworkPolicy::default();
    let mut parsed = true;
    for (field, texts, out) in [
        ("network", allow, &mut network.allow),
        ("network_private", private, &mut network.allow_private),
    ] {
        for (i, text) in texts.iter().enumerate() {
            match BottlePattern::parse(text) {
                Ok(p) => out.push(p),
                Err(reason) => {
                    parsed = false;
                    // The browse-style check above already reports what it refuses itself.
                    if HostPattern::parse(text).is_ok() {
                        problems.add(format!("{run_at}.{field}[{i}]"), reason);
                    }
                }
            }
        }
    }
    if !parsed {
        return;
    }
    let policy = bytebot_bottle::policy::Policy {
        network,
        ..Default::default()
    };
    if let Err(PolicyError::Invalid { field, reason, .. }) = policy.validate("policy") {
        let field = field.replace("network.allow_private", "network_private");
        let field = field.replace("network.allow", "network");
        problems.add(
            format!("{run_at}.{field}"),
            reason.replace("network.allow", &format!("{run_at}.network")),
        );
    }
}

/// Turns a serde_json error into a `PolicyError`, adding the JSON path of the
/// value it happened in.
fn serde_error(text: &str, source: &str, err: &serde_json::Error) -> PolicyError {
    let message = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let reason = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    // serde_json counts columns in bytes, 1-based, pointing at the last byte it
    // read; turn that back into an offset to find the path there.
    let line_start = text
        .split_inclusive('\n')
        .take(err.line().saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let mut offset = (line_start + err.column().saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let index = Index::scan(text);
    let path = index.path_at(offset).to_owned();
    error_at(text, source, offset, &path, reason)
}

/// Builds an error at a byte offset of the text (line and column 1-based,
/// the column counted in characters).
fn error_at(text: &str, source: &str, offset: usize, path: &str, reason: String) -> PolicyError {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    PolicyError {
        source: source.to_owned(),
        line,
        column,
        path: path.to_owned(),
        reason,
    }
}
