//! Host-side reads of what a sandbox wrote, confined to the workspace.
//!
//! The sandbox owns the workspace's contents: any name in it may be a symlink to `/etc/shadow`
//! or `../../root`, a FIFO that would block a reader forever, or a directory swapped for a
//! symlink between a listing and an open. So paths are resolved from an open directory fd:
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` when the kernel has it (5.6+; symlinks
//! that stay inside the workspace are followed, absolute ones and ones that climb out are
//! refused), else one component at a time with `O_NOFOLLOW` (every symlink refused). Only
//! regular files are opened. Listings walk directory fds and never follow symlinks.

use std::ffi::CString;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

/// Why a confined read was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The path is absolute, has `..`, or resolves (through a symlink) outside the workspace.
    #[error(
        "{0} leads outside the workspace (absolute path, '..' or a symlink pointing out): refused"
    )]
    Escape(PathBuf),
    /// The path names a FIFO, socket, device or directory, not a regular file.
    #[error("{0} is not a regular file: refused")]
    NotRegular(PathBuf),
    /// The file is larger than the caller allowed.
    #[error("{path} is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The caller's limit.
        max: u64,
    },
    /// The workspace holds more entries than the caller allowed.
    #[error("the workspace has more than {0} entries")]
    TooManyEntries(usize),
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What a listed workspace entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Its size in bytes.
        size: u64,
        /// Whether any execute bit is set.
        executable: bool,
    },
    /// A symlink, reported with its target and never followed.
    Symlink {
        /// Where it points (as written by the sandbox).
        target: PathBuf,
    },
    /// A FIFO, socket or device node.
    Other,
}

/// One entry under the workspace, by its path relative to the workspace root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceEntry {
    /// Relative path, `/`-separated components, no `..`.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
}

fn io_err(path: &Path, source: std::io::Error) -> ConfineError {
    ConfineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `rel` is a plain relative path (no root, no `..`, not empty).
fn plain_relative(rel: &Path) -> Result<Vec<&std::ffi::OsStr>, ConfineError> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            _ => return Err(ConfineError::Escape(rel.to_path_buf())),
        }
    }
    if parts.is_empty() {
        return Err(ConfineError::NotRegular(rel.to_path_buf()));
    }
    Ok(parts)
}

fn open_dir(path: &Path) -> Result<OwnedFd, ConfineError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| io_err(path, e))
}

fn openat(dir: &OwnedFd, name: &std::ffi::OsStr, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat with a valid dir fd and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 with RESOLVE_BENEATH; `Ok(None)` when the kernel does not have openat2.
fn openat2_beneath(
    dir: &OwnedFd,
    rel: &Path,
    flags: i32,
) -> Result<Option<OwnedFd>, std::io::Error> {
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid dir fd, a NUL-terminated path and a correctly sized struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: fd was just returned by openat2.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

fn map_open_error(rel: &Path, e: std::io::Error) -> ConfineError {
    match e.raw_os_error() {
        // EXDEV: RESOLVE_BENEATH refused; ELOOP: a symlink met O_NOFOLLOW.
        Some(libc::EXDEV) | Some(libc::ELOOP) => ConfineError::Escape(rel.to_path_buf()),
        // ENOTDIR: a component that should be a directory is a symlink or a file.
        Some(libc::ENOTDIR) => ConfineError::Escape(rel.to_path_buf()),
        _ => io_err(rel, e),
    }
}

/// Opens `rel` (relative to `workspace`) for reading, refusing anything outside the
/// workspace and anything but a regular file.
pub fn open_file(workspace: &Path, rel: &Path) -> Result<File, ConfineError> {
    let parts = plain_relative(rel)?;
    let root = open_dir(workspace)?;
    // O_NONBLOCK so a FIFO opens at once (and is refused below) instead of hanging.
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match openat2_beneath(&root, rel, flags) {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            // No openat2: walk with O_NOFOLLOW, refusing every symlink.
            let mut dir = root;
            let (last, dirs) = parts
                .split_last()
                .ok_or_else(|| ConfineError::NotRegular(rel.into()))?;
            for part in dirs {
                dir = openat(
                    &dir,
                    part,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                )
                .map_err(|e| map_open_error(rel, e))?;
            }
            openat(&dir, last, flags | libc::O_NOFOLLOW).map_err(|e| map_open_error(rel, e))?
        }
        Err(e) => return Err(map_open_error(rel, e)),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| io_err(rel, e))?;
    if !meta.file_type().is_file() {
        return Err(ConfineError::NotRegular(rel.to_path_buf()));
    }
    // Back to blocking reads for a regular file.
    // SAFETY: F_SETFL on an fd we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    Ok(file)
}

/// Reads `rel` (relative to `workspace`) whole, up to `max` bytes, with the same refusals as
/// [`open_file`].
pub fn read_file(workspace: &Path, rel: &Path, max: u64) -> Result<Vec<u8>, ConfineError> {
    let file = open_file(workspace, rel)?;
    let mut out = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| io_err(rel, e))?;
    if out.len() as u64 > max {
        return Err(ConfineError::TooLarge {
            path: rel.to_path_buf(),
            max,
        });
    }
    Ok(out)
}

/// Names in a directory fd (without `.` and `..`).
fn dir_names(dir: &OwnedFd, shown: &Path) -> Result<Vec<std::ffi::OsString>, ConfineError> {
    // fdopendir takes ownership of the fd it is given, so give it a duplicate.
    let dup = dir.try_clone().map_err(|e| io_err(shown, e))?;
    let raw = {
        use std::os::fd::IntoRawFd as _;
        dup.into_raw_fd()
    };
    // SAFETY: raw is an open directory fd; fdopendir owns it from here and closedir closes it.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let err = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so raw is still ours to close.
        unsafe { libc::close(raw) };
        return Err(io_err(shown, err));
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: stream is a valid DIR*; readdir returns null at the end.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the dirent readdir returned.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        names.push(std::ffi::OsStr::from_bytes(bytes).to_owned());
    }
    // SAFETY: closing the stream we opened.
    unsafe { libc::closedir(stream) };
    names.sort();
    Ok(names)
}

fn lstat_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<libc::stat64> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: stat64 is plain data; zeroed is valid.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat with a valid dir fd, NUL-terminated name and our own buffer.
    let r = unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn readlink_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<PathBuf> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most buf.len() bytes into our buffer.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Lists everything under `workspace` (files, symlinks, other nodes; directories are walked,
/// never through a symlink), sorted by path. Fails past `max_entries` entries.
pub fn list_files(
    workspace: &Path,
    max_entries: usize,
) -> Result<Vec<WorkspaceEntry>, ConfineError> {
    let root = open_dir(workspace)?;
    let mut out = Vec::new();
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root, PathBuf::new())];
    let mut seen = 0usize;
    while let Some((dir, prefix)) = stack.pop() {
        for name in dir_names(&dir, &prefix)? {
            seen += 1;
            if seen > max_entries {
                return Err(ConfineError::TooManyEntries(max_entries));
            }
            let rel = prefix.join(&name);
            let st = match lstat_at(&dir, &name) {
                Ok(st) => st,
                // Deleted while we walk: skip it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(io_err(&rel, e)),
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    let sub = openat(
                        &dir,
                        &name,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    )
                    .map_err(|e| map_open_error(&rel, e))?;
                    stack.push((sub, rel));
                }
                libc::S_IFREG => out.push(WorkspaceEntry {
                    path: rel,
                    kind: EntryKind::File {
                        size: st.st_size as u64,
                        executable: st.st_mode & 0o111 != 0,
                    },
                }),
                libc::S_IFLNK => {
                    let target = readlink_at(&dir, &name).map_err(|e| io_err(&rel, e))?;
                    out.push(WorkspaceEntry {
                        path: rel,
                        kind: EntryKind::Symlink { target },
                    });
                }
                _ => out.push(WorkspaceEntry {
                    path: rel,
                    kind: EntryKind::Other,
                }),
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_inside_and_refuses_escapes_fifos_and_dotdot() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path();
        std::fs::create_dir(w.join("sub")).unwrap();
        std::fs::write(w.join("sub/ok.txt"), "fine").unwrap();
        symlink(outside.path().join("secret"), w.join("abs")).unwrap();
        symlink("../../../../../../../../etc/passwd", w.join("rel")).unwrap();
        symlink(outside.path(), w.join("dirlink")).unwrap();
        symlink("sub/ok.txt", w.join("inner")).unwrap();
        let fifo = CString::new(w.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        assert_eq!(read_file(w, Path::new("sub/ok.txt"), 100).unwrap(), b"fine");
        for bad in [
            "abs",
            "rel",
            "dirlink/secret",
            "../x",
            "/etc/passwd",
            "sub/../../x",
        ] {
            let err = read_file(w, Path::new(bad), 100).unwrap_err();
            assert!(matches!(err, ConfineError::Escape(_)), "{bad}: {err}");
        }
        assert!(matches!(
            read_file(w, Path::new("fifo"), 100),
            Err(ConfineError::NotRegular(_))
        ));
        assert!(matches!(
            read_file(w, Path::new("sub"), 100),
            Err(ConfineError::NotRegular(_))
        ));
        assert!(matches!(
            read_file(w, Path::new("sub/ok.txt"), 2),
            Err(ConfineError::TooLarge { .. })
        ));
        // A symlink that stays inside is followed when openat2 exists, refused otherwise.
        match read_file(w, Path::new("inner"), 100) {
            Ok(bytes) => assert_eq!(bytes, b"fine"),
            Err(e) => assert!(matches!(e, ConfineError::Escape(_))),
        }

        let list = list_files(w, 100).unwrap();
        let paths: Vec<String> = list.iter().map(|e| e.path.display().to_string()).collect();
        assert_eq!(
            paths,
            ["abs", "dirlink", "fifo", "inner", "rel", "sub/ok.txt"]
        );
        assert!(matches!(list[1].kind, EntryKind::Symlink { .. }));
        assert_eq!(list[2].kind, EntryKind::Other);
        assert_eq!(
            list[5].kind,
            EntryKind::File {
                size: 4,
                executable: false
            }
        );
        assert!(matches!(
            list_files(w, 3),
            Err(ConfineError::TooManyEntries(3))
        ));
    }
}
