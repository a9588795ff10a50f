//! Files confined to the workspace folder: Bytebot's `read_file` and
//! `write_file` actions and our `/v1/files` routes.
//!
//! A path is first resolved to a symlink-free path below the canonical
//! workspace: symlinks inside the workspace that stay inside are followed,
//! any that lead out are refused. It is then opened one component at a time
//! with `openat(O_NOFOLLOW)` from a descriptor of the workspace, so a symlink
//! swapped in after the check makes the kernel refuse rather than follow it.
//! Writes go to a temporary file in the same folder and are renamed into
//! place, so readers never see a torn file. No shell, no sudo, no process.

use crate::http::AppState;
use crate::http::error::ApiError;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytebot_protocol::{FileRead, FileWrite};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a file request failed. The message says what was wrong and what to
/// do; the kind picks the HTTP status of `/v1/files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The path is malformed, leaves the workspace or names the wrong kind
    /// of thing (400, field `path`).
    BadPath(String),
    /// Nothing at that path (404).
    NotFound(String),
    /// Over `desktop.max_file_bytes` (413).
    TooLarge(String),
    /// The file system failed (500).
    Io(String),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::BadPath(m)
            | FileError::NotFound(m)
            | FileError::TooLarge(m)
            | FileError::Io(m) => f.write_str(m),
        }
    }
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::BadPath(m) => ApiError::bad_field("path", m),
            FileError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            FileError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            FileError::Io(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "file_error", m),
        }
    }
}

/// A path checked to lie inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical workspace folder.
    pub root: PathBuf,
    /// Components below `root`: no `.`, no `..`, and no symlinks at the
    /// time of the check (except a final one kept on purpose, see [`resolve`]).
    pub rel: Vec<OsString>,
    /// The path as the caller meant it, below the workspace (`a/b.txt`, `.`),
    /// before symlinks were followed: what we name in answers.
    pub shown: String,
}

impl Resolved {
    /// The absolute path.
    pub fn path(&self) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(&self.rel);
        p
    }

    fn shown_name(&self) -> String {
        self.shown
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// Resolves `path` (relative to the workspace, or absolute inside it) to a
/// symlink-free path below the canonical workspace. With `follow_final`
/// false the last component is kept as given even if it is a symlink (for
/// deleting the link itself).
pub fn resolve(workspace: &Path, path: &str, follow_final: bool) -> Result<Resolved, FileError> {
    if path.contains('\0') {
        return Err(FileError::BadPath(
            "path contains a NUL byte; give a plain file path".into(),
        ));
    }
    if path.trim().is_empty() {
        return Err(FileError::BadPath(
            "path is empty; give a file path inside the workspace".into(),
        ));
    }
    let root = fs::canonicalize(workspace).map_err(|e| {
        FileError::Io(format!(
            "the workspace folder {} is not usable: {e}",
            workspace.display()
        ))
    })?;
    let lexical = lexical_rel(workspace, &root, path)?;
    let shown = show(&lexical);
    let rel = follow_links(&root, lexical, follow_final, path)?;
    Ok(Resolved { root, rel, shown })
}

/// Splits `path` into components below the workspace without touching the
/// disk: `.` dropped, `..` applied, and refused where it would climb out.
fn lexical_rel(workspace: &Path, root: &Path, path: &str) -> Result<Vec<OsString>, FileError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return normalize(p).ok_or_else(|| {
            FileError::BadPath(format!(
                "path \"{path}\" leaves the workspace through \"..\"; give a path inside {}",
                root.display()
            ))
        });
    }
    // `/a/../b` is `/b`; `..` above `/` stays at `/` as the kernel does.
    let mut abs = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => abs.push(n),
            Component::ParentDir => {
                abs.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    // Accept the workspace as configured or as canonicalized (they differ
    // when the configured path goes through a symlink such as /tmp).
    let configured = std::path::absolute(workspace)
        .ok()
        .and_then(|w| normalize_abs(&w));
    let below = [Some(root.to_path_buf()), configured]
        .into_iter()
        .flatten()
        .find_map(|base| abs.strip_prefix(&base).ok().map(Path::to_path_buf));
    match below {
        Some(rel) => Ok(rel
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect()),
        None => Err(FileError::BadPath(format!(
            "path \"{path}\" is outside the workspace {}; only files inside it can be used (relative paths start there)",
            root.display()
        ))),
    }
}

