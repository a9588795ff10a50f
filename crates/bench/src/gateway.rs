//! Gateway benchmarks against a real `bytebot up`: signed `POST /plan`
//! throughput and latency from a Rust load client, `wrk` on `GET /health` as
//! the ceiling of the HTTP stack on this machine, SSE fan-out to many
//! subscribers, and the process's memory. Produces the "Gateway" section of
//! docs/BENCHMARKS.md.
//!
//! There is no peer to run side by side: Bytebot's own stack has no gateway,
//! and no comparable plan/approve/execute gateway can be installed here. The
//! reference is therefore the same server's cheapest authenticated route.

mod fanout;
mod instance;
mod load;
mod report;

use anyhow::{Result, ensure};
use fanout::Fanout;
use instance::Instance;
use load::{Load, Target};
use std::path::Path;
use std::time::{Duration, Instant};

/// Settings of the gateway part (`--parts gateway`).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "GatewayOptions")]
pub struct Options {
    /// Gateway: concurrent keep-alive connections of the load client and of wrk.
    #[arg(long = "gw-connections", default_value_t = 64)]
    pub connections: usize,
    /// Gateway: seconds measured per load run (after the warm-up).
    #[arg(long = "gw-seconds", default_value_t = 10)]
    pub seconds: u64,
    /// Gateway: warm-up seconds before each load run.
    #[arg(long = "gw-warmup", default_value_t = 1)]
    pub warmup: u64,
    /// Gateway: SSE subscribers in the fan-out test.
    #[arg(long = "gw-subscribers", default_value_t = 1000)]
    pub subscribers: usize,
}

/// Marks the generated block in docs/BENCHMARKS.md; text after the end
/// marker (a person's reading of the figures) survives a new run.
const BEGIN: &str = "<!-- bytebot-bench gateway: begin (generated) -->";
/// Ends the generated block.
const END: &str = "<!-- bytebot-bench gateway: end -->";

/// Runs every gateway measurement and returns the report block.
pub fn run(bytebot: &Path, opts: &Options) -> Result<String> {
    let limit = instance::raise_open_files();
    let needed = 2 * opts.subscribers as u64 + 4 * opts.connections as u64 + 256;
    ensure!(
        limit >= needed,
        "the open-files limit is {limit}, but {} subscribers need about {needed}; raise it (ulimit -n {needed}) or pass a smaller --gw-subscribers",
        opts.subscribers
    );
    let mut instance = Instance::start(bytebot)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(measure(&instance, opts));
    instance.stop();
    let m = result?;
    Ok(report::render(&m, opts))
}

/// Everything the report shows.
struct Measured {
    idle_rss_kb: u64,
    wrk: Result<Load>,
    health: Load,
    signed: Load,
    /// Signed /plan at fewer connections: (connections, load).
    signed_sweep: Vec<(usize, Load)>,
    bearer_plan: Load,
    fanout: Result<Fanout>,
}

async fn measure(inst: &Instance, opts: &Options) -> Result<Measured> {
    let c = &inst.creds;
    let pid = inst.pid();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = client
            .get(format!("{}/ready", c.base))
            .bearer_auth(c.bearer.as_str())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the gateway at {} did not become ready within 60 s (see {})",
            c.base,
            inst.dir.join("bytebot.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_kb = load::rss_kb(pid).unwrap_or(0);
    eprintln!("gateway: wrk GET /health …");
    let wrk = load::wrk(c, opts, pid).await;
    if let Err(e) = &wrk {
        eprintln!("gateway: wrk not measured: {e:#}");
    }
    eprintln!("gateway: Rust client GET /health …");
    let health = load::load(c, Target::BearerHealth, opts, pid).await?;
    eprintln!("gateway: Rust client signed POST /plan …");
    let signed = load::load(c, Target::SignedPlan, opts, pid).await?;
    // Latency grows with the connections kept busy (Little's law), so the p99 target is also
    // looked for at lower concurrency.
    let mut signed_sweep = Vec::new();
    for connections in [16, 32].into_iter().filter(|n| *n < opts.connections) {
        eprintln!("gateway: Rust client signed POST /plan, {connections} connections …");
        let fewer = Options {
            connections,
            ..opts.clone()
        };
        signed_sweep.push((
            connections,
            load::load(c, Target::SignedPlan, &fewer, pid).await?,
        ));
    }
    eprintln!("gateway: Rust client bearer POST /plan …");
    let bearer_plan = load::load(c, Target::BearerPlan, opts, pid).await?;
    eprintln!("gateway: SSE fan-out to {} subscribers …", opts.subscribers);
    let fanout = fanout::fanout(c, opts.subscribers, pid).await;
    Ok(Measured {
        idle_rss_kb,
        wrk,
        health,
        signed,
        signed_sweep,
        bearer_plan,
        fanout,
    })
}

/// The report file with `desktop` (a whole desktop report) and/or `gateway`
/// (a generated block) replacing their parts of `previous`; what a person
/// wrote after the gateway block is kept.
pub fn merge_report(previous: &str, desktop: Option<&str>, gateway: Option<&str>) -> String {
    let (old_desktop, old_gateway, old_after) = match (previous.find(BEGIN), previous.find(END)) {
        (Some(b), Some(e)) if b < e => (
            &previous[..b],
            &previous[b..e + END.len()],
            previous[e + END.len()..].trim_start_matches('\n'),
        ),
        _ => (previous, "", ""),
    };
    let mut out = desktop.unwrap_or(old_desktop).trim_end().to_string();
    let block = gateway.unwrap_or(old_gateway).trim();
    if !block.is_empty() {
        out.push_str("\n\n");
        out.push_str(block);
        out.push('\n');
        if !old_after.trim().is_empty() {
            out.push('\n');
            out.push_str(old_after.trim_end());
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn merging_keeps_the_other_part_and_the_reading() {
        let first = merge_report(
            "",
            Some("# Benchmarks\n\ndesktop v1\n"),
            Some(&format!("{BEGIN}\ngw v1\n{END}\n")),
        );
        let with_note = format!("{first}\nA person's reading.\n");
        let second = merge_report(&with_note, None, Some(&format!("{BEGIN}\ngw v2\n{END}\n")));
        assert!(
            second.contains("desktop v1") && second.contains("gw v2") && !second.contains("gw v1")
        );
        assert!(second.contains("A person's reading."));
        let third = merge_report(&second, Some("# Benchmarks\n\ndesktop v2\n"), None);
        assert!(
            third.contains("desktop v2")
                && third.contains("gw v2")
                && third.contains("A person's reading.")
        );
        assert_eq!(merge_report("old desktop\n", None, None), "old desktop\n");
    }
}
