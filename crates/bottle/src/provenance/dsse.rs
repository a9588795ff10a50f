//! The DSSE envelope around a statement: signing, writing and offline verification.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::{Deserialize, Serialize};

use super::keys::{SigningKey, VerifyingKey};
use super::statement::{BottleRun, PREDICATE_TYPE, STATEMENT_TYPE, Statement, Subject};
use super::workspace::{hash_file, open_beneath};

/// DSSE `payloadType` of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// File name suffix of a run record: one DSSE envelope as one JSON line (the in-toto
/// convention for `*.intoto.jsonl` files).
pub const RECORD_SUFFIX: &str = ".intoto.jsonl";

/// A DSSE JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 (standard alphabet, padded) of the serialized statement.
    pub payload: String,
    /// What the payload is: [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Signatures over the PAE of type and payload.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Hint naming the key: hex sha256 of the raw ed25519 public key. Not signed (DSSE).
    #[serde(default)]
    pub keyid: Option<String>,
    /// Base64 of the 64-byte ed25519 signature.
    pub sig: String,
}

/// DSSE pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(body) SP body`,
/// lengths as ASCII decimal byte counts. This, not the JSON, is what gets signed.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + body.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// Why a record could not be signed or written.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The statement did not serialize (should not happen for the typed statement).
    #[error("cannot serialize the provenance statement: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The bottle id cannot be a file name.
    #[error(
        "bottle id {0:?} cannot name a record file: use letters, digits, '.', '_' and '-', not \
         starting with '.'"
    )]
    BadId(String),
    /// Writing the record failed.
    #[error("cannot write the run record {path}: {source}")]
    Io {
        /// The record file (or its folder).
        path: PathBuf,
        /// The error from the system.
        source: io::Error,
    },
}

/// Sign a statement: serialize it, sign its PAE with `key`, wrap it in an envelope.
pub fn sign(statement: &Statement, key: &SigningKey) -> Result<Envelope, SignError> {
    let body = serde_json::to_vec(statement)?;
    let sig = key.sign(&pae(PAYLOAD_TYPE, &body));
    Ok(Envelope {
        payload: STANDARD.encode(&body),
        payload_type: PAYLOAD_TYPE.to_owned(),
        signatures: vec![EnvelopeSignature {
            keyid: Some(key.key_id()),
            sig: STANDARD.encode(sig),
        }],
    })
}

impl Envelope {
    /// The envelope as one JSON line with a trailing newline (the record file's contents).
    pub fn to_json_line(&self) -> Result<String, SignError> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
    }

    /// Write the record to `<runs_dir>/<bottle_id>.intoto.jsonl` and return that path. The
    /// folder is made (mode 0700) if missing; the file is created new with mode 0600 (argv can
    /// carry tokens; share a record deliberately) and never overwrites an existing record.
    pub fn write(&self, runs_dir: &Path, bottle_id: &str) -> Result<PathBuf, SignError> {
        let name_ok = !bottle_id.is_empty()
            && !bottle_id.starts_with('.')
            && bottle_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(SignError::BadId(bottle_id.to_owned()));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runs_dir)
            .map_err(|source| SignError::Io {
                path: runs_dir.to_path_buf(),
                source,
            })?;
        let path = runs_dir.join(format!("{bottle_id}{RECORD_SUFFIX}"));
        let line = self.to_json_line()?;
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.sync_all()
            });
        written.map_err(|source| SignError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// A record whose signature checked out, with its statement parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRun {
    /// Id of the key that verified it (hex sha256 of the raw public key).
    pub key_id: String,
    /// The files the run wrote.
    pub subjects: Vec<Subject>,
    /// What ran.
    pub predicate: BottleRun,
}