/// Components of a relative path with `.` and `..` applied; `None` when
/// `..` climbs above the start.
fn normalize(p: &Path) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn normalize_abs(p: &Path) -> Option<PathBuf> {
    let rel = p.strip_prefix("/").ok()?;
    let mut out = PathBuf::from("/");
    out.extend(normalize(rel)?);
    Some(out)
}

fn show(rel: &[OsString]) -> String {
    if rel.is_empty() {
        return ".".into();
    }
    rel.iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Follows symlinks in the existing part of the path by canonicalizing its
/// deepest existing ancestor, and checks the result is still inside `root`.
fn follow_links(
    root: &Path,
    mut rel: Vec<OsString>,
    follow_final: bool,
    asked: &str,
) -> Result<Vec<OsString>, FileError> {
    let kept = if follow_final { None } else { rel.pop() };
    let mut existing = rel.len();
    let mut probe;
    loop {
        probe = root.to_path_buf();
        probe.extend(&rel[..existing]);
        match fs::symlink_metadata(&probe) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound && existing > 0 => existing -= 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && existing > 0 => {
                return Err(FileError::BadPath(format!(
                    "path \"{asked}\" goes through a file as if it were a folder; check the folder names"
                )));
            }
            Err(e) => {
                return Err(FileError::Io(format!(
                    "cannot inspect {}: {e}",
                    probe.display()
                )));
            }
        }
    }
    let canonical = match fs::canonicalize(&probe) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FileError::BadPath(format!(
                "path \"{asked}\" goes through a symbolic link that points to nothing; fix or remove the link"
            )));
        }
        Err(e) => {
            return Err(FileError::Io(format!(
                "cannot resolve {}: {e}",
                probe.display()
            )));
        }
    };
    let Ok(inside) = canonical.strip_prefix(root) else {
        return Err(FileError::BadPath(format!(
            "path \"{asked}\" goes through a symbolic link that leads outside the workspace {}; only files inside it can be used",
            root.display()
        )));
    };
    let mut out: Vec<OsString> = inside
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    out.extend(rel.drain(existing..));
    out.extend(kept);
    Ok(out)
}

// ---- descriptor-relative file system calls ----

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a file name"))
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)?;
    Ok(f.into())
}

fn openat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    // SAFETY: `dir` is a live descriptor and `name` a NUL-terminated string
    // that outlives the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: as in `openat`.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn renameat(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (from, to) = (c_name(from)?, c_name(to)?);
    // SAFETY: as in `openat`.
    let rc =
        unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: as in `openat`.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What is at `name` in `dir`, without following a symlink; `None` if nothing.
fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<fs::Metadata>> {
    match openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
        Ok(fd) => File::from(fd).metadata().map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_link_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

fn io_error(what: &str, r: &Resolved, e: &io::Error) -> FileError {
    FileError::Io(format!("cannot {what} \"{}\": {e}", r.shown))
}

/// Opens the folders of `r.rel` one by one without following symlinks,
/// creating missing ones when `create`; `upto` components are walked.
fn walk(r: &Resolved, upto: usize, create: bool) -> Result<OwnedFd, FileError> {
    let mut dir = open_root(&r.root).map_err(|e| io_error("open the workspace for", r, &e))?;
    for name in &r.rel[..upto] {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let mut opened = openat(dir.as_fd(), name, flags, 0);
        if create && matches!(&opened, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            match mkdirat(dir.as_fd(), name, 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create a folder for", r, &e)),
            }
            opened = openat(dir.as_fd(), name, flags, 0);
        }
        dir = match opened {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FileError::NotFound(format!(
                    "folder \"{}\" does not exist in the workspace",
                    name.to_string_lossy()
                )));
            }
            Err(e) if is_link_refusal(&e) => {
                return Err(FileError::BadPath(format!(
                    "\"{}\" in path \"{}\" is not a folder inside the workspace (a file, or a symbolic link that changed)",
                    name.to_string_lossy(),
                    r.shown
                )));
            }
            Err(e) => return Err(io_error("open a folder of", r, &e)),
        };
    }
    Ok(dir)
}

