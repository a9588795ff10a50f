//! Process and memory limits: a per-run cgroup when one can be made, rlimits otherwise.
//!
//! Order of preference, per controller (`pids`, `memory`):
//! 1. cgroup v2: a child of our own cgroup when that cgroup already delegates the controller
//!    (its `cgroup.subtree_control` lists it), else a child of the hierarchy's root when the
//!    root is writable (we try to enable the controller there);
//! 2. cgroup v1: a child of our own cgroup in that controller's hierarchy, else of its root;
//! 3. rlimits set by the init on the command: `RLIMIT_NPROC` (the kernel ignores it for host
//!    uid 0, so as root without a cgroup the process limit is reported as not enforced) and
//!    `RLIMIT_AS` (per-process address space, a weaker stand-in for a memory limit).
//!
//! bwrap is moved into the run cgroup between fork and exec, so the whole sandbox (bwrap, its
//! pid 1, the init, the command and every descendant) is counted from its first instruction.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Tasks the sandbox itself runs besides the command: bwrap outside, the init (pid 1) inside.
/// All of them sit in the run cgroup.
pub(crate) const SANDBOX_OVERHEAD_TASKS: u32 = 2;
/// Tasks besides the command that RLIMIT_NPROC counts: only the init (it counts per uid in the
/// sandbox's user namespace; bwrap runs outside it).
pub(crate) const RLIMIT_OVERHEAD_TASKS: u32 = 1;

/// How one limit was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// A cgroup v2 controller on a per-run cgroup.
    CgroupV2,
    /// A cgroup v1 controller on a per-run cgroup.
    CgroupV1,
    /// An rlimit on the command (`RLIMIT_NPROC` or `RLIMIT_AS`).
    Rlimit,
    /// Not enforced.
    None,
}

/// How the process and memory limits were enforced in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// Process (task) limit.
    pub processes: Mechanism,
    /// Memory limit.
    pub memory: Mechanism,
    /// What was not enforced, or only weakly, and how to fix it.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Self::Pids => "pids",
            Self::Memory => "memory",
        }
    }
}

/// Where the cgroup hierarchies are and where we sit in them; read once per process.
#[derive(Debug, Default)]
struct Layout {
    /// (candidate parents, best first) of the v2 hierarchy.
    v2: Vec<PathBuf>,
    /// Per v1 controller: candidate parents, best first.
    v1_pids: Vec<PathBuf>,
    v1_memory: Vec<PathBuf>,
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Layout::parse(&mountinfo, &own)
    })
}

impl Layout {
    fn parse(mountinfo: &str, own_cgroups: &str) -> Self {
        // /proc/self/cgroup: "id:controllers:path"; v2 is "0::path".
        let mut own_v2 = None;
        let mut own_v1: Vec<(Vec<&str>, &str)> = Vec::new();
        for line in own_cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                own_v2 = Some(path);
            } else {
                own_v1.push((ctrls.split(',').collect(), path));
            }
        }
        let mut layout = Self::default();
        for line in mountinfo.lines() {
            // "id parent major:minor root mountpoint opts [optional...] - fstype source superopts"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(mountpoint), Some(fstype)) =
                (fields.get(3), fields.get(4), rfields.first())
            else {
                continue;
            };
            let mountpoint = unescape_mountinfo(mountpoint);
            match *fstype {
                "cgroup2" => {
                    if let Some(own) = own_v2 {
                        layout.v2 = candidates(&mountpoint, root, own);
                    }
                }
                "cgroup" => {
                    let superopts: Vec<&str> = rfields
                        .get(2)
                        .map(|s| s.split(',').collect())
                        .unwrap_or_default();
                    for (controller, slot) in [
                        ("pids", &mut layout.v1_pids),
                        ("memory", &mut layout.v1_memory),
                    ] {
                        if !superopts.contains(&controller) {
                            continue;
                        }
                        let own = own_v1
                            .iter()
                            .find(|(ctrls, _)| ctrls.contains(&controller))
                            .map(|(_, path)| *path)
                            .unwrap_or("/");
                        *slot = candidates(&mountpoint, root, own);
                    }
                }
                _ => {}
            }
        }
        layout
    }
}

/// Our own cgroup's directory first, then the hierarchy's root as seen through this mount.
fn candidates(mountpoint: &str, mount_root: &str, own: &str) -> Vec<PathBuf> {
    let base = PathBuf::from(mountpoint);
    let mut out = Vec::new();
    let relative = if mount_root == "/" {
        Some(own)
    } else {
        own.strip_prefix(mount_root)
    };
    if let Some(rel) = relative {
        let rel = rel.trim_start_matches('/');
        if !rel.is_empty() {
            out.push(base.join(rel));
        }
    }
    out.push(base);
    out
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One directory of the per-run cgroup (one for v2, one per hierarchy for v1).
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    version: Version,
    controllers: Vec<Controller>,
}

