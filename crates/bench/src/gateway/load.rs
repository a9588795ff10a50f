//! Load runs: the Rust client's workers, `wrk`, and what the processes
//! used meanwhile (CPU from /proc/PID/stat, RSS from /proc/PID/status).

use super::Options;
use super::instance::{Creds, sign};
use crate::procfs::{clock_ticks_per_s, machine_busy_ticks};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The plan every load request asks for: a screenshot (low risk, no desktop call at plan time).
const PLAN_BODY: &str = r#"{"intent":"screenshot","args":{}}"#;

/// Which request a load run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// Signed `POST /plan` of a screenshot.
    SignedPlan,
    /// The same plan with the bearer token instead of a signature.
    BearerPlan,
    /// `GET /health` with the bearer token.
    BearerHealth,
}

/// Throughput and latency of one load run.
#[derive(Debug, Clone, Default)]
pub(super) struct Load {
    /// Requests per second over the measured window.
    pub(super) per_s: f64,
    /// Requests measured.
    pub(super) n: usize,
    /// Answers that were not 200 (or not what the request asked for), and transport errors.
    pub(super) errors: usize,
    /// The first error, for the report.
    pub(super) first_error: Option<String>,
    /// Latency percentiles and maximum, ms.
    pub(super) p50_ms: f64,
    /// 90th percentile, ms.
    pub(super) p90_ms: f64,
    /// 99th percentile, ms.
    pub(super) p99_ms: f64,
    /// Slowest request, ms.
    pub(super) max_ms: f64,
    /// CPU and memory meanwhile.
    pub(super) usage: Usage,
}

/// CPU and memory while a run was measured.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    /// CPU of the gateway process, percent of one core.
    pub(super) server_cpu: f64,
    /// CPU of the load generator, percent of one core.
    pub(super) client_cpu: f64,
    /// CPU of every other process on the machine, percent of one core
    /// (other work on a shared machine skews every figure).
    pub(super) others_cpu: f64,
    /// Highest RSS of the gateway process seen, kB.
    pub(super) peak_rss_kb: u64,
}

