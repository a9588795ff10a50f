//! The in-toto Statement v1 and the bottle-run predicate it carries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::EgressSummary;

use super::workspace::{Change, ChangedFile, LinkChange, Snapshot, WorkspaceDiff, path_text};

/// `_type` of an in-toto Statement, version 1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// `predicateType` of a bottle run record. Bumped (v2, …) if the predicate changes shape in a
/// way an older verifier would misread.
pub const PREDICATE_TYPE: &str = "https://bytebot-rs.dev/provenance/bottle-run/v1";

/// Who wrote the record; lets a reader tell which version's semantics apply.
pub const PRODUCER: &str = concat!("bytebot-rs ", env!("CARGO_PKG_VERSION"));

/// An in-toto Statement v1 whose predicate is a bottle run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The files the run wrote (added or modified), each with its sha256.
    pub subject: Vec<Subject>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What ran and what it did.
    pub predicate: BottleRun,
}

impl Statement {
    /// A statement with the standard `_type` and our `predicateType`.
    pub fn new(subject: Vec<Subject>, predicate: BottleRun) -> Self {
        Self {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject,
            predicate_type: PREDICATE_TYPE.to_owned(),
            predicate,
        }
    }
}

/// One output file: an in-toto ResourceDescriptor with a name, a digest and annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Path relative to the workspace, `/`-separated. Bytes that are not UTF-8 appear as
    /// `\xNN`; the exact bytes are then in `annotations.path_hex`.
    pub name: String,
    /// The file's digests; only sha256 is written or read.
    pub digest: DigestSet,
    /// Size and kind of change, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<SubjectAnnotations>,
}

impl Subject {
    /// The subject's sha256 (lowercase hex).
    pub fn sha256(&self) -> &str {
        &self.digest.sha256
    }

    /// Size in bytes, when the producer recorded it.
    pub fn size(&self) -> Option<u64> {
        self.annotations.as_ref().and_then(|a| a.size)
    }
}

impl From<&ChangedFile> for Subject {
    fn from(file: &ChangedFile) -> Self {
        let (name, raw) = path_text(&file.path);
        Self {
            name,
            digest: DigestSet {
                sha256: file.sha256.clone(),
            },
            annotations: Some(SubjectAnnotations {
                size: Some(file.size),
                change: Some(file.change),
                path_hex: raw,
            }),
        }
    }
}

/// The digest map of a ResourceDescriptor. A struct rather than a map so a payload that names
/// `sha256` twice is refused instead of one value silently winning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSet {
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
}

/// Extra facts about a subject, kept in the ResourceDescriptor's `annotations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAnnotations {
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Whether the run created the file or changed an existing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Hex of the path's raw bytes, present only when the path is not UTF-8 (the `name` is then
    /// an escaped rendering and cannot be opened as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
}

/// The predicate of a bottle run record (`predicateType` [`PREDICATE_TYPE`]).
///
/// Holds names and digests only: secrets appear by name (in `egress.secrets_used`), never by
/// value, and file contents never appear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BottleRun {
    /// Software and version that produced the record ([`PRODUCER`]).
    pub producer: String,
    /// The run's id (also the record's file name).
    pub bottle_id: String,
    /// The `--label` given to the run, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Sandbox backend name (`bwrap`, …).
    pub backend: String,
    /// The command and its arguments, as executed.
    pub argv: Vec<String>,
    /// sha256 (hex) of the policy the run was held to.
    pub policy_sha256: String,
    /// The workspace before and after.
    pub workspace: WorkspaceRecord,
    /// When the command started.
    pub started_at: DateTime<Utc>,
    /// When the command ended (or was killed).
    pub ended_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// What it did on the network, as the egress proxy saw it.
    pub egress: EgressSummary,
}

/// The workspace side of a run: digests of the whole tree and what changed beyond the subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// [`Snapshot::digest`] before the run.
    pub before_sha256: String,
    /// [`Snapshot::digest`] after the run.
    pub after_sha256: String,
    /// Paths that existed before and are gone (or are now a different kind of entry).
    #[serde(default)]
    pub removed: Vec<String>,
    /// Symbolic links the run created or re-pointed; listed because a link out of the
    /// workspace is how a sandbox would try to make a host-side tool read something else.
    #[serde(default)]
    pub links: Vec<LinkRecord>,
}

impl WorkspaceRecord {
    /// The record for a run whose workspace went from `before` to `after`, with `diff` their
    /// [`super::workspace::diff`].
    pub fn new(before: &Snapshot, after: &Snapshot, diff: &WorkspaceDiff) -> Self {
        Self {
            before_sha256: before.digest(),
            after_sha256: after.digest(),
            removed: diff.removed.iter().map(|p| path_text(p).0).collect(),
            links: diff.links.iter().map(LinkRecord::from).collect(),
        }
    }
}

/// A symbolic link in the workspace and the target string it holds (never followed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Path of the link, relative to the workspace.
    pub path: String,
    /// The link's target, as written in the link.
    pub target: String,
}

impl From<&LinkChange> for LinkRecord {
    fn from(link: &LinkChange) -> Self {
        Self {
            path: path_text(&link.path).0,
            target: path_text(&link.target).0,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Exit code, if it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Signal number, if a signal ended it.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Whether the wall-time limit ended it.
    #[serde(default)]
    pub timed_out: bool,
    /// Whether its output went over the cap and was cut.
    #[serde(default)]
    pub output_truncated: bool,
}

/// The subjects (files added or modified) for a workspace diff.
pub fn subjects(diff: &WorkspaceDiff) -> Vec<Subject> {
    diff.written.iter().map(Subject::from).collect()
}
