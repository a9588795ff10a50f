//! The command's seccomp filter. Compiled in the init before fork (allocation is fine there),
//! applied in the child between fork and exec (only `prctl` and `seccomp` calls there).
//!
//! A deny-list returning `EPERM`, not a kill, so programs get a clean error: sockets other than
//! AF_INET/AF_INET6 (AF_UNIX could reach the proxy socket or anything bound in, netlink and
//! packet sockets talk to the kernel) and raw sockets; io_uring (a second syscall path that
//! bypasses this filter); ptrace and cross-process memory/fd access; kernel keyrings; mount
//! and the new mount API; bpf; perf_event_open; namespaces (unshare, setns, clone with
//! CLONE_NEW*); module loading, kexec; userfaultfd; and any file mode with the setuid or
//! setgid bit (chmod, open/creat, mknod), because workspace files belong to the host's uid.
//! A second, hand-written filter sends clone3 and openat2 to `ENOSYS` (their flags live in
//! memory a filter cannot read; libc falls back to clone and openat) and, on x86_64, refuses the
//! x32 ABI, whose syscall numbers would not match the first filter.
//! Other architectures' ABIs (i386 on x86_64, arm32 on aarch64) are killed by seccompiler's
//! architecture check.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch, sock_filter,
};

/// The compiled filters, applied together.
pub(crate) struct Filters {
    programs: Vec<BpfProgram>,
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
/// The obsolete packet socket type (libc deprecates the constant; we refuse it all the same).
const SOCK_PACKET: u64 = 10;
const SECCOMP_DATA_ARCH: u32 = 4;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn errno(code: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (code as u32 & libc::SECCOMP_RET_DATA)
}

fn cond(arg: u8, op: Op, value: u64) -> Result<Cond, String> {
    Cond::new(arg, Len::Dword, op, value).map_err(|e| format!("seccomp condition: {e}"))
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| format!("seccomp rule: {e}"))
}

/// Syscalls refused whatever their arguments.
fn denied_syscalls() -> Vec<i64> {
    let mut list = vec![
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_chroot,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_syslog,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    list
}

const SUID: u64 = libc::S_ISUID as u64;
const SGID: u64 = libc::S_ISGID as u64;
/// fchmodat2 (Linux 6.6) has the same number on every architecture; not in libc for all yet.
const SYS_FCHMODAT2: i64 = 452;

/// Syscalls that set a file mode, with the index of their mode argument.
fn mode_syscalls() -> Vec<(i64, u8)> {
    let mut list = vec![
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (SYS_FCHMODAT2, 2),
        (libc::SYS_openat, 3),
        (libc::SYS_mknodat, 2),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        (libc::SYS_chmod, 1),
        (libc::SYS_open, 2),
        (libc::SYS_creat, 1),
        (libc::SYS_mknod, 1),
    ]);
    list
}

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        format!(
            "seccomp: unsupported architecture {}: {e}",
            std::env::consts::ARCH
        )
    })
}

