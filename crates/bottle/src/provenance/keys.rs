//! The ed25519 key that signs run records, and its public half.
//!
//! Files (one line each, text):
//! - signing key: `ed25519-seed <base64 of the 32-byte seed>`, mode 0600, made on first use;
//! - public key, next to it as `<key path>.pub`: `ed25519 <base64 of the 32-byte public key>`
//!   (anything after a further space is a comment).
//!
//! The key id is the lowercase hex sha256 of the 32 raw public-key bytes.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

const SEED_TAG: &str = "ed25519-seed";
const PUBLIC_TAG: &str = "ed25519";
/// Key files are one short line; anything longer is not ours.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key could not be made, loaded or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error from the system.
        source: io::Error,
    },
    /// The signing key file can be read or written by others.
    #[error(
        "signing key {path} has mode {mode:04o}: group or others can access it, so it may have \
         leaked and is not used; run `chmod 600 {path}` (or delete it to make a new key)"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a key in the expected format.
    #[error("{path} is not {expected}: {reason}")]
    Malformed {
        /// The file (or `<text>` when parsing a string).
        path: PathBuf,
        /// What was expected there.
        expected: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The system's random source failed.
    #[error("cannot make a signing key: the system random source failed: {0}")]
    Random(String),
}

/// The private key that signs run records. Its `Debug` shows only the key id.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The key for a 32-byte seed (tests and imports).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            inner: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            inner: self.inner.verifying_key(),
        }
    }

    /// The key id (hex sha256 of the raw public key).
    pub fn key_id(&self) -> String {
        self.verifying_key().key_id()
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }

    /// Load the key at `path`, or make one there if the file does not exist. Either way the
    /// public key is (re)written to `<path>.pub` when missing or different. A new key file is
    /// created with mode 0600 (never readable by others, not even briefly) in a directory made
    /// with mode 0700 if needed.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let key = match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path)?,
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        key.ensure_public_file(path)?;
        Ok(key)
    }

    /// Load an existing key, refusing a file that group or others can access. A link to the
    /// key (e.g. a mounted secret) is followed; the mode checked is the file's own.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                expected: "a signing key",
                reason: "not a regular file".to_owned(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = read_small(file).map_err(io_err)?;
        let seed = parse_line(&text, SEED_TAG).map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            expected: "a signing key (`ed25519-seed <base64>`)",
            reason,
        })?;
        Ok(Self::from_seed(seed))
    }

    fn create(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err)?;
        }
        let key = Self::generate()?;
        let line = format!("{SEED_TAG} {}\n", STANDARD.encode(key.inner.to_bytes()));
        // Written whole to a private temporary name, then linked into place: a concurrent
        // first use either wins the link or loads the winner's complete file.
        let tmp = sibling(path, &format!(".tmp-{}", uuid::Uuid::new_v4()));
        let written =
            write_new(&tmp, line.as_bytes(), 0o600).and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
            Err(source) => Err(io_err(source)),
        }
    }

    fn ensure_public_file(&self, path: &Path) -> Result<(), KeyError> {
        let pub_path = public_key_path(path);
        let public = self.verifying_key();
        if let Ok(existing) = VerifyingKey::from_file(&pub_path) {
            if existing == public {
                return Ok(());
            }
            tracing::warn!(path = %pub_path.display(), "public key file did not match the signing key; rewriting it");
        }
        let tmp = sibling(&pub_path, &format!(".tmp-{}", uuid::Uuid::new_v4()));
        let line = format!("{public}\n");
        let written =
            write_new(&tmp, line.as_bytes(), 0o644).and_then(|()| fs::rename(&tmp, &pub_path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(|source| KeyError::Io {
            path: pub_path,
            source,
        })
    }
}

/// Where the public key of the signing key at `key_path` lives: `<key_path>.pub`.
pub fn public_key_path(key_path: &Path) -> PathBuf {
    let mut s = key_path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// A public key that checks run records. `Display` gives the `.pub` line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey {
    inner: ed25519_dalek::VerifyingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.key_id())
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_TAG} {}", STANDARD.encode(self.inner.as_bytes()))
    }
}

impl FromStr for VerifyingKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::parse(text, Path::new("<text>"))
    }
}

impl VerifyingKey {
    /// The key for 32 raw bytes; refuses a weak (small-order) key, which would accept forged
    /// signatures.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            path: PathBuf::from("<bytes>"),
            expected: "an ed25519 public key",
            reason,
        };
        let inner =
            ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|e| malformed(e.to_string()))?;
        if inner.is_weak() {
            return Err(malformed("a weak (small-order) key".to_owned()));
        }
        Ok(Self { inner })
    }

    /// Read a `.pub` file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = read_small(File::open(path).map_err(io_err)?).map_err(io_err)?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, origin: &Path) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            path: origin.to_path_buf(),
            expected: "an ed25519 public key (`ed25519 <base64>`, as in the .pub file next to \
                       the signing key)",
            reason,
        };
        let bytes = parse_line(text, PUBLIC_TAG).map_err(malformed)?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            KeyError::Malformed { reason, .. } => malformed(reason),
            other => other,
        })
    }

    /// The raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }

    /// The key id: lowercase hex sha256 of the 32 raw public-key bytes.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.inner.as_bytes()))
    }

    /// Strict ed25519 verification (no malleable or small-order signatures).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| self.inner.verify_strict(message, &sig).is_ok())
    }
}

/// `<tag> <base64 of 32 bytes> [comment]` on the first non-empty line.
fn parse_line(text: &str, tag: &str) -> Result<[u8; 32], String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| "the file is empty".to_owned())?;
    let mut fields = line.split_whitespace();
    let found = fields.next().unwrap_or_default();
    if found != tag {
        return Err(format!("starts with {found:?}, expected {tag:?}"));
    }
    let b64 = fields
        .next()
        .ok_or_else(|| format!("nothing after {tag:?}"))?;
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("the key is {} bytes, expected 32", bytes.len()))
}

fn read_small(file: File) -> io::Result<String> {
    let mut text = String::new();
    file.take(MAX_KEY_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// Create `path` (must not exist, must not be a link) with `mode` from the start, write and
/// flush `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A hidden name next to `path`: `.<file name><suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(suffix);
    path.with_file_name(name)
}