/// Why a record did not verify. Each message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not JSON of the DSSE envelope shape.
    #[error(
        "not a DSSE envelope (a JSON object with payload, payloadType and signatures): {0}; \
         pass the .intoto.jsonl file the bottle wrote"
    )]
    NotAnEnvelope(String),
    /// More than one envelope in the file.
    #[error(
        "the file holds {0} envelopes; a bottle record holds exactly one, so it was changed or \
         is not a bottle record"
    )]
    SeveralEnvelopes(usize),
    /// Wrong `payloadType`.
    #[error(
        "payloadType is {0:?}, expected {PAYLOAD_TYPE:?}: this is not an in-toto attestation, \
         or its type was changed after signing"
    )]
    WrongPayloadType(String),
    /// A base64 field did not decode.
    #[error("the {field} is not valid base64 ({reason}): the file was damaged or edited")]
    BadBase64 {
        /// `payload` or `signature`.
        field: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The envelope carries no signature.
    #[error("the envelope has no signatures, so nothing vouches for it; it is not a bottle record")]
    NoSignatures,
    /// Every signature names another key (by key id).
    #[error(
        "signed by key {signed_by} but the key given is {given}: pass --key with the signer's \
         public key (the .pub file next to its signing key)"
    )]
    OtherKey {
        /// Key id(s) named in the envelope.
        signed_by: String,
        /// Key id of the key given.
        given: String,
    },
    /// No signature verifies with the key.
    #[error(
        "signature does not match key {given}: the file was changed after signing, or it was \
         signed by another key; pass --key with the signer's public key"
    )]
    BadSignature {
        /// Key id of the key given.
        given: String,
    },
    /// The signed payload is not an in-toto Statement v1.
    #[error("the signed payload is not an in-toto Statement v1: {0}")]
    BadStatement(String),
    /// The statement's `_type` is not Statement v1.
    #[error("the statement's _type is {0:?}, expected {STATEMENT_TYPE:?}; this verifier reads v1")]
    WrongStatementType(String),
    /// The predicate is not a bottle run.
    #[error(
        "predicateType is {0:?}, expected {PREDICATE_TYPE:?}: this is an attestation of another \
         kind, not a bottle run record"
    )]
    WrongPredicateType(String),
    /// The predicate does not have the bottle-run shape.
    #[error("the bottle-run predicate is malformed at {path}: {reason}")]
    BadPredicate {
        /// JSON path of the bad field.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A subject's digest is not a sha256.
    #[error("subject {name:?} has sha256 {digest:?}, which is not 64 lowercase hex digits")]
    BadSubject {
        /// Subject name.
        name: String,
        /// The digest found.
        digest: String,
    },
}

/// Statement as first parsed: the predicate stays raw until both types are known.
#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: serde_json::Value,
}

/// DSSE allows either base64 alphabet; padding is accepted whether present or not.
fn decode_b64(field: &'static str, text: &str) -> Result<Vec<u8>, VerifyError> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
    STD.decode(text)
        .or_else(|e| URL.decode(text).map_err(|_| e))
        .map_err(|e| VerifyError::BadBase64 {
            field,
            reason: e.to_string(),
        })
}

