//! A deterministic digest of a workspace tree, and what changed between two snapshots.
//!
//! The tree is read without ever following a symbolic link: entries are examined with
//! `lstat`, files are opened with `O_NOFOLLOW`, and (on Linux) every directory and file is
//! reached through the already-open parent directory (`/proc/self/fd/N/name`), so no path
//! component is resolved twice. A link is recorded with its target string. This is what keeps a
//! sandbox from making the host hash, or hang on, something outside the workspace: a link to
//! `/etc/shadow` is recorded as a link, a FIFO as a FIFO. Snapshots are meant to be taken while
//! nothing in the bottle runs; an entry that changes during the read is an error, not a guess.
//!
//! Digest (hex sha256) over: the tag `bytebot-workspace-digest-v1\0`, then for each entry in
//! path order (the order of [`std::path::Path`], component by component) a kind byte (`d`ir,
//! `f`ile, `l`ink, `s`pecial), the path's length (u64 big-endian) and raw bytes, then for a
//! file its sha256 (32 bytes), size (u64 BE) and an executable byte, for a link its target's
//! length and bytes, for a special file one byte naming its kind. The root itself is not an
//! entry.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Caps on what a snapshot reads, so a run that fills its workspace cannot make the host hash
/// without end. Going over a cap is an error, never a silently partial digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// Most entries (files, directories, links, others) in the tree.
    pub max_entries: usize,
    /// Most bytes of regular files, summed.
    pub max_total_bytes: u64,
    /// Deepest directory nesting.
    pub max_depth: usize,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        Self {
            max_entries: 200_000,
            max_total_bytes: 8 << 30,
            max_depth: 128,
        }
    }
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading the tree failed.
    #[error("cannot read {path} in the workspace: {source}")]
    Io {
        /// The entry being read (absolute, or relative to the workspace).
        path: PathBuf,
        /// The error from the system.
        source: io::Error,
    },
    /// The tree has more entries than the cap.
    #[error(
        "the workspace {root} has more than {limit} entries; clean it up or raise \
         SnapshotLimits::max_entries"
    )]
    TooManyEntries {
        /// Workspace root.
        root: PathBuf,
        /// The cap.
        limit: usize,
    },
    /// The tree's files add up to more bytes than the cap.
    #[error(
        "the files in the workspace {root} add up to more than {limit} bytes; clean it up or \
         raise SnapshotLimits::max_total_bytes"
    )]
    TooLarge {
        /// Workspace root.
        root: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// Directories nest deeper than the cap.
    #[error(
        "{path} in the workspace is nested deeper than {limit} directories; flatten it or \
         raise SnapshotLimits::max_depth"
    )]
    TooDeep {
        /// The directory that went over.
        path: PathBuf,
        /// The cap.
        limit: usize,
    },
    /// An entry changed between being listed and being read.
    #[error(
        "{path} in the workspace changed while it was being read; take snapshots only while \
         nothing in the bottle is running"
    )]
    Changed {
        /// The entry, relative to the workspace.
        path: PathBuf,
    },
}

/// What kind of special file an entry is (never opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialKind {
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
}

impl SpecialKind {
    fn tag(self) -> u8 {
        match self {
            Self::Fifo => b'p',
            Self::Socket => b's',
            Self::CharDevice => b'c',
            Self::BlockDevice => b'b',
        }
    }
}

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// sha256 of its bytes.
        sha256: [u8; 32],
        /// Size in bytes.
        size: u64,
        /// Whether any execute bit is set (a run that makes a script executable changed it).
        executable: bool,
    },
    /// A symbolic link, not followed.
    Symlink {
        /// The target string the link holds.
        target: PathBuf,
    },
    /// A FIFO, socket or device node, recorded but never opened.
    Special(SpecialKind),
}

impl Entry {
    fn kind(&self) -> u8 {
        match self {
            Self::Dir => b'd',
            Self::File { .. } => b'f',
            Self::Symlink { .. } => b'l',
            Self::Special(_) => b's',
        }
    }
}

/// The state of a workspace tree at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    entries: BTreeMap<PathBuf, Entry>,
    total_bytes: u64,
}

impl Snapshot {
    /// Every entry by path relative to the workspace, in digest order.
    pub fn entries(&self) -> &BTreeMap<PathBuf, Entry> {
        &self.entries
    }

    /// The entry at `path` (relative to the workspace).
    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e, Entry::File { .. }))
            .count()
    }

    /// Sum of the regular files' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The tree's digest (lowercase hex sha256; the encoding is in the module docs).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"bytebot-workspace-digest-v1\0");
        for (path, entry) in &self.entries {
            h.update([entry.kind()]);
            update_bytes(&mut h, path.as_os_str().as_bytes());
            match entry {
                Entry::Dir => {}
                Entry::File {
                    sha256,
                    size,
                    executable,
                } => {
                    h.update(sha256);
                    h.update(size.to_be_bytes());
                    h.update([u8::from(*executable)]);
                }
                Entry::Symlink { target } => update_bytes(&mut h, target.as_os_str().as_bytes()),
                Entry::Special(kind) => h.update([kind.tag()]),
            }
        }
        hex::encode(h.finalize())
    }
}