/// The per-run cgroup(s); removed by `finish` (or, as a last resort, on drop).
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dirs: Vec<Dir>,
    removed: bool,
}

/// Limit violations seen in the cgroup counters after a run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Events {
    pub oom_killed: bool,
    pub process_limit_hit: bool,
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn unique_name() -> String {
    format!("bytebot-bottle-{}", uuid::Uuid::new_v4().simple())
}

/// Makes a v2 child under the first candidate that delegates at least one wanted controller.
fn make_v2(candidates: &[PathBuf], wanted: &[Controller]) -> Option<Dir> {
    for parent in candidates {
        let available = read_trim(&parent.join("cgroup.controllers")).unwrap_or_default();
        let mut enabled = read_trim(&parent.join("cgroup.subtree_control")).unwrap_or_default();
        for c in wanted {
            let name = c.name();
            if available.split(' ').any(|x| x == name) && !enabled.split(' ').any(|x| x == name) {
                // Fails with EBUSY when the parent holds processes (not the root): fine.
                let _ = write_file(&parent.join("cgroup.subtree_control"), &format!("+{name}"));
            }
        }
        enabled = read_trim(&parent.join("cgroup.subtree_control")).unwrap_or_default();
        let controllers: Vec<Controller> = wanted
            .iter()
            .copied()
            .filter(|c| enabled.split(' ').any(|x| x == c.name()))
            .collect();
        if controllers.is_empty() {
            continue;
        }
        let path = parent.join(unique_name());
        if fs::create_dir(&path).is_ok() {
            return Some(Dir {
                path,
                version: Version::V2,
                controllers,
            });
        }
    }
    None
}

