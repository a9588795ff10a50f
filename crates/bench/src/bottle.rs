//! Bottle benchmarks (`--parts bottle`): how long a bottle takes to start its command, next
//! to bare bwrap, and what the egress proxy does to HTTPS requests, next to a direct
//! connection and to mitmproxy doing the same work. Produces the "Bottle" block of
//! docs/BENCHMARKS.md.
//!
//! - Start: a tiny probe program (`bytebot-bench-clock`) prints CLOCK_MONOTONIC first thing
//!   in `main`; the figure is that stamp minus the stamp taken just before spawning, for the
//!   probe alone, under bare `bwrap`, and under our bwrap backend (without a proxy, with the
//!   proxy bridge, and with a proxy started for the run).
//! - Proxy: one loopback HTTPS server (rustls, keep-alive, a tiny fixed answer, certificate
//!   from a test CA), one Rust load client (reqwest over HTTP CONNECT, keep-alive), the same
//!   connections and duration for every path: direct, our `EgressProxy` tunnelling and
//!   injecting a secret, and mitmproxy passing through, intercepting, and swapping the
//!   header in an addon.

mod load;
mod mitm;
mod proxy;
mod report;
mod server;
mod startup;
mod usage;

use anyhow::Result;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Settings of the bottle part (`--parts bottle`).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "BottleOptions")]
pub struct Options {
    /// Bottle: starts measured per variant (after 3 warm-up starts each).
    #[arg(
        id = "bottle_iterations",
        long = "bottle-iterations",
        default_value_t = 200
    )]
    pub iterations: usize,
    /// Bottle: seconds measured per proxy load run (after the warm-up).
    #[arg(id = "bottle_seconds", long = "bottle-seconds", default_value_t = 10)]
    pub seconds: u64,
    /// Bottle: warm-up seconds before each proxy load run.
    #[arg(id = "bottle_warmup", long = "bottle-warmup", default_value_t = 1)]
    pub warmup: u64,
    /// Bottle: concurrent keep-alive connections of the load client, on every path.
    #[arg(
        id = "bottle_connections",
        long = "bottle-connections",
        default_value_t = 32
    )]
    pub connections: usize,
    /// Bottle: the in-sandbox init and its leading arguments, e.g.
    /// `--bottle-init target/release/bytebot __bottle-init` [default: bytebot-bottle-init next
    /// to this executable].
    #[arg(id = "bottle_init", long = "bottle-init", num_args = 1.., value_name = "PROGRAM [ARGS]")]
    pub init: Vec<OsString>,
    /// Bottle: the clock probe [default: bytebot-bench-clock next to this executable].
    #[arg(id = "bottle_clock", long = "bottle-clock")]
    pub clock: Option<PathBuf>,
    /// Bottle: mitmproxy's mitmdump [default: target/bench-mitmproxy/bin/mitmdump (made by
    /// scripts/bench), else mitmdump in PATH].
    #[arg(id = "mitmdump", long = "mitmdump")]
    pub mitmdump: Option<PathBuf>,
}

/// Marks the generated block in docs/BENCHMARKS.md.
const BEGIN: &str = "<!-- bytebot-bench bottle: begin (generated) -->";
/// Ends the generated block.
const END: &str = "<!-- bytebot-bench bottle: end -->";

/// Runs both measurements and returns the report block. A part that cannot run (no bwrap,
/// no mitmproxy) is reported as such; the rest is still measured.
/// `bytebot` is the CLI binary, whose `__bottle-init` is measured as the init too.
pub fn run(opts: &Options, bytebot: &Path) -> Result<String> {
    eprintln!("bottle: start times ({} per variant) …", opts.iterations);
    let start = startup::measure(opts, bytebot);
    if let Err(e) = &start {
        eprintln!("bottle: start times not measured: {e:#}");
    }
    let egress = proxy::measure(opts)?;
    Ok(report::render(&start, &egress, opts))
}

/// A file next to this executable (where cargo puts the package's other binaries).
fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(name))
}

/// `previous` with the bottle block replaced by `block`, or `block` appended when there is
/// none yet; everything outside the markers is kept.
pub fn merge(previous: &str, block: &str) -> String {
    match (previous.find(BEGIN), previous.find(END)) {
        (Some(b), Some(e)) if b < e => format!(
            "{}{}{}",
            &previous[..b],
            block.trim_end(),
            &previous[e + END.len()..]
        ),
        _ if previous.trim().is_empty() => format!("{}\n", block.trim_end()),
        _ => format!("{}\n\n{}\n", previous.trim_end(), block.trim_end()),
    }
}

/// Percentiles of a set of samples in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Quantiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Quantiles {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        if n == 0 {
            return Self::default();
        }
        let at = |q: f64| ms[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: ms[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn merging_replaces_only_the_bottle_block() {
        let doc = "# Benchmarks\n\ndesktop\n\n<!-- bytebot-bench agent: begin -->\nagent\n<!-- bytebot-bench agent: end -->\n";
        let first = merge(doc, &format!("{BEGIN}\nbottle v1\n{END}\n"));
        assert!(first.starts_with(doc.trim_end()));
        assert!(first.ends_with(&format!("{BEGIN}\nbottle v1\n{END}\n")));
        let with_reading = format!("{first}\nA person's reading.\n");
        let second = merge(&with_reading, &format!("{BEGIN}\nbottle v2\n{END}\n"));
        assert!(second.contains("bottle v2") && !second.contains("bottle v1"));
        assert!(second.contains("agent\n") && second.contains("A person's reading."));
        assert_eq!(
            merge("", &format!("{BEGIN}\nx\n{END}")),
            format!("{BEGIN}\nx\n{END}\n")
        );
    }

    #[test]
    fn quantiles_pick_ranks() {
        let q = Quantiles::of((1..=100).map(f64::from).rev().collect());
        assert_eq!((q.p50, q.p99, q.max), (50.0, 99.0, 100.0));
        assert_eq!(Quantiles::of(vec![]).max, 0.0);
    }
}