fn update_bytes(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Snapshot `dir` with the default [`SnapshotLimits`].
pub fn snapshot(dir: &Path) -> Result<Snapshot, SnapshotError> {
    snapshot_with_limits(dir, SnapshotLimits::default())
}

/// Snapshot `dir`, failing if the tree goes over `limits`. `dir` itself may be a link (the
/// caller named it); nothing below it is followed.
pub fn snapshot_with_limits(dir: &Path, limits: SnapshotLimits) -> Result<Snapshot, SnapshotError> {
    let io_err = |source| SnapshotError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let root = DirHandle {
        file: OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(io_err)?,
        real: dir.to_path_buf(),
    };
    let mut walker = Walker {
        root: dir,
        limits,
        snapshot: Snapshot::default(),
    };
    walker.walk(&root, Path::new(""), 0)?;
    Ok(walker.snapshot)
}

struct Walker<'a> {
    root: &'a Path,
    limits: SnapshotLimits,
    snapshot: Snapshot,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &DirHandle, rel: &Path, depth: usize) -> Result<(), SnapshotError> {
        let io_err = |source| SnapshotError::Io {
            path: rel_or_dot(rel),
            source,
        };
        let mut children = Vec::new();
        for item in fs::read_dir(dir.listing_path()).map_err(io_err)? {
            let item = item.map_err(io_err)?;
            let child_rel = rel.join(item.file_name());
            // DirEntry::metadata is an lstat relative to the directory being listed.
            let meta = item.metadata().map_err(|source| SnapshotError::Io {
                path: child_rel.clone(),
                source,
            })?;
            children.push((item.file_name(), child_rel, meta));
        }
        for (name, child_rel, meta) in children {
            if self.snapshot.entries.len() >= self.limits.max_entries {
                return Err(SnapshotError::TooManyEntries {
                    root: self.root.to_path_buf(),
                    limit: self.limits.max_entries,
                });
            }
            let child_io = |source| SnapshotError::Io {
                path: child_rel.clone(),
                source,
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(dir.child_path(&name)).map_err(child_io)?;
                self.snapshot
                    .entries
                    .insert(child_rel, Entry::Symlink { target });
            } else if ft.is_dir() {
                if depth + 1 > self.limits.max_depth {
                    return Err(SnapshotError::TooDeep {
                        path: child_rel,
                        limit: self.limits.max_depth,
                    });
                }
                let sub = dir.open_dir(&name).map_err(child_io)?;
                if !same_inode(&sub.file.metadata().map_err(child_io)?, &meta) {
                    return Err(SnapshotError::Changed { path: child_rel });
                }
                self.snapshot.entries.insert(child_rel.clone(), Entry::Dir);
                self.walk(&sub, &child_rel, depth + 1)?;
            } else if ft.is_file() {
                if self.snapshot.total_bytes.saturating_add(meta.size())
                    > self.limits.max_total_bytes
                {
                    return Err(SnapshotError::TooLarge {
                        root: self.root.to_path_buf(),
                        limit: self.limits.max_total_bytes,
                    });
                }
                let file = open_file_nofollow(&dir.child_path(&name)).map_err(child_io)?;
                let entry = hash_open_file(file, Some(&meta))
                    .map_err(child_io)?
                    .ok_or_else(|| SnapshotError::Changed {
                        path: child_rel.clone(),
                    })?;
                if let Entry::File { size, .. } = entry {
                    self.snapshot.total_bytes += size;
                }
                self.snapshot.entries.insert(child_rel, entry);
            } else {
                let kind = if ft.is_fifo() {
                    SpecialKind::Fifo
                } else if ft.is_socket() {
                    SpecialKind::Socket
                } else if ft.is_char_device() {
                    SpecialKind::CharDevice
                } else {
                    SpecialKind::BlockDevice
                };
                self.snapshot
                    .entries
                    .insert(child_rel, Entry::Special(kind));
            }
        }
        Ok(())
    }
}

fn rel_or_dot(rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    }
}

fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// An open directory, and how to name things inside it without resolving its path again.
struct DirHandle {
    file: File,
    real: PathBuf,
}

impl DirHandle {
    /// Where to list the directory from: its open descriptor where `/proc` offers it.
    fn listing_path(&self) -> PathBuf {
        if proc_fd_usable() {
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        } else {
            self.real.clone()
        }
    }

