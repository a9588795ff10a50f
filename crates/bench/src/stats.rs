//! Timing loops, summary statistics and the Markdown report.

use anyhow::{Result, bail};
use std::future::Future;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Median and 95th percentile of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median in milliseconds.
    pub median_ms: f64,
    /// 95th percentile in milliseconds.
    pub p95_ms: f64,
    /// Number of samples.
    pub n: usize,
}

fn summarize(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |q: f64| samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    Stats {
        median_ms: at(0.5),
        p95_ms: at(0.95),
        n,
    }
}

/// Times `n` runs of an async operation after two warm-up runs.
pub async fn time_async<F, Fut, T>(n: usize, mut f: F) -> Result<Stats>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    for _ in 0..2 {
        f().await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let start = Instant::now();
        f().await?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(summarize(samples))
}

/// Times `n` runs of a whole command (start-up included) after one warm-up.
pub fn time_command(n: usize, make: impl Fn() -> Command) -> Result<Stats> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..=n.max(1) {
        let start = Instant::now();
        let status = make()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("exited with {status}");
        }
        if i > 0 {
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(summarize(samples))
}

/// One line of the report.
pub struct Row {
    what: String,
    ours_label: String,
    ours: String,
    peer_label: String,
    peer: String,
    ratio: String,
}

/// "N× faster" when ours is quicker, "N× slower" when it is not.
fn ratio(peer_ms: f64, ours_ms: f64) -> String {
    if peer_ms >= ours_ms {
        format!("**{:.1}×** faster", peer_ms / ours_ms.max(1e-9))
    } else {
        format!("**{:.1}×** slower", ours_ms / peer_ms.max(1e-9))
    }
}

fn ms(s: &Stats) -> String {
    format!("{:.2} ms (p95 {:.2}, n={})", s.median_ms, s.p95_ms, s.n)
}

impl Row {
    /// Ours against a peer, with the peer/ours ratio of the medians.
    pub fn new(what: &str, ours_label: &str, ours: Stats, peer_label: &str, peer: Stats) -> Self {
        Self {
            what: what.into(),
            ours_label: ours_label.into(),
            ours: ms(&ours),
            peer_label: peer_label.into(),
            peer: ms(&peer),
            ratio: ratio(peer.median_ms, ours.median_ms),
        }
    }

    /// Ours alone, where no peer can do the same work.
    pub fn only(what: &str, ours_label: &str, ours: Stats) -> Self {
        Self {
            what: what.into(),
            ours_label: ours_label.into(),
            ours: ms(&ours),
            peer_label: "—".into(),
            peer: "—".into(),
            ratio: "—".into(),
        }
    }

    /// A memory figure against a peer's.
    pub fn memory(what: &str, ours_kb: u64, peer_label: &str, peer_kb: u64) -> Self {
        Self {
            what: what.into(),
            ours_label: "bytebot desktop".into(),
            ours: format!("{:.1} MB", ours_kb as f64 / 1024.0),
            peer_label: peer_label.into(),
            peer: format!("{:.0} MB", peer_kb as f64 / 1024.0),
            ratio: format!("**{:.1}×** smaller", peer_kb as f64 / ours_kb.max(1) as f64),
        }
    }
}

/// The Markdown report.
pub fn render(rows: &[Row], notes: &[String]) -> String {
    let mut out = String::from(
        "# Benchmarks\n\nWritten by `scripts/bench` (the `bytebot-bench` binary): ours and the peers side by side on one Xvfb screen in one run. \
         Ratios compare medians; absolute numbers move from machine to machine, ratios much less.\n\n\
         | operation | ours | ours: median (p95) | peer | peer: median (p95) | ratio |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.what, r.ours_label, r.ours, r.peer_label, r.peer, r.ratio
        ));
    }
    out.push('\n');
    for n in notes {
        out.push_str(&format!("- {n}\n"));
    }
    out
}