/// Verify a record file's bytes with `key`, offline.
///
/// Checks, in order: the envelope parses (exactly one); `payloadType` is in-toto; a signature
/// verifies (strict ed25519) over the PAE of type and payload; the payload is a Statement v1
/// with our predicate type; every subject has a sha256.
///
/// Authenticated are `payloadType` and the payload bytes; any change to either, or to a
/// signature, fails. Not authenticated (DSSE): `keyid`, the envelope's whitespace and any
/// extra envelope field, none of which reach the result. A signature whose `keyid` names a
/// different key is not tried, so editing a keyid makes verification fail with
/// [`VerifyError::OtherKey`]; an absent or empty `keyid` means "try the key".
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<VerifiedRun, VerifyError> {
    let mut envelopes = serde_json::Deserializer::from_slice(bytes).into_iter::<Envelope>();
    let envelope = match envelopes.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(VerifyError::NotAnEnvelope(e.to_string())),
        None => return Err(VerifyError::NotAnEnvelope("the file is empty".to_owned())),
    };
    let extra = envelopes.count();
    if extra > 0 {
        return Err(VerifyError::SeveralEnvelopes(extra + 1));
    }
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::WrongPayloadType(envelope.payload_type));
    }
    let body = decode_b64("payload", &envelope.payload)?;
    if envelope.signatures.is_empty() {
        return Err(VerifyError::NoSignatures);
    }

    let given = key.key_id();
    let message = pae(&envelope.payload_type, &body);
    let mut other_keys = Vec::new();
    let mut tried = false;
    let mut verified = false;
    for signature in &envelope.signatures {
        match signature.keyid.as_deref() {
            Some(id) if !id.is_empty() && id != given => {
                other_keys.push(id.to_owned());
                continue;
            }
            _ => {}
        }
        tried = true;
        let sig = decode_b64("signature", &signature.sig)?;
        if key.verify(&message, &sig) {
            verified = true;
            break;
        }
    }
    if !verified {
        return Err(if tried {
            VerifyError::BadSignature { given }
        } else {
            VerifyError::OtherKey {
                signed_by: other_keys.join(", "),
                given,
            }
        });
    }

    let raw: RawStatement =
        serde_json::from_slice(&body).map_err(|e| VerifyError::BadStatement(e.to_string()))?;
    if raw.statement_type != STATEMENT_TYPE {
        return Err(VerifyError::WrongStatementType(raw.statement_type));
    }
    if raw.predicate_type != PREDICATE_TYPE {
        return Err(VerifyError::WrongPredicateType(raw.predicate_type));
    }
    for s in &raw.subject {
        let d = s.sha256();
        if d.len() != 64 || !d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(VerifyError::BadSubject {
                name: s.name.clone(),
                digest: d.to_owned(),
            });
        }
    }
    let predicate: BottleRun =
        serde_path_to_error::deserialize(raw.predicate).map_err(|e| VerifyError::BadPredicate {
            path: format!("predicate.{}", e.path()),
            reason: e.inner().to_string(),
        })?;
    Ok(VerifiedRun {
        key_id: given,
        subjects: raw.subject,
        predicate,
    })
}

/// How the files on disk compare with a verified record's subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceCheck {
    /// Subjects looked at.
    pub checked: usize,
    /// Subjects whose file is not as recorded.
    pub mismatches: Vec<SubjectMismatch>,
}

impl WorkspaceCheck {
    /// Whether every subject matched.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// A subject whose file differs from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectMismatch {
    /// Subject name.
    pub name: String,
    /// sha256 in the record.
    pub expected: String,
    /// What is on disk instead.
    pub problem: MismatchKind,
}

/// What is wrong with a subject's file now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MismatchKind {
    /// No file there.
    Missing,
    /// A file with other contents.
    Changed {
        /// Its sha256 now.
        sha256: String,
        /// Its size now.
        size: u64,
    },
    /// Something that cannot be read as a regular file without following a link (a link, a
    /// directory, a FIFO…), or the path leaves the workspace.
    NotARegularFile(String),
}

/// Compare a verified record's subjects with the files now in `dir` (the workspace), reading
/// without following any link below `dir`.
pub fn verify_against_workspace(run: &VerifiedRun, dir: &Path) -> WorkspaceCheck {
    let mut check = WorkspaceCheck::default();
    for subject in &run.subjects {
        check.checked += 1;
        let rel = subject_path(subject);
        let problem = match open_beneath(dir, &rel).and_then(hash_file) {
            Ok(Some((sha256, _))) if sha256 == subject.sha256() => continue,
            Ok(Some((sha256, size))) => MismatchKind::Changed { sha256, size },
            Ok(None) => MismatchKind::NotARegularFile("it changed while being read".to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => MismatchKind::Missing,
            Err(e) => MismatchKind::NotARegularFile(e.to_string()),
        };
        check.mismatches.push(SubjectMismatch {
            name: subject.name.clone(),
            expected: subject.sha256().to_owned(),
            problem,
        });
    }
    check
}

/// The on-disk path of a subject: its raw bytes when recorded (non-UTF-8 names), else its name.
fn subject_path(subject: &Subject) -> PathBuf {
    let raw = subject
        .annotations
        .as_ref()
        .and_then(|a| a.path_hex.as_deref())
        .and_then(|h| hex::decode(h).ok());
    match raw {
        Some(bytes) => PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)),
        None => PathBuf::from(&subject.name),
    }
}
