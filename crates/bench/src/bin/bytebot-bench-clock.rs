//! Prints CLOCK_MONOTONIC in nanoseconds as the first thing its `main` does, then exits.
//!
//! The bottle part of `bytebot-bench` runs it in each kind of sandbox and subtracts the
//! time it took just before spawning: that is "spawn to the command's first instruction".
//! CLOCK_MONOTONIC is the host's inside a bwrap sandbox too (bwrap makes no time
//! namespace), and clock_gettime goes through the vDSO, so reading it costs no syscall.
//! What runs before `main` (exec, the dynamic loader, Rust's start-up) is the same for
//! every variant and is measured on its own, without a sandbox.

use std::io::Write as _;

fn main() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only fills the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
    let _ = writeln!(std::io::stdout().lock(), "{ns}");
}