/// One request of `target`: Ok when the answer is 200 (and, for a plan, has a task id).
async fn one(client: &reqwest::Client, c: &Creds, target: Target) -> Result<()> {
    let req = match target {
        Target::SignedPlan => {
            let mut req = client
                .post(format!("{}/plan", c.base))
                .header("content-type", "application/json");
            for (name, value) in sign(&c.secret, "POST", "/plan", PLAN_BODY.as_bytes())? {
                req = req.header(name, value);
            }
            req.body(PLAN_BODY)
        }
        Target::BearerPlan => client
            .post(format!("{}/plan", c.base))
            .header("content-type", "application/json")
            .bearer_auth(c.bearer.as_str())
            .body(PLAN_BODY),
        Target::BearerHealth => client
            .get(format!("{}/health", c.base))
            .bearer_auth(c.bearer.as_str()),
    };
    let r = req.send().await?;
    let status = r.status();
    let bytes = r.bytes().await?;
    if status != reqwest::StatusCode::OK {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    if target != Target::BearerHealth {
        let v: Value = serde_json::from_slice(&bytes)?;
        ensure!(
            v.get("task_id").is_some(),
            "a plan answer without task_id: {v}"
        );
    }
    Ok(())
}

/// `opts.connections` workers send `target` back to back for the warm-up
/// and then the measured window; only requests started in the window count.
pub(super) async fn load(c: &Creds, target: Target, opts: &Options, pid: u32) -> Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.connections)
        .tcp_nodelay(true)
        .build()?;
    let start = Instant::now();
    let from = start + Duration::from_secs(opts.warmup);
    let until = from + Duration::from_secs(opts.seconds);
    let monitor = tokio::spawn(monitor(vec![pid], std::process::id(), from, until));
    let mut workers = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let (client, c) = (client.clone(), c.clone());
        workers.push(tokio::spawn(async move {
            let mut lat_us: Vec<u32> = Vec::with_capacity(64 * 1024);
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let result = one(&client, &c, target).await;
                if t0 >= from {
                    lat_us.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if let Err(e) = result {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat_us, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut out = Load::default();
    for w in workers {
        let (lat, errors, first_error) = w.await?;
        all.extend(lat);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.usage = monitor.await?;
    all.sort_unstable();
    out.n = all.len();
    out.per_s = out.n as f64 / opts.seconds as f64;
    let q = |q: f64| percentile_ms(&all, q);
    (out.p50_ms, out.p90_ms, out.p99_ms, out.max_ms) = (q(0.5), q(0.9), q(0.99), q(1.0));
    Ok(out)
}

pub(super) fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let n = sorted_us.len();
    let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
    f64::from(sorted_us[i]) / 1000.0
}

/// Samples the gateway's RSS every 100 ms and the CPU of both sides between
/// `from` and `until`.
async fn monitor(servers: Vec<u32>, client: u32, from: Instant, until: Instant) -> Usage {
    tokio::time::sleep_until(from.into()).await;
    let ticks = |pids: &[u32]| pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>();
    let (s0, c0, m0) = (
        ticks(&servers),
        cpu_ticks(client).unwrap_or(0),
        machine_busy_ticks(),
    );
    let t0 = Instant::now();
    let mut peak = 0;
    while Instant::now() < until {
        peak = servers
            .iter()
            .filter_map(|p| rss_kb(*p))
            .sum::<u64>()
            .max(peak);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s1, c1, m1) = (
        ticks(&servers),
        cpu_ticks(client).unwrap_or(0),
        machine_busy_ticks(),
    );
    let secs = t0.elapsed().as_secs_f64() * clock_ticks_per_s();
    let (server, client) = (s1.saturating_sub(s0), c1.saturating_sub(c0));
    let others = m1.saturating_sub(m0).saturating_sub(server + client);
    Usage {
        server_cpu: 100.0 * server as f64 / secs,
        client_cpu: 100.0 * client as f64 / secs,
        others_cpu: 100.0 * others as f64 / secs,
        peak_rss_kb: peak,
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub(super) fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// `wrk` on `GET /health` with the bearer token: the ceiling.
pub(super) async fn wrk(c: &Creds, opts: &Options, pid: u32) -> Result<Load> {
    let url = format!("{}/health", c.base);
    let auth = format!("Authorization: Bearer {}", c.bearer);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let conns = opts.connections.to_string();
    let run = |secs: u64| {
        let mut cmd = tokio::process::Command::new("wrk");
        cmd.args([
            "-t",
            &threads,
            "-c",
            &conns,
            "-d",
            &format!("{secs}s"),
            "--latency",
            "-H",
            &auth,
            &url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        cmd
    };
    // Warm-up, not measured.
    let warm = run(opts.warmup.max(1))
        .output()
        .await
        .context("running wrk (Debian package wrk)")?;
    ensure!(
        warm.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let child = run(opts.seconds).spawn().context("running wrk")?;
    let wrk_pid = child.id().unwrap_or(0);
    let now = Instant::now();
    // wrk connects first and then runs for the given time; measure inside that.
    let from = now + Duration::from_millis(200);
    let until = now + Duration::from_secs(opts.seconds) - Duration::from_millis(200);
    let usage = tokio::spawn(monitor(vec![pid], wrk_pid, from, until));
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut load = parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))?;
    load.usage = usage.await?;
    Ok(load)
}

/// Milliseconds from wrk's `1.23ms`, `456.00us`, `1.02s`, `2.00m`.
fn wrk_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(v * scale)
}

/// Reads `wrk --latency` output: requests/s, the latency distribution, the
/// maximum, and non-2xx answers plus socket errors as errors.
fn parse_wrk(text: &str) -> Result<Load> {
    let mut load = Load::default();
    let mut seen_rate = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => load.max_ms = wrk_ms(max).unwrap_or(0.0),
            ["50%", v] => load.p50_ms = wrk_ms(v).unwrap_or(0.0),
            ["90%", v] => load.p90_ms = wrk_ms(v).unwrap_or(0.0),
            ["99%", v] => load.p99_ms = wrk_ms(v).unwrap_or(0.0),
            [n, "requests", "in", ..] => load.n = n.parse().unwrap_or(0),
            ["Requests/sec:", v] => {
                load.per_s = v.parse().context("Requests/sec")?;
                seen_rate = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                load.errors += n.parse::<usize>().unwrap_or(0);
                load.first_error.get_or_insert_with(|| line.to_string());
            }
            ["Socket", "errors:", ..] => {
                let count: usize = words
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<usize>().ok())
                    .sum();
                load.errors += count;
                if count > 0 {
                    load.first_error.get_or_insert_with(|| line.to_string());
                }
            }
            _ => {}
        }
    }
    ensure!(seen_rate, "no Requests/sec line");
    Ok(load)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/health
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.34ms   89.00%
    Req/Sec    25.00k     1.00k   30.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.50ms
     90%    2.00ms
     99%    3.10ms
  500000 requests in 10.00s, 80.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  50000.50
Transfer/sec:      8.00MB
";
        let l = parse_wrk(text).unwrap();
        assert_eq!(l.per_s, 50000.5);
        assert_eq!(l.n, 500_000);
        assert_eq!(l.errors, 8);
        assert!((l.p50_ms - 0.85).abs() < 1e-9);
        assert_eq!((l.p90_ms, l.p99_ms, l.max_ms), (2.0, 3.1, 12.34));
    }
}
