//! SSE fan-out: many subscribers of one task's events, checked against
//! the stored sequence, with the delay from publish to each subscriber.

use super::instance::{Creds, signed_post};
use super::load::{percentile_ms, rss_kb};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One event as a subscriber received it.
#[derive(Debug, Clone)]
struct Received {
    id: i64,
    kind: String,
    ts_ms: i64,
    at: Instant,
    wall_us: i64,
}

/// Reads one SSE stream of a task until `task.finished`; calls `ready`
/// after the first event (the replayed `plan.created`).
async fn subscribe(
    client: reqwest::Client,
    c: Creds,
    task_id: String,
    ready: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> Result<Vec<Received>> {
    let mut r = client
        .get(format!("{}/events?task_id={task_id}", c.base))
        .bearer_auth(c.bearer.as_str())
        .send()
        .await?;
    ensure!(
        r.status() == reqwest::StatusCode::OK,
        "GET /events: HTTP {}",
        r.status()
    );
    let mut ready = ready;
    let mut buf = String::new();
    let mut got = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        let (at, wall_us) = (Instant::now(), now_us());
        buf.push_str(std::str::from_utf8(&chunk).context("SSE is not UTF-8")?);
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            // Keep-alive comments carry no id.
            let Some(id) = id else { continue };
            let ts_ms = serde_json::from_str::<Value>(&data)
                .ok()
                .and_then(|v| v.get("ts_ms").and_then(Value::as_i64))
                .context("an event without ts_ms in its data")?;
            let finished = kind == "task.finished";
            got.push(Received {
                id,
                kind,
                ts_ms,
                at,
                wall_us,
            });
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            if finished {
                return Ok(got);
            }
        }
    }
    bail!(
        "the event stream ended before task.finished ({} events)",
        got.len()
    )
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Results of the SSE fan-out.
#[derive(Debug, Clone, Default)]
pub(super) struct Fanout {
    /// Subscribers opened.
    pub(super) subscribers: usize,
    /// Events of the task, as stored.
    pub(super) events: usize,
    /// Their kinds, summarised.
    pub(super) kinds: String,
    /// Subscribers whose sequence differed from the stored one (or failed).
    pub(super) bad: usize,
    /// What was wrong with the first of them.
    pub(super) first_bad: Option<String>,
    /// Seconds until every subscriber had its first event.
    pub(super) subscribe_s: f64,
    /// task.finished: from its `ts_ms` to each subscriber's receipt, ms (p50).
    pub(super) p50_ms: f64,
    /// The same, p99.
    pub(super) p99_ms: f64,
    /// The same, slowest subscriber.
    pub(super) max_ms: f64,
    /// First to last subscriber receiving task.finished, ms.
    pub(super) spread_ms: f64,
    /// RSS of the gateway process with every subscriber connected, kB.
    pub(super) rss_kb: u64,
}

/// Plans a run with several output lines, opens `n` subscribers to its
/// events, executes it, and checks that every subscriber got every event in
/// the stored order.
pub(super) async fn fanout(c: &Creds, n: usize, pid: u32) -> Result<Fanout> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let script = "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.02; done";
    let plan = signed_post(
        &client,
        c,
        "/plan",
        &json!({"intent": "run", "args": {"argv": ["sh", "-c", script]}}),
    )
    .await?;
    let task_id = plan["task_id"]
        .as_str()
        .context("plan without task_id")?
        .to_string();
    let token = plan["confirm_token"]
        .as_str()
        .context("plan without confirm_token")?
        .to_string();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let subs: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(subscribe(
                client.clone(),
                c.clone(),
                task_id.clone(),
                Some(ready_tx.clone()),
            ))
        })
        .collect();
    drop(ready_tx);
    let mut ready = 0;
    while ready < n {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            // Every sender is gone: some subscribers failed; their errors follow.
            Ok(None) => break,
            Err(_) => bail!("only {ready} of {n} subscribers received plan.created within 60 s"),
        }
    }
    let subscribe_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kb(pid).unwrap_or(0);
    let done = signed_post(
        &client,
        c,
        "/execute",
        &json!({"task_id": task_id, "confirm_token": token}),
    )
    .await?;
    ensure!(
        done["status"] == "succeeded",
        "the fan-out task did not succeed: {done}"
    );
    let mut results = Vec::with_capacity(n);
    for s in subs {
        results.push(tokio::time::timeout(Duration::from_secs(60), s).await);
    }
    // What the store holds, replayed by a late subscriber: the reference.
    let reference = subscribe(client.clone(), c.clone(), task_id.clone(), None).await?;
    let want: Vec<(i64, &str)> = reference.iter().map(|e| (e.id, e.kind.as_str())).collect();
    ensure!(
        want.windows(2).all(|w| w[0].0 < w[1].0),
        "the stored events of {task_id} are not in increasing id order: {want:?}"
    );
    let mut out = Fanout {
        subscribers: n,
        events: want.len(),
        kinds: kinds_summary(&want),
        subscribe_s,
        rss_kb: rss,
        ..Fanout::default()
    };
    let mut delays = Vec::with_capacity(n);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    for r in results {
        let got = match r {
            Ok(Ok(Ok(got))) => got,
            Ok(Ok(Err(e))) => {
                out.bad += 1;
                out.first_bad.get_or_insert_with(|| format!("{e:#}"));
                continue;
            }
            Ok(Err(e)) => {
                out.bad += 1;
                out.first_bad.get_or_insert_with(|| e.to_string());
                continue;
            }
            Err(_) => {
                out.bad += 1;
                out.first_bad
                    .get_or_insert_with(|| "no task.finished within 60 s".into());
                continue;
            }
        };
        let seq: Vec<(i64, &str)> = got.iter().map(|e| (e.id, e.kind.as_str())).collect();
        if seq != want {
            out.bad += 1;
            out.first_bad
                .get_or_insert_with(|| format!("received {seq:?}, stored {want:?}"));
            continue;
        }
        if let Some(fin) = got.last() {
            delays.push(u32::try_from((fin.wall_us - fin.ts_ms * 1000).max(0)).unwrap_or(u32::MAX));
            first = Some(first.map_or(fin.at, |f| f.min(fin.at)));
            last = Some(last.map_or(fin.at, |l| l.max(fin.at)));
        }
    }
    delays.sort_unstable();
    out.p50_ms = percentile_ms(&delays, 0.5);
    out.p99_ms = percentile_ms(&delays, 0.99);
    out.max_ms = percentile_ms(&delays, 1.0);
    if let (Some(f), Some(l)) = (first, last) {
        out.spread_ms = (l - f).as_secs_f64() * 1000.0;
    }
    Ok(out)
}

/// `plan.created, plan.approved, step.started, 8× step.output, …`.
fn kinds_summary(seq: &[(i64, &str)]) -> String {
    let mut parts: Vec<(usize, &str)> = Vec::new();
    for (_, kind) in seq {
        match parts.last_mut() {
            Some((count, k)) if k == kind => *count += 1,
            _ => parts.push((1, kind)),
        }
    }
    parts
        .iter()
        .map(|(count, k)| {
            if *count > 1 {
                format!("{count}× {k}")
            } else {
                (*k).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_runs_of_kinds() {
        let seq = [(1, "a"), (2, "b"), (3, "b"), (4, "c")];
        assert_eq!(kinds_summary(&seq), "a, 2× b, c");
    }
}
