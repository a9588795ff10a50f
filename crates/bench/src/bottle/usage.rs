//! CPU used while a load run is measured, split by role. Our proxy, the test server and the
//! load client share this process, each on its own tokio runtime whose threads carry a name
//! (`bb-proxy…`, `bb-server…`), so each role is the sum of its threads in
//! /proc/self/task/*/stat; mitmproxy is its own process. The rest of the machine
//! (/proc/stat) shows how much other work skewed the figures.

use crate::procfs::{clock_ticks_per_s, machine_busy_ticks};
use std::time::Instant;

/// Thread-name prefix of our proxy's runtime.
pub(super) const PROXY_THREADS: &str = "bb-proxy";
/// Thread-name prefix of the test server's runtime.
pub(super) const SERVER_THREADS: &str = "bb-server";

/// CPU of each role, percent of one core.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    /// The proxy under test: our runtime's threads, or the mitmdump process.
    pub(super) proxy: f64,
    /// The load client: the rest of this process.
    pub(super) client: f64,
    /// The HTTPS server.
    pub(super) server: f64,
    /// Every other process on the machine.
    pub(super) others: f64,
}

/// Tick counters at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    at: Instant,
    own: u64,
    proxy_threads: u64,
    server_threads: u64,
    external: u64,
    machine: u64,
}

impl Snapshot {
    /// Reads the counters; `external` is a proxy running as its own process.
    pub(super) fn take(external: Option<u32>) -> Self {
        let (proxy_threads, server_threads) = thread_ticks();
        Self {
            at: Instant::now(),
            own: stat_ticks("/proc/self/stat").unwrap_or(0),
            proxy_threads,
            server_threads,
            external: external
                .and_then(|pid| stat_ticks(&format!("/proc/{pid}/stat")))
                .unwrap_or(0),
            machine: machine_busy_ticks(),
        }
    }

    /// What each role used between `self` and `later`.
    pub(super) fn until(&self, later: &Snapshot) -> Usage {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let pct = |ticks: u64| ticks as f64 / clock_ticks_per_s() / secs * 100.0;
        let own = later.own.saturating_sub(self.own);
        let ours = later.proxy_threads.saturating_sub(self.proxy_threads);
        let server = later.server_threads.saturating_sub(self.server_threads);
        let external = later.external.saturating_sub(self.external);
        let machine = later.machine.saturating_sub(self.machine);
        Usage {
            proxy: pct(ours + external),
            client: pct(own.saturating_sub(ours + server)),
            server: pct(server),
            others: pct(machine.saturating_sub(own + external)),
        }
    }
}

/// Ticks of this process's threads named like our proxy's and like the server's.
fn thread_ticks() -> (u64, u64) {
    let (mut proxy, mut server) = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = parse_stat(&stat) else {
            continue;
        };
        if name.starts_with(PROXY_THREADS) {
            proxy += ticks;
        } else if name.starts_with(SERVER_THREADS) {
            server += ticks;
        }
    }
    (proxy, server)
}

fn stat_ticks(path: &str) -> Option<u64> {
    parse_stat(&std::fs::read_to_string(path).ok()?).map(|(_, t)| t)
}

/// The command name and utime + stime of a `/proc/…/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.get(open + 1..)?;
    // After the name: state, ppid, … ; utime and stime are the 12th and 13th fields.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_name_and_ticks() {
        let line =
            "4242 (bb-proxy (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 2 0 1 1 1";
        assert_eq!(parse_stat(line), Some(("bb-proxy (x)", 12)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_named_busy_thread_counts_for_its_role() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let t = std::thread::Builder::new()
            .name(format!("{SERVER_THREADS}-t"))
            .spawn(move || {
                let mut x = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = Snapshot::take(None);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = Snapshot::take(None);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        let u = before.until(&after);
        assert!(u.server > 0.0, "{u:?}");
        assert_eq!(u.proxy, 0.0);
    }
}