    /// A path to `name` inside this directory; only its last component is resolved afresh.
    fn child_path(&self, name: &OsStr) -> PathBuf {
        self.listing_path().join(name)
    }

    fn open_dir(&self, name: &OsStr) -> io::Result<DirHandle> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(self.child_path(name))?;
        Ok(DirHandle {
            file,
            real: self.real.join(name),
        })
    }
}

/// Whether `/proc/self/fd/N` can stand in for an open directory (Linux with /proc mounted).
fn proc_fd_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Open a file for reading without following a link in the last component; `O_NONBLOCK` so a
/// FIFO swapped in at the last moment cannot hang the open.
fn open_file_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Hash an open file. `None` if it is not a regular file, is not the inode `expected` (when
/// given) or its size changed while reading.
fn hash_open_file(mut file: File, expected: Option<&Metadata>) -> io::Result<Option<Entry>> {
    let meta = file.metadata()?;
    if !meta.is_file() || expected.is_some_and(|e| !same_inode(e, &meta)) {
        return Ok(None);
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        read += n as u64;
        if read > meta.len() {
            return Ok(None);
        }
    }
    if read != meta.len() {
        return Ok(None);
    }
    Ok(Some(Entry::File {
        sha256: h.finalize().into(),
        size: read,
        executable: meta.mode() & 0o111 != 0,
    }))
}

/// Open `rel` (relative, no `..`) below `root` for reading, following no link anywhere below
/// `root`; the result is checked to be a regular file.
pub(crate) fn open_beneath(root: &Path, rel: &Path) -> io::Result<File> {
    let mut names = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path leaves the workspace (absolute or with ..)",
                ));
            }
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
    };
    let mut dir = DirHandle {
        file: OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)?,
        real: root.to_path_buf(),
    };
    for name in dirs {
        dir = dir.open_dir(name)?;
    }
    let file = open_file_nofollow(&dir.child_path(last))?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// sha256 (hex) and size of a regular file already opened.
pub(crate) fn hash_file(file: File) -> io::Result<Option<(String, u64)>> {
    Ok(hash_open_file(file, None)?.and_then(|e| match e {
        Entry::File { sha256, size, .. } => Some((hex::encode(sha256), size)),
        _ => None,
    }))
}

/// Whether a written file is new or replaced an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Nothing (or no regular file) was at this path before.
    Added,
    /// A regular file was there with other contents, size or execute bit.
    Modified,
}

/// A regular file the run added or modified: a subject of the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Path relative to the workspace.
    pub path: PathBuf,
    /// sha256 (lowercase hex) of its contents after the run.
    pub sha256: String,
    /// Size after the run.
    pub size: u64,
    /// Added or modified.
    pub change: Change,
}

/// A symbolic link the run created or re-pointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    /// Path of the link, relative to the workspace.
    pub path: PathBuf,
    /// What it points at (never followed).
    pub target: PathBuf,
}

/// Everything that differs between two snapshots of one workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceDiff {
    /// Regular files added or modified, in path order.
    pub written: Vec<ChangedFile>,
    /// Paths present before and gone after, or now a different kind of entry.
    pub removed: Vec<PathBuf>,
    /// Links created or re-pointed.
    pub links: Vec<LinkChange>,
}

/// Compare two snapshots of one workspace.
pub fn diff(before: &Snapshot, after: &Snapshot) -> WorkspaceDiff {
    let mut out = WorkspaceDiff::default();
    for (path, entry) in &after.entries {
        let old = before.entries.get(path);
        match entry {
            Entry::File { sha256, size, .. } => {
                let change = match old {
                    Some(old @ Entry::File { .. }) if old == entry => continue,
                    Some(Entry::File { .. }) => Change::Modified,
                    _ => Change::Added,
                };
                out.written.push(ChangedFile {
                    path: path.clone(),
                    sha256: hex::encode(sha256),
                    size: *size,
                    change,
                });
            }
            Entry::Symlink { target } if old != Some(entry) => out.links.push(LinkChange {
                path: path.clone(),
                target: target.clone(),
            }),
            _ => {}
        }
    }
    for (path, entry) in &before.entries {
        match after.entries.get(path) {
            Some(now) if now.kind() == entry.kind() => {}
            _ => out.removed.push(path.clone()),
        }
    }
    out
}

/// The regular files added or modified between `before` and `after` (the statement's
/// subjects), in path order.
pub fn changed(before: &Snapshot, after: &Snapshot) -> Vec<ChangedFile> {
    diff(before, after).written
}

/// A path as JSON text: the UTF-8 string when it is one, else an escaped rendering plus the
/// raw bytes in hex (the second value) so a reader can still find the exact file.
pub(crate) fn path_text(path: &Path) -> (String, Option<String>) {
    let bytes = path.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => {
            let mut out = String::new();
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            (out, Some(hex::encode(bytes)))
        }
    }
}