/// The open parent folder and the final name of a file path.
fn parent_of(r: &Resolved, create: bool) -> Result<(OwnedFd, OsString), FileError> {
    let Some(name) = r.rel.last().cloned() else {
        return Err(FileError::BadPath(
            "path names the workspace folder itself; give a file inside it, e.g. \"notes.txt\""
                .into(),
        ));
    };
    let dir = walk(r, r.rel.len() - 1, create)?;
    Ok((dir, name))
}

fn too_large(what: &str, size: impl std::fmt::Display, max: usize) -> FileError {
    FileError::TooLarge(format!(
        "{what} is {size} bytes, over the limit of {max} bytes (desktop.max_file_bytes)"
    ))
}

// ---- operations ----

/// A file read from the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOk {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its name without folders.
    pub name: String,
    /// Its path below the workspace.
    pub path: String,
}

/// Reads a regular file of at most `max_bytes` (blocking).
pub fn read_file(workspace: &Path, max_bytes: usize, path: &str) -> Result<ReadOk, FileError> {
    let r = resolve(workspace, path, true)?;
    let (dir, name) = parent_of(&r, false)?;
    // O_NONBLOCK so a FIFO can't hang us; regular files ignore it.
    let fd = openat(
        dir.as_fd(),
        &name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            FileError::NotFound(format!("no file \"{}\" in the workspace", r.shown))
        }
        _ if is_link_refusal(&e) => FileError::BadPath(format!(
            "\"{}\" is a symbolic link that changed while opening; try again",
            r.shown
        )),
        _ => io_error("open", &r, &e),
    })?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| io_error("inspect", &r, &e))?;
    if meta.is_dir() {
        return Err(FileError::BadPath(format!(
            "\"{}\" is a folder, not a file; list it with GET /v1/files?path={}",
            r.shown, r.shown
        )));
    }
    if !meta.is_file() {
        return Err(FileError::BadPath(format!(
            "\"{}\" is not a regular file",
            r.shown
        )));
    }
    if meta.len() > max_bytes as u64 {
        return Err(too_large(
            &format!("\"{}\"", r.shown),
            meta.len(),
            max_bytes,
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte over the cap tells a file that grew since fstat.
    std::io::Read::by_ref(&mut file)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("read", &r, &e))?;
    if bytes.len() > max_bytes {
        return Err(too_large(
            &format!("\"{}\"", r.shown),
            format!("over {max_bytes}"),
            max_bytes,
        ));
    }
    Ok(ReadOk {
        bytes,
        name: r.shown_name(),
        path: r.shown,
    })
}

/// A file written into the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOk {
    /// Its path below the workspace.
    pub path: String,
    /// Its absolute path.
    pub full_path: PathBuf,
    /// Bytes written.
    pub size: u64,
}

/// Writes `bytes` to a file, creating its folders, through a temporary file
/// renamed into place (blocking).
pub fn write_file(
    workspace: &Path,
    max_bytes: usize,
    path: &str,
    bytes: &[u8],
) -> Result<WriteOk, FileError> {
    if bytes.len() > max_bytes {
        return Err(too_large("the data", bytes.len(), max_bytes));
    }
    let r = resolve(workspace, path, true)?;
    let (dir, name) = parent_of(&r, true)?;
    let mode = match stat_at(dir.as_fd(), &name) {
        Ok(Some(m)) if m.is_dir() => {
            return Err(FileError::BadPath(format!(
                "\"{}\" is a folder; give a file name inside it",
                r.shown
            )));
        }
        // Keep the permissions of a file we replace.
        Ok(Some(m)) if m.is_file() => m.permissions().mode() & 0o7777,
        Ok(_) => 0o644,
        Err(e) => return Err(io_error("inspect", &r, &e)),
    };
    let tmp = OsString::from(format!(
        ".bytebot-{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let fd = openat(
        dir.as_fd(),
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode as libc::mode_t,
    )
    .map_err(|e| io_error("create a temporary file for", &r, &e))?;
    let mut file = File::from(fd);
    let written = file
        .write_all(bytes)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_data())
        .and_then(|()| renameat(dir.as_fd(), &tmp, &name));
    if let Err(e) = written {
        let _ = unlinkat(dir.as_fd(), &tmp, 0);
        return Err(io_error("write", &r, &e));
    }
    Ok(WriteOk {
        full_path: r.path(),
        path: r.shown,
        size: bytes.len() as u64,
    })
}

