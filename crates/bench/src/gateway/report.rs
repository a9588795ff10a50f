//! The Markdown block of the gateway figures.

use super::load::Load;
use super::{BEGIN, END, Measured, Options};
use std::time::SystemTime;

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn load_cell(l: &Load) -> String {
    format!(
        "**{} req/s**; {:.2} / {:.2} / {:.2} / {:.2} ms; {} errors (n={})",
        thousands(l.per_s),
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.max_ms,
        l.errors,
        thousands(l.n as f64)
    )
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// Today (UTC) as YYYY-MM-DD.
fn today() -> String {
    bytebot_desktop::files::rfc3339(SystemTime::now())
        .and_then(|t| t.get(..10).map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn render(m: &Measured, o: &Options) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let conns = o.connections;
    let mut s = format!("{BEGIN}\n## Gateway\n\n");
    s.push_str(&format!(
        "Measured {} on this machine ({cores} cores) by `scripts/bench --parts gateway`: a real `bytebot up` (release build; desktop daemon and gateway in one process, own Xvfb, SQLite store in a temp folder) with one client key (HMAC secret in a 0600 `secret_file`, plus a bearer token) whose policy profile allows `screenshot` and `run` with a rate limit far above the load. \
         Load runs: {conns} keep-alive connections, {}s warm-up, then {}s measured. Latencies: p50 / p90 / p99 / max.\n\n",
        today(),
        o.warmup,
        o.seconds
    ));
    s.push_str("| operation | ours | ours: throughput; latency p50 / p90 / p99 / max | ceiling | ceiling figure | ratio |\n|---|---|---|---|---|---|\n");
    let (ceiling_label, ceiling_cell, ceiling) = match &m.wrk {
        Ok(w) => (
            format!("wrk GET /health (bearer), {conns} connections"),
            load_cell(w),
            Some(w.per_s),
        ),
        Err(e) => (format!("wrk not measured: {e}"), "—".to_string(), None),
    };
    let ratio = |ours: f64| {
        ceiling.map_or_else(
            || "—".to_string(),
            |c| format!("**{:.2}×** of the ceiling", ours / c.max(1e-9)),
        )
    };
    for (what, label, l) in [
        (
            "signed POST /plan (screenshot): HMAC-SHA256 + fresh nonce per request",
            "Rust client (reqwest), signing each request",
            &m.signed,
        ),
        (
            "the same plan with a bearer token (no HMAC, no nonce write)",
            "Rust client (reqwest)",
            &m.bearer_plan,
        ),
        (
            "GET /health with a bearer token (what wrk measures)",
            "Rust client (reqwest)",
            &m.health,
        ),
    ] {
        s.push_str(&format!(
            "| {what} | {label} | {} | {ceiling_label} | {ceiling_cell} | {} |\n",
            load_cell(l),
            ratio(l.per_s)
        ));
    }
    for (connections, l) in &m.signed_sweep {
        s.push_str(&format!(
            "| signed POST /plan with {connections} connections | Rust client (reqwest), signing each request | {} | {ceiling_label} | {ceiling_cell} | {} |\n",
            load_cell(l),
            ratio(l.per_s)
        ));
    }
    match &m.fanout {
        Ok(f) => {
            let verdict = if f.bad == 0 {
                format!("all {} received all {} events in the stored order", f.subscribers, f.events)
            } else {
                format!(
                    "**{} of {} subscribers wrong** (first: {})",
                    f.bad,
                    f.subscribers,
                    f.first_bad.as_deref().unwrap_or("?")
                )
            };
            s.push_str(&format!(
                "| SSE fan-out: one task's events to {} subscribers | GET /events?task_id=… (bearer) | {verdict}; task.finished publish → subscriber p50 {:.2} / p99 {:.2} / max {:.2} ms (first → last subscriber {:.2} ms); subscribing all took {:.2} s | — | — | — |\n",
                f.subscribers, f.p50_ms, f.p99_ms, f.max_ms, f.spread_ms, f.subscribe_s
            ));
        }
        Err(e) => s.push_str(&format!(
            "| SSE fan-out to {} subscribers | GET /events?task_id=… | **failed: {e:#}** | — | — | — |\n",
            o.subscribers
        )),
    }
    let none = "no gateway in Bytebot's stack; no peer installable";
    s.push_str(&format!(
        "| RSS, idle after start | bytebot up (desktop + gateway) | {} | {none} | — | — |\n",
        mb(m.idle_rss_kb)
    ));
    s.push_str(&format!(
        "| RSS, peak under signed /plan load | bytebot up (desktop + gateway) | {} | {none} | — | — |\n",
        mb(m.signed.usage.peak_rss_kb)
    ));
    if let Ok(f) = &m.fanout {
        s.push_str(&format!(
            "| RSS with {} SSE subscribers connected | bytebot up (desktop + gateway) | {} | {none} | — | — |\n",
            f.subscribers,
            mb(f.rss_kb)
        ));
    }
    s.push('\n');
    let runs: Vec<(usize, &Load)> = std::iter::once((o.connections, &m.signed))
        .chain(m.signed_sweep.iter().map(|(c, l)| (*c, l)))
        .collect();
    let met = runs
        .iter()
        .any(|(_, l)| l.per_s >= 10_000.0 && l.p99_ms < 5.0 && l.errors == 0);
    let measured: Vec<String> = runs
        .iter()
        .map(|(c, l)| {
            format!(
                "{} req/s with p99 {:.2} ms at {c} connections ({} errors)",
                thousands(l.per_s),
                l.p99_ms,
                l.errors
            )
        })
        .collect();
    s.push_str(&format!(
        "- Target (BASELINES.md): ≥ 10,000 signed /plan requests/s with p99 < 5 ms on 2 cores, in one run. Measured {}: **{}**.\n",
        measured.join("; "),
        if met { "met" } else { "not met" }
    ));
    let cpu_line = |name: &str, l: &Load, client: &str| {
        format!(
            "{name}: gateway {:.0} % of one core, {client} {:.0} %, other processes {:.0} %; {} requests per gateway CPU-second",
            l.usage.server_cpu,
            l.usage.client_cpu,
            l.usage.others_cpu,
            thousands(l.per_s / (l.usage.server_cpu / 100.0).max(1e-9))
        )
    };
    let mut cpu = vec![
        cpu_line("signed /plan", &m.signed, "client"),
        cpu_line("bearer /plan", &m.bearer_plan, "client"),
        cpu_line("/health (Rust client)", &m.health, "client"),
    ];
    if let Ok(w) = &m.wrk {
        cpu.push(cpu_line("/health (wrk)", w, "wrk"));
    }
    s.push_str(&format!(
        "- The load generator, wrk and the gateway share this machine's {cores} cores, so every figure is with the client's own CPU taken out of the same budget. CPU while measured — {}.\n",
        cpu.join("; ")
    ));
    for (name, l) in [
        ("signed /plan", &m.signed),
        ("bearer /plan", &m.bearer_plan),
        ("/health", &m.health),
    ] {
        if let Some(e) = &l.first_error {
            s.push_str(&format!("- First error of {name}: {e}\n"));
        }
    }
    if let Ok(w) = &m.wrk
        && let Some(e) = &w.first_error
    {
        s.push_str(&format!("- wrk reported: {e}\n"));
    }
    if let Ok(f) = &m.fanout {
        s.push_str(&format!(
            "- Fan-out: one `run` task (`sh -c` printing 8 lines 20 ms apart) whose events are {}; every subscriber was connected and had its replayed `plan.created` before the task was executed. The delay is from the event's `ts_ms` (stamped by the gateway just before the event is committed to the store and broadcast; millisecond resolution) to the subscriber reading it, with all {} subscribers in this one client process.\n",
            f.kinds, f.subscribers
        ));
    }
    s.push_str("- Every answer that is not 200 counts as an error. The signed client builds the timestamp, a random 128-bit nonce and the HMAC for every request, and parses each JSON answer, as a real caller would.\n");
    s.push_str("- No peer: Bytebot's own stack has no gateway at all, and no comparable plan/approve/execute gateway is installable from the registries this machine reaches, so the reference is `wrk` against the same server's cheapest authenticated route (`GET /health`: the HTTP stack plus bearer authentication, rate limiter and metrics).\n");
    s.push_str(END);
    s.push('\n');
    s
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }
}
