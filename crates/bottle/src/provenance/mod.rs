//! Signed provenance of every bottle run, and its offline verification.
//!
//! A run record is an in-toto Statement v1 (`_type` [`STATEMENT_TYPE`], `predicateType`
//! [`PREDICATE_TYPE`]) whose subjects are the files the run added or modified (path relative to
//! the workspace, sha256) and whose predicate ([`BottleRun`]) says what ran, under which policy,
//! how it ended and what it did on the network (secrets by name only). It is wrapped in a DSSE
//! envelope (`payloadType` [`PAYLOAD_TYPE`]) signed with ed25519 over the DSSE PAE ([`pae`]),
//! and written as one JSON line to `<runs dir>/<bottle id>.intoto.jsonl`.
//!
//! Keys: [`SigningKey::load_or_create`] makes the key on first use (mode 0600) and writes the
//! public key next to it as `<key>.pub`; a record's `keyid` is the hex sha256 of the raw public
//! key. What [`verify`] authenticates and what it does not (keyid, envelope formatting) is in
//! its docs.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytebot_bottle::provenance::{self as prov, workspace};
//! # let (ws, key_path, runs) = (std::path::Path::new("ws"), std::path::Path::new("k"), std::path::Path::new("r"));
//! # let mut predicate: prov::BottleRun = todo!();
//! let key = prov::SigningKey::load_or_create(key_path)?;
//! let before = workspace::snapshot(ws)?;
//! // … the command runs in the bottle …
//! let after = workspace::snapshot(ws)?;
//! let diff = workspace::diff(&before, &after);
//! predicate.workspace = prov::WorkspaceRecord::new(&before, &after, &diff);
//! let statement = prov::Statement::new(prov::subjects(&diff), predicate);
//! let file = prov::sign(&statement, &key)?.write(runs, "0193-run-id")?;
//!
//! // Later, anywhere, offline:
//! let public = prov::VerifyingKey::from_file(&prov::public_key_path(key_path))?;
//! let run = prov::verify(&std::fs::read(&file)?, &public)?;
//! print!("{}", prov::render(&run));
//! # Ok(()) }
//! ```

mod dsse;
mod keys;
mod render;
mod statement;
pub mod workspace;

pub use dsse::{
    Envelope, EnvelopeSignature, MismatchKind, PAYLOAD_TYPE, RECORD_SUFFIX, SignError,
    SubjectMismatch, VerifiedRun, VerifyError, WorkspaceCheck, pae, sign, verify,
    verify_against_workspace,
};
pub use keys::{KeyError, SigningKey, VerifyingKey, public_key_path};
pub use render::{render, render_workspace_check};
pub use statement::{
    BottleRun, DigestSet, LinkRecord, Outcome, PREDICATE_TYPE, PRODUCER, STATEMENT_TYPE, Statement,
    Subject, SubjectAnnotations, WorkspaceRecord, subjects,
};