fn main_filter() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in denied_syscalls() {
        rules.insert(nr, vec![]);
    }
    // A rule matches when all its conditions hold; the syscall is refused when any rule does.
    let sock_type_mask = 0xf;
    rules.insert(
        libc::SYS_socket,
        vec![
            rule(vec![
                cond(0, Op::Ne, libc::AF_INET as u64)?,
                cond(0, Op::Ne, libc::AF_INET6 as u64)?,
            ])?,
            rule(vec![cond(
                1,
                Op::MaskedEq(sock_type_mask),
                libc::SOCK_RAW as u64,
            )?])?,
            rule(vec![cond(1, Op::MaskedEq(sock_type_mask), SOCK_PACKET)?])?,
        ],
    );
    let namespace_flags = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ];
    let mut clone_rules = Vec::new();
    for flag in namespace_flags {
        let flag = flag as u32 as u64;
        clone_rules.push(rule(vec![cond(0, Op::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);

    // The sandbox writes the workspace as the host's uid: a setuid/setgid file planted there
    // would be a host privilege escalation, so no mode with those bits is accepted.
    for (nr, mode_arg) in mode_syscalls() {
        rules.insert(
            nr,
            vec![
                rule(vec![cond(mode_arg, Op::MaskedEq(SUID), SUID)?])?,
                rule(vec![cond(mode_arg, Op::MaskedEq(SGID), SGID)?])?,
            ],
        );
    }

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("seccomp compile: {e}"))
}

fn insn(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// clone3 and openat2 → ENOSYS (their flags and mode live in memory a filter cannot read; libc
/// falls back to clone and openat); on x86_64 also x32 syscalls → EPERM. Other architectures
/// pass (the main filter kills them).
fn guard_filter() -> BpfProgram {
    let clone3 = libc::SYS_clone3 as u32;
    let openat2 = libc::SYS_openat2 as u32;
    #[cfg(target_arch = "x86_64")]
    {
        vec![
            insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH, 0, 0),
            insn(BPF_JEQ_K, AUDIT_ARCH, 0, 4), // other arch → allow (6)
            insn(BPF_LD_W_ABS, SECCOMP_DATA_NR, 0, 0),
            insn(BPF_JGE_K, X32_SYSCALL_BIT, 3, 0), // x32 → EPERM (7)
            insn(BPF_JEQ_K, clone3, 3, 0),          // clone3 → ENOSYS (8)
            insn(BPF_JEQ_K, openat2, 2, 0),         // openat2 → ENOSYS (8)
            insn(BPF_RET_K, libc::SECCOMP_RET_ALLOW, 0, 0),
            insn(BPF_RET_K, errno(libc::EPERM), 0, 0),
            insn(BPF_RET_K, errno(libc::ENOSYS), 0, 0),
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        vec![
            insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH, 0, 0),
            insn(BPF_JEQ_K, AUDIT_ARCH, 0, 3), // other arch → allow (5)
            insn(BPF_LD_W_ABS, SECCOMP_DATA_NR, 0, 0),
            insn(BPF_JEQ_K, clone3, 2, 0),  // clone3 → ENOSYS (6)
            insn(BPF_JEQ_K, openat2, 1, 0), // openat2 → ENOSYS (6)
            insn(BPF_RET_K, libc::SECCOMP_RET_ALLOW, 0, 0),
            insn(BPF_RET_K, errno(libc::ENOSYS), 0, 0),
        ]
    }
}

/// Compiles both filters. Done before fork: it allocates.
pub(crate) fn compile() -> Result<Filters, String> {
    Ok(Filters {
        programs: vec![main_filter()?, guard_filter()],
    })
}

impl Filters {
    /// Installs the filters on the calling thread (sets no_new_privs first). Async-signal-safe:
    /// only prctl and seccomp syscalls, no allocation, so it may run between fork and exec.
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        for program in &self.programs {
            seccompiler::apply_filter(program).map_err(|e| match e {
                seccompiler::Error::Prctl(err) | seccompiler::Error::Seccomp(err) => err,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Forks, applies the filters in the child, runs `probe` there and returns its exit code.
    /// The child only makes raw syscalls (async-signal-safe) before `_exit`.
    fn in_filtered_child(probe: fn() -> i32) -> i32 {
        let filters = compile().unwrap();
        // SAFETY: the child calls only async-signal-safe functions (prctl, seccomp, raw
        // syscalls, _exit) and never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = match filters.apply() {
                Ok(()) => probe(),
                Err(_) => 99,
            };
            // SAFETY: terminating the forked child without running destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn errno_now() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// 0 when the call failed with exactly `want`, 1 when it succeeded, 2 on another errno.
    fn expect_errno(ret: i64, want: i32) -> i32 {
        if ret >= 0 {
            1
        } else if errno_now() == want {
            0
        } else {
            2
        }
    }

    #[test]
    fn unix_netlink_packet_and_raw_sockets_are_refused() {
        fn probe() -> i32 {
            // SAFETY: plain socket syscalls with constant arguments.
            unsafe {
                let unix = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if expect_errno(unix.into(), libc::EPERM) != 0 {
                    return 10;
                }
                let netlink = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0);
                if expect_errno(netlink.into(), libc::EPERM) != 0 {
                    return 11;
                }
                let packet = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0);
                if expect_errno(packet.into(), libc::EPERM) != 0 {
                    return 12;
                }
                let raw = libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, 1);
                if expect_errno(raw.into(), libc::EPERM) != 0 {
                    return 13;
                }
                let tcp = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if tcp < 0 {
                    return 14;
                }
                let mut pair = [0; 2];
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
                    return 15;
                }
            }
            0
        }
        assert_eq!(in_filtered_child(probe), 0);
    }

    #[test]
    fn io_uring_ptrace_mount_and_namespaces_are_refused() {
        fn probe() -> i32 {
            // SAFETY: raw syscalls with null/zero arguments; each is refused or fails cleanly.
            unsafe {
                let ring = libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null_mut::<u8>());
                if expect_errno(ring, libc::EPERM) != 0 {
                    return 20;
                }
                let trace = libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
                if expect_errno(trace, libc::EPERM) != 0 {
                    return 21;
                }
                let unshare = libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER);
                if expect_errno(unshare, libc::EPERM) != 0 {
                    return 22;
                }
                let clone3 = libc::syscall(libc::SYS_clone3, std::ptr::null_mut::<u8>(), 0);
                if expect_errno(clone3, libc::ENOSYS) != 0 {
                    return 23;
                }
                let keys = libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0);
                if expect_errno(keys, libc::EPERM) != 0 {
                    return 24;
                }
                #[cfg(target_arch = "x86_64")]
                {
                    let x32_socket = libc::syscall(
                        (X32_SYSCALL_BIT as i64) | libc::SYS_socket,
                        libc::AF_UNIX,
                        libc::SOCK_STREAM,
                        0,
                    );
                    if expect_errno(x32_socket, libc::EPERM) != 0 {
                        return 25;
                    }
                }
                let openat2 = libc::syscall(libc::SYS_openat2, -100, c"/".as_ptr(), 0, 0);
                if expect_errno(openat2, libc::ENOSYS) != 0 {
                    return 26;
                }
                let suid =
                    libc::syscall(libc::SYS_fchmodat, -100, c"/nonexistent".as_ptr(), 0o4755);
                if expect_errno(suid, libc::EPERM) != 0 {
                    return 27;
                }
                let sgid = libc::syscall(
                    libc::SYS_openat,
                    -100,
                    c"/nonexistent/x".as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o2755,
                );
                if expect_errno(sgid, libc::EPERM) != 0 {
                    return 28;
                }
                // Plain modes still reach the kernel (which says the path does not exist).
                let plain =
                    libc::syscall(libc::SYS_fchmodat, -100, c"/nonexistent".as_ptr(), 0o755);
                if expect_errno(plain, libc::ENOENT) != 0 {
                    return 29;
                }
                if libc::getpid() <= 0 {
                    return 30;
                }
            }
            0
        }
        assert_eq!(in_filtered_child(probe), 0);
    }
}