/// Deletes a file, a symlink (not its target) or an empty folder (blocking).
pub fn delete_file(workspace: &Path, path: &str) -> Result<String, FileError> {
    let r = resolve(workspace, path, false)?;
    let (dir, name) = parent_of(&r, false)?;
    let meta = match stat_at(dir.as_fd(), &name) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(FileError::NotFound(format!(
                "no file \"{}\" in the workspace",
                r.shown
            )));
        }
        Err(e) => return Err(io_error("inspect", &r, &e)),
    };
    let flags = if meta.is_dir() { libc::AT_REMOVEDIR } else { 0 };
    unlinkat(dir.as_fd(), &name, flags).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => FileError::BadPath(format!(
            "folder \"{}\" is not empty; delete its files first",
            r.shown
        )),
        _ => io_error("delete", &r, &e),
    })?;
    Ok(r.shown)
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Last modification, RFC 3339 in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// Lists a folder, sorted by name (blocking); returns its path below the
/// workspace and the entries.
pub fn list_dir(workspace: &Path, path: &str) -> Result<(String, Vec<Entry>), FileError> {
    let r = resolve(workspace, path, true)?;
    let dir = walk(&r, r.rel.len(), false).map_err(|e| match e {
        FileError::BadPath(_) if r.rel.last().is_some() => FileError::BadPath(format!(
            "\"{}\" is a file, not a folder; read it with GET /v1/files/content?path={}",
            r.shown, r.shown
        )),
        other => other,
    })?;
    // /proc/self/fd/N names exactly the folder we opened, whatever happens
    // to its path meanwhile.
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let entries = fs::read_dir(&via_fd)
        .or_else(|_| fs::read_dir(r.path()))
        .map_err(|e| io_error("list", &r, &e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", &r, &e))?;
        // An entry removed while we list it is simply left out.
        let Ok(meta) = entry.metadata() else { continue };
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        out.push(Entry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind,
            size: meta.len(),
            modified: meta.modified().ok().and_then(rfc3339),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((r.shown, out))
}

/// `2023-11-14T22:13:20Z`; `None` before 1970.
pub fn rfc3339(t: SystemTime) -> Option<String> {
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// A MIME type from the file name's extension.
pub fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "tif" | "tiff" => "image/tiff",
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "7z" => "application/x-7z-compressed",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "rtf" => "application/rtf",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// Standard or URL-safe base64, padded or not, with line breaks allowed:
/// what models and tools actually send.
fn decode_base64(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    GeneralPurpose::new(&base64::alphabet::STANDARD, config)
        .decode(&compact)
        .or_else(|e| {
            GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
                .decode(&compact)
                .map_err(|_| e)
        })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(FileError::Io(format!("file worker failed: {e}"))))
}

/// Bytebot's `read_file`: never an HTTP error, `success:false` with a reason.
pub async fn read_action(workspace: &Path, max_bytes: usize, path: &str) -> FileRead {
    let (workspace, path) = (workspace.to_path_buf(), path.to_string());
    match blocking(move || read_file(&workspace, max_bytes, &path)).await {
        Ok(ok) => FileRead {
            success: true,
            size: Some(ok.bytes.len() as u64),
            data: Some(base64::engine::general_purpose::STANDARD.encode(&ok.bytes)),
            media_type: Some(media_type(&ok.name).to_string()),
            name: Some(ok.name),
            message: None,
        },
        Err(e) => FileRead::failed(format!("Error reading file: {e}")),
    }
}

/// Bytebot's `write_file`: never an HTTP error, `success:false` with a reason.
pub async fn write_action(workspace: &Path, max_bytes: usize, path: &str, data: &str) -> FileWrite {
    let failed = |m: String| FileWrite {
        success: false,
        message: format!("Error writing file: {m}"),
    };
    // Cheap size check before decoding: base64 carries 3 bytes per 4 characters.
    if data.len() / 4 * 3 > max_bytes.saturating_add(2) {
        return failed(
            too_large(
                "the data",
                format!("about {}", data.len() / 4 * 3),
                max_bytes,
            )
            .to_string(),
        );
    }
    let bytes = match decode_base64(data) {
        Ok(b) => b,
        Err(e) => {
            return failed(format!(
                "data is not valid base64 ({e}); send the file's bytes base64-encoded"
            ));
        }
    };
    let (workspace, path) = (workspace.to_path_buf(), path.to_string());
    match blocking(move || write_file(&workspace, max_bytes, &path, &bytes)).await {
        Ok(ok) => FileWrite {
            success: true,
            message: format!("File written successfully to: {}", ok.full_path.display()),
        },
        Err(e) => failed(e.to_string()),
    }
}

// ---- /v1/files ----

/// Routes under `/v1/files`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/files", get(list)).route(
        "/v1/files/content",
        get(get_content).put(put_content).delete(delete_content),
    )
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: Option<String>,
}

fn query_path(
    q: Result<Query<PathQuery>, QueryRejection>,
    default: Option<&str>,
) -> Result<String, ApiError> {
    let q = q.map_err(|e| ApiError::bad_field("path", format!("bad query string: {e}")))?;
    match (q.0.path, default) {
        (Some(p), _) if !p.is_empty() => Ok(p),
        (_, Some(d)) => Ok(d.to_string()),
        _ => Err(ApiError::bad_field(
            "path",
            "is missing; add ?path=FILE (relative to the workspace)",
        )),
    }
}

async fn list(
    State(state): State<AppState>,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = query_path(q, Some("."))?;
    let workspace = state.workspace.clone();
    let (shown, entries) = blocking(move || list_dir(&workspace, &path)).await?;
    Ok(Json(json!({ "path": shown, "entries": entries })).into_response())
}

async fn get_content(
    State(state): State<AppState>,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = query_path(q, None)?;
    let (workspace, max) = (state.workspace.clone(), state.config.max_file_bytes);
    let ok = blocking(move || read_file(&workspace, max, &path)).await?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(media_type(&ok.name)),
        ),
        (header::CONTENT_DISPOSITION, content_disposition(&ok.name)),
        // Served from the daemon's origin: never let a browser run it as a page.
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    Ok((headers, ok.bytes).into_response())
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266).
fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