fn make_v1(candidates: &[PathBuf], controller: Controller) -> Option<Dir> {
    for parent in candidates {
        let path = parent.join(unique_name());
        if fs::create_dir(&path).is_ok() {
            return Some(Dir {
                path,
                version: Version::V1,
                controllers: vec![controller],
            });
        }
    }
    None
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl RunCgroup {
    /// Creates the per-run cgroup(s) and writes the limits. Returns `None` when no cgroup could
    /// be made; the `Enforcement` says what the run will rely on instead.
    pub(crate) fn create(memory_bytes: u64, processes: u32) -> (Option<Self>, Enforcement) {
        let layout = layout();
        let wanted = [Controller::Pids, Controller::Memory];
        let mut dirs = Vec::new();
        if let Some(dir) = make_v2(&layout.v2, &wanted) {
            dirs.push(dir);
        }
        let covered =
            |dirs: &Vec<Dir>, c: Controller| dirs.iter().any(|d| d.controllers.contains(&c));
        if !covered(&dirs, Controller::Pids)
            && let Some(dir) = make_v1(&layout.v1_pids, Controller::Pids)
        {
            dirs.push(dir);
        }
        if !covered(&dirs, Controller::Memory)
            && let Some(dir) = make_v1(&layout.v1_memory, Controller::Memory)
        {
            dirs.push(dir);
        }

        let mut warnings = Vec::new();
        let pids_max = (u64::from(processes) + u64::from(SANDBOX_OVERHEAD_TASKS)).to_string();
        let memory = memory_bytes.to_string();
        // A controller whose limit cannot be written does not count as enforced.
        for dir in &mut dirs {
            let mut ok = Vec::new();
            for c in dir.controllers.iter().copied() {
                let written = match (dir.version, c) {
                    (_, Controller::Pids) => write_file(&dir.path.join("pids.max"), &pids_max),
                    (Version::V2, Controller::Memory) => {
                        let r = write_file(&dir.path.join("memory.max"), &memory);
                        // No swap, so the limit bites instead of paging forever.
                        let _ = write_file(&dir.path.join("memory.swap.max"), "0");
                        r
                    }
                    (Version::V1, Controller::Memory) => {
                        let r = write_file(&dir.path.join("memory.limit_in_bytes"), &memory);
                        let _ = write_file(&dir.path.join("memory.memsw.limit_in_bytes"), &memory);
                        r
                    }
                };
                match written {
                    Ok(()) => ok.push(c),
                    Err(e) => warnings.push(format!(
                        "could not set the {} limit in {}: {e}",
                        c.name(),
                        dir.path.display()
                    )),
                }
            }
            dir.controllers = ok;
        }

        let mechanism = |c: Controller| {
            dirs.iter()
                .find(|d| d.controllers.contains(&c))
                .map(|d| match d.version {
                    Version::V1 => Mechanism::CgroupV1,
                    Version::V2 => Mechanism::CgroupV2,
                })
        };
        let processes_mech = match mechanism(Controller::Pids) {
            Some(m) => m,
            None if !is_root() => Mechanism::Rlimit,
            None => {
                warnings.push(
                    "process limit NOT enforced: no writable cgroup with the pids controller \
                     (v2 delegated or v1 mounted rw), and RLIMIT_NPROC does not apply to host \
                     uid 0; run as a non-root user or give this process a writable cgroup \
                     (e.g. systemd Delegate=yes, or docker run --cgroupns=host with a rw \
                     /sys/fs/cgroup)"
                        .to_owned(),
                );
                Mechanism::None
            }
        };
        let memory_mech = match mechanism(Controller::Memory) {
            Some(m) => m,
            None => {
                warnings.push(
                    "memory limited per process through RLIMIT_AS (address space), not for \
                     the whole sandbox: no writable cgroup with the memory controller"
                        .to_owned(),
                );
                Mechanism::Rlimit
            }
        };
        dirs.retain(|d| {
            !d.controllers.is_empty() || {
                let _ = fs::remove_dir(&d.path);
                false
            }
        });
        let run = if dirs.is_empty() {
            None
        } else {
            Some(Self {
                dirs,
                removed: false,
            })
        };
        (
            run,
            Enforcement {
                processes: processes_mech,
                memory: memory_mech,
                warnings,
            },
        )
    }

    /// Opens each `cgroup.procs` for writing; the child writes "0" to each between fork and
    /// exec to move itself in.
    pub(crate) fn procs_files(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(d.path.join("cgroup.procs"))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.path.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process left in the cgroup(s).
    pub(crate) fn kill_all(&self) {
        for d in &self.dirs {
            if d.version == Version::V2 && write_file(&d.path.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        // v1 (or v2 before 5.14): kill what is listed, a few rounds to catch fresh forks; the
        // sandbox's pid namespace dies with its pid 1 anyway.
        for _ in 0..10 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                if pid > 1 {
                    // SAFETY: sending a signal to a pid listed in our own run cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }

    /// Reads the OOM and pids-limit counters.
    pub(crate) fn events(&self) -> Events {
        let mut ev = Events::default();
        for d in &self.dirs {
            for c in &d.controllers {
                match (d.version, c) {
                    (_, Controller::Pids) => {
                        let text =
                            fs::read_to_string(d.path.join("pids.events")).unwrap_or_default();
                        ev.process_limit_hit |= counter(&text, "max") > 0;
                    }
                    (Version::V2, Controller::Memory) => {
                        let text =
                            fs::read_to_string(d.path.join("memory.events")).unwrap_or_default();
                        ev.oom_killed |= counter(&text, "oom_kill") > 0;
                    }
                    (Version::V1, Controller::Memory) => {
                        let text = fs::read_to_string(d.path.join("memory.oom_control"))
                            .unwrap_or_default();
                        ev.oom_killed |= counter(&text, "oom_kill") > 0;
                    }
                }
            }
        }
        ev
    }

    fn try_remove(&self) -> bool {
        let mut all = true;
        for d in &self.dirs {
            if d.path.exists() && fs::remove_dir(&d.path).is_err() {
                all = false;
            }
        }
        all
    }

    /// Kills what is left and removes the cgroup(s), waiting briefly for dying processes.
    pub(crate) async fn finish(mut self) {
        for _ in 0..200 {
            if self.try_remove() {
                self.removed = true;
                return;
            }
            self.kill_all();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::warn!(dirs = ?self.dirs, "could not remove the run cgroup");
        self.removed = true;
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // The run was abandoned (its future dropped): kill and clean up synchronously.
        for _ in 0..50 {
            if self.try_remove() {
                return;
            }
            self.kill_all();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Writes "0" to each fd (moves the calling process into those cgroups). Async-signal-safe.
pub(crate) fn join_cgroups_in_child(fds: &[i32]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: writing a constant one-byte buffer to an fd we own.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw fds of `files`, for use after fork.
pub(crate) fn raw_fds(files: &[OwnedFd]) -> Vec<i32> {
    files.iter().map(|f| f.as_raw_fd()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn hybrid_layout_finds_v1_controllers_and_own_paths() {
        let mountinfo = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let own = "8:pids:/\n4:memory:/process_api/abc\n0::/\n";
        let l = Layout::parse(mountinfo, own);
        assert_eq!(l.v1_pids, vec![PathBuf::from("/sys/fs/cgroup/pids")]);
        assert_eq!(
            l.v1_memory,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
                PathBuf::from("/sys/fs/cgroup/memory")
            ]
        );
        assert_eq!(l.v2, vec![PathBuf::from("/sys/fs/cgroup/unified")]);
    }

    #[test]
    fn pure_v2_layout_uses_own_cgroup_then_root() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let own = "0::/system.slice/bytebot.service\n";
        let l = Layout::parse(mountinfo, own);
        assert_eq!(
            l.v2,
            vec![
                PathBuf::from("/sys/fs/cgroup/system.slice/bytebot.service"),
                PathBuf::from("/sys/fs/cgroup")
            ]
        );
        assert!(l.v1_pids.is_empty() && l.v1_memory.is_empty());
    }

    #[test]
    fn counters_are_read_by_key() {
        assert_eq!(
            counter("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n", "oom_kill"),
            2
        );
        assert_eq!(counter("max 7\n", "max"), 7);
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", "oom_kill"),
            0
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