async fn put_content(
    State(state): State<AppState>,
    q: Result<Query<PathQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let path = query_path(q, None)?;
    let max = state.config.max_file_bytes;
    let mut data = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("could not read the body: {e}"),
            )
        })?;
        if data.len() + chunk.len() > max {
            return Err(too_large("the body", format!("over {max}"), max).into());
        }
        data.extend_from_slice(&chunk);
    }
    let workspace = state.workspace.clone();
    let ok = blocking(move || write_file(&workspace, max, &path, &data)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "path": ok.path, "size": ok.size })),
    )
        .into_response())
}

async fn delete_content(
    State(state): State<AppState>,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let path = query_path(q, None)?;
    let workspace = state.workspace.clone();
    blocking(move || delete_file(&workspace, &path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn ws() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        fs::create_dir(&ws).unwrap();
        (dir, ws)
    }

    fn rel(r: &Resolved) -> String {
        show(&r.rel)
    }

    #[test]
    fn relative_and_absolute_paths_inside() {
        let (_d, ws) = ws();
        assert_eq!(rel(&resolve(&ws, "a.txt", true).unwrap()), "a.txt");
        assert_eq!(
            rel(&resolve(&ws, "./x/../b/c.txt", true).unwrap()),
            "b/c.txt"
        );
        let abs = ws.join("d/e.txt");
        assert_eq!(
            rel(&resolve(&ws, abs.to_str().unwrap(), true).unwrap()),
            "d/e.txt"
        );
        let canon = fs::canonicalize(&ws).unwrap().join("f.txt");
        assert_eq!(
            rel(&resolve(&ws, canon.to_str().unwrap(), true).unwrap()),
            "f.txt"
        );
        assert_eq!(rel(&resolve(&ws, ".", true).unwrap()), ".");
    }

    #[test]
    fn escapes_are_refused() {
        let (d, ws) = ws();
        for p in ["../x", "a/../../x", "/etc/passwd", "/", ""] {
            assert!(
                matches!(resolve(&ws, p, true), Err(FileError::BadPath(_))),
                "{p}"
            );
        }
        let sibling = d.path().join("outside.txt");
        let err = resolve(&ws, sibling.to_str().unwrap(), true).unwrap_err();
        assert!(err.to_string().contains("outside the workspace"), "{err}");
        let sneaky = format!("{}/../outside.txt", ws.display());
        assert!(resolve(&ws, &sneaky, true).is_err());
        assert!(
            resolve(&ws, "a\0b", true)
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
    }

    #[test]
    fn symlinks_out_are_refused_and_in_are_followed() {
        let (d, ws) = ws();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        symlink(&outside, ws.join("out")).unwrap();
        symlink(outside.join("new.txt"), ws.join("dangling")).unwrap();
        fs::create_dir(ws.join("real")).unwrap();
        symlink("real", ws.join("inner")).unwrap();
        for p in ["out", "out/x.txt", "out/deeper/x.txt", "dangling"] {
            let e = resolve(&ws, p, true).unwrap_err();
            assert!(matches!(e, FileError::BadPath(_)), "{p}: {e}");
        }
        assert_eq!(
            rel(&resolve(&ws, "inner/x.txt", true).unwrap()),
            "real/x.txt"
        );
        // Deleting a link removes the link: its own name is kept.
        assert_eq!(rel(&resolve(&ws, "out", false).unwrap()), "out");
        assert!(resolve(&ws, "out/x", false).is_err());
    }

    #[test]
    fn file_used_as_folder_is_refused() {
        let (_d, ws) = ws();
        fs::write(ws.join("f"), "x").unwrap();
        assert!(matches!(
            resolve(&ws, "f/g.txt", true),
            Err(FileError::BadPath(_))
        ));
    }

    #[test]
    fn write_read_delete_roundtrip() {
        let (_d, ws) = ws();
        let w = write_file(&ws, 100, "sub/dir/a.txt", b"hello").unwrap();
        assert_eq!((w.path.as_str(), w.size), ("sub/dir/a.txt", 5));
        let r = read_file(&ws, 100, "sub/dir/a.txt").unwrap();
        assert_eq!(
            (r.bytes.as_slice(), r.name.as_str()),
            (&b"hello"[..], "a.txt")
        );
        assert!(matches!(
            read_file(&ws, 4, "sub/dir/a.txt"),
            Err(FileError::TooLarge(_))
        ));
        assert!(matches!(
            write_file(&ws, 4, "b.txt", b"hello"),
            Err(FileError::TooLarge(_))
        ));
        assert!(matches!(
            read_file(&ws, 100, "sub"),
            Err(FileError::BadPath(_))
        ));
        assert!(matches!(
            read_file(&ws, 100, "nope.txt"),
            Err(FileError::NotFound(_))
        ));
        let (shown, entries) = list_dir(&ws, "sub/dir").unwrap();
        assert_eq!(shown, "sub/dir");
        assert_eq!(entries.len(), 1, "no temporary file left: {entries:?}");
        delete_file(&ws, "sub/dir/a.txt").unwrap();
        assert!(matches!(
            delete_file(&ws, "sub/dir/a.txt"),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn final_symlink_out_is_not_written_through() {
        let (d, ws) = ws();
        let target = d.path().join("target.txt");
        fs::write(&target, "original").unwrap();
        symlink(&target, ws.join("link.txt")).unwrap();
        assert!(write_file(&ws, 100, "link.txt", b"evil").is_err());
        assert!(read_file(&ws, 100, "link.txt").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "original");
        // Deleting it removes the link, not the target.
        delete_file(&ws, "link.txt").unwrap();
        assert!(target.exists());
    }

    #[test]
    fn dates_and_types() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(s)).unwrap();
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(media_type("A.PNG"), "image/png");
        assert_eq!(media_type("notes"), "application/octet-stream");
        assert_eq!(decode_base64("aGk=\n").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_base64("not base64!").is_err());
    }

    #[test]
    fn content_disposition_escapes() {
        let v = content_disposition("ré\"sumé.pdf");
        let s = v.to_str().unwrap();
        assert!(s.starts_with("attachment; filename=\"r__sum_.pdf\""), "{s}");
        assert!(
            s.contains("filename*=UTF-8''r%C3%A9%22sum%C3%A9.pdf"),
            "{s}"
        );
    }
}
