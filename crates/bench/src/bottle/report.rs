//! The Markdown block of the bottle figures.

use super::load::Run;
use super::proxy::{Egress, MitmRuns, latency, per_cpu_second};
use super::startup::{Startup, Variant};
use super::{BEGIN, END, Options};
use std::time::SystemTime;

/// The start goal (BASELINES.md): bottle start ≤ 10 ms including seccomp and the bridge.
const START_GOAL_MS: f64 = 10.0;
/// The throughput goals: ≥ 10× mitmproxy, ≥ 80 % of direct.
const VS_MITM_GOAL: f64 = 10.0;
const VS_DIRECT_GOAL: f64 = 0.8;

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

/// Today (UTC) as YYYY-MM-DD.
fn today() -> String {
    bytebot_desktop::files::rfc3339(SystemTime::now())
        .and_then(|t| t.get(..10).map(str::to_string))
        .unwrap_or_default()
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**not met**" }
}

/// Whether a run is clean enough to judge: no client errors, no wrong header at the server.
fn clean(r: &Run) -> bool {
    r.errors == 0 && r.server_wrong == 0 && r.per_s > 0.0
}

pub(super) fn render(start: &anyhow::Result<Startup>, egress: &Egress, o: &Options) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = format!("{BEGIN}\n## Bottle\n\n");
    s.push_str(&format!(
        "Measured {} on this machine ({cores} cores) by `scripts/bench --parts bottle`.\n\n",
        today()
    ));
    start_section(&mut s, start, o);
    proxy_section(&mut s, egress, o);
    s.push_str(END);
    s.push('\n');
    s
}

fn start_section(s: &mut String, start: &anyhow::Result<Startup>, o: &Options) {
    s.push_str("### Start: spawn to the command's first instruction\n\n");
    let st = match start {
        Ok(st) => st,
        Err(e) => {
            s.push_str(&format!("**Not measured:** {e:#}\n\n"));
            return;
        }
    };
    s.push_str(&format!(
        "{} starts of each variant ({}; init `{}`), interleaved one of each in turn after 3 warm-up rounds. Milliseconds: p50 / p99 / max.\n\n",
        o.iterations, st.bwrap_version, st.init
    ));
    s.push_str("| variant | spawn → command's first instruction | spawn → run returned | bwrap spawn → command exec'd (the init's report) |\n|---|---|---|---|\n");
    let q = |q: &super::Quantiles| format!("{:.2} / {:.2} / {:.2}", q.p50, q.p99, q.max);
    for r in &st.rows {
        s.push_str(&format!(
            "| {} | **{}** | {} | {} |\n",
            r.variant.label(),
            q(&r.first),
            q(&r.whole),
            r.init_report.as_ref().map_or_else(|| "—".to_owned(), q)
        ));
    }
    s.push('\n');
    let p50 = |v: Variant| st.rows.iter().find(|r| r.variant == v).map(|r| r.first.p50);
    // The start `bytebot bottle run` has: the CLI as the init when it could be measured.
    let judged = p50(Variant::CliInit)
        .map(|v| (v, "with `bytebot __bottle-init` and the bridge"))
        .or_else(|| p50(Variant::Bridge).map(|v| (v, "with the bridge")));
    if let (Some((ours, how)), Some(bare)) = (judged, p50(Variant::Bare)) {
        s.push_str(&format!(
            "- Goal (BASELINES.md): bottle start ≤ {START_GOAL_MS:.0} ms including seccomp and the bridge, next to bare bwrap's ~2 ms. Measured p50: the bottle {how} {ours:.2} ms, {:.2} ms over bare bwrap's {bare:.2} ms: {}.\n",
            ours - bare,
            verdict(ours <= START_GOAL_MS)
        ));
    }
    if let Some(why) = &st.cli_init_missing {
        s.push_str(&format!("- `bytebot __bottle-init` not measured: {why}\n"));
    }
    if let Some(probe) = p50(Variant::Probe) {
        s.push_str(&format!(
            "- Method: the command is `bytebot-bench-clock`, a Rust program that prints CLOCK_MONOTONIC (vDSO, no syscall) as the first statement of `main`; the bench reads the same clock just before it spawns (bwrap, or the probe), or just before it calls the backend's `run_spec` (so our host-side setup counts: cgroup, pipes, bwrap's arguments). bwrap makes no time namespace, so both stamps are on one clock. Everything before `main` — exec, the dynamic loader, Rust's start-up — is in every row; alone it takes {probe:.2} ms (first row), so the sandbox's own share is each row minus that.\n"
        ));
    }
    s.push_str("- The bottle rows run the full spec of `bytebot bottle run`: user, pid, net, ipc, uts and cgroup namespaces, `--new-session`, `--as-pid-1`, capabilities dropped, only /usr and the lib dirs plus a few /etc files, fresh /tmp, /proc, /dev and $HOME, the workspace bound read-write, a per-run cgroup (memory and pids) where the host allows one, then our init: seccomp filter compiled and applied, rlimits, the bridge listener, and the command. The init's report (last column) is its own CLOCK_MONOTONIC stamp after the command's exec returned.\n\n");
}

fn proxy_section(s: &mut String, e: &Egress, o: &Options) {
    s.push_str("### Egress proxy: HTTPS through CONNECT to a loopback server\n\n");
    s.push_str(&format!(
        "One Rust load client (hyper + rustls, HTTP/1.1) with {} workers, each on exactly one keep-alive connection of its own, {} s warm-up, then {} s measured on each path, in the order shown; one HTTPS server (hyper + rustls, a 12-byte JSON answer) that checks every request's `Authorization`. CPU is percent of one core while measured. Latency: p50 / p99 / max.\n\n",
        o.connections, o.warmup, o.seconds
    ));
    s.push_str("| path | what the proxy does per request | req/s | latency | errors | CPU: proxy / client / server / other processes | requests per proxy CPU-second | vs mitmproxy doing the same | vs direct |\n|---|---|---|---|---|---|---|---|---|\n");
    let mitm = e.mitm.as_ref().ok();
    let row = |s: &mut String,
               path: &str,
               what: &str,
               r: &Run,
               peer: Option<&Run>,
               direct: bool| {
        let proxy_cpu = if direct {
            "—".to_owned()
        } else {
            format!("{:.0} %", r.usage.proxy)
        };
        let per_cpu = if direct {
            "—".to_owned()
        } else {
            thousands(per_cpu_second(r))
        };
        s.push_str(&format!(
            "| {path} | {what} | **{}** | {} | {} | {proxy_cpu} / {:.0} % / {:.0} % / {:.0} % | {per_cpu} | {} | {} |\n",
            thousands(r.per_s),
            latency(&r.latency),
            r.errors + r.server_wrong as usize,
            r.usage.client,
            r.usage.server,
            r.usage.others,
            peer.map_or_else(
                || "—".to_owned(),
                |p| format!("**{:.1}×**", r.per_s / p.per_s.max(1e-9))
            ),
            if direct {
                "—".to_owned()
            } else {
                format!("{:.0} %", 100.0 * r.per_s / e.direct.per_s.max(1e-9))
            },
        ));
    };
    row(
        s,
        "direct, no proxy (the limit)",
        "—",
        &e.direct,
        None,
        true,
    );
    row(
        s,
        "ours: host without a secret",
        "CONNECT checked against the policy and the SSRF guard, then bytes relayed (TLS end to end); one audit line per tunnel",
        &e.tunnel,
        mitm.map(|m| &m.passthrough),
        false,
    );
    row(
        s,
        "ours: host with a bound secret",
        "TLS terminated with our CA, placeholder → secret in the request headers, secret → placeholder in the response headers, TLS again to the server; one audit line per request",
        &e.inject,
        mitm.map(|m| &m.inject),
        false,
    );
    match &e.mitm {
        Ok(m) => {
            let version = &m.version;
            row(
                s,
                &format!("{version}: `ignore_hosts` passthrough"),
                "CONNECT, then bytes relayed (TLS end to end)",
                &m.passthrough,
                None,
                false,
            );
            row(
                s,
                &format!("{version}: intercepted (its default)"),
                "TLS terminated with its CA, HTTP parsed and re-sent, TLS again to the server",
                &m.intercept,
                None,
                false,
            );
            row(
                s,
                &format!("{version}: intercepted + addon swapping the header"),
                "as intercepted, plus a Python addon doing the same swaps as ours",
                &m.inject,
                None,
                false,
            );
        }
        Err(err) => s.push_str(&format!(
            "| mitmproxy | **not measured**: {err:#} | — | — | — | — | — | — | — |\n"
        )),
    }
    s.push('\n');
    goals(s, e, mitm);
    checks(s, e, mitm);
    s.push_str(&format!(
        "- Fair comparison: both proxies listen on 127.0.0.1 TCP and reach the same server; the client, its {} connections (CONNECT, then TLS with ALPN http/1.1, made once), the roots it trusts (test CA, our CA, mitmproxy's) and the duration are the same on every path, and only requests started inside the measured window count. Host names resolve to the server through each proxy's own override (ours: `resolve`; mitmproxy: the addon's `server_connect` hook, once per connection), never DNS. Our proxy runs in this process on its own 2-thread tokio runtime (`bb-proxy`), as it runs inside `bytebot bottle run`; its CPU is the sum of those threads. mitmdump is its own process (one Python event loop), started with `--quiet`, its upstream verified against the test CA (`ssl_verify_upstream_trusted_ca`); its addon's request/response hooks also run, and return at once, for the hosts they do not change.\n",
        o.connections
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let direct_cpu = e.direct.usage.client + e.direct.usage.server;
    s.push_str(&format!(
        "- The direct path alone kept client and server at {direct_cpu:.0} % of one core, {:.0} % of this machine's {cores:.0} cores, so any proxy here runs on CPU taken from them: the share of direct is bounded by the machine, and requests per proxy CPU-second is the proxy's own cost.\n",
        direct_cpu / cores
    ));
    s.push_str("- Client, server and proxy share this machine's cores; \"other processes\" is everything else on the machine meanwhile, and a high figure there means the run was disturbed. Requests per proxy CPU-second is the figure that moves least with the machine. In a bottle the sandbox reaches the proxy through the init's bridge (loopback TCP in the sandbox → unix socket → the proxy), which this table does not include.\n");
}

fn goals(s: &mut String, e: &Egress, mitm: Option<&MitmRuns>) {
    let ratio = |a: &Run, b: &Run| a.per_s / b.per_s.max(1e-9);
    match mitm {
        Some(m) => {
            let pairs = [
                ("host without a secret: our tunnel vs mitmproxy's passthrough", &e.tunnel, &m.passthrough),
                ("host with a secret: our injection vs mitmproxy's addon", &e.inject, &m.inject),
            ];
            let parts: Vec<String> = pairs
                .iter()
                .map(|(what, ours, peer)| {
                    let r = ratio(ours, peer);
                    format!(
                        "{what} {r:.1}× {}",
                        verdict(r >= VS_MITM_GOAL && clean(ours) && clean(peer))
                    )
                })
                .collect();
            s.push_str(&format!(
                "- Goal (BASELINES.md): ≥ {VS_MITM_GOAL:.0}× mitmproxy's throughput, same work on both sides: {}. Against mitmproxy as people run it (intercepting every host), our tunnel is {:.1}×.\n",
                parts.join("; "),
                ratio(&e.tunnel, &m.intercept)
            ));
        }
        None => s.push_str(&format!(
            "- Goal (BASELINES.md): ≥ {VS_MITM_GOAL:.0}× mitmproxy's throughput: **not judged**, mitmproxy was not measured.\n"
        )),
    }
    let parts: Vec<String> = [("tunnel", &e.tunnel), ("injection", &e.inject)]
        .iter()
        .map(|(what, r)| {
            let share = ratio(r, &e.direct);
            format!(
                "{what} {:.0} % {}",
                100.0 * share,
                verdict(share >= VS_DIRECT_GOAL && clean(r) && clean(&e.direct))
            )
        })
        .collect();
    s.push_str(&format!(
        "- Goal (BASELINES.md): ≥ {:.0} % of a direct connection's throughput: {}.\n",
        100.0 * VS_DIRECT_GOAL,
        parts.join("; ")
    ));
}

fn checks(s: &mut String, e: &Egress, mitm: Option<&MitmRuns>) {
    let mut runs: Vec<(&str, &Run)> = vec![
        ("direct", &e.direct),
        ("our tunnel", &e.tunnel),
        ("our injection", &e.inject),
    ];
    if let Some(m) = mitm {
        runs.extend([
            ("mitmproxy passthrough", &m.passthrough),
            ("mitmproxy intercepted", &m.intercept),
            ("mitmproxy + addon", &m.inject),
        ]);
    }
    let seen: Vec<String> = runs
        .iter()
        .map(|(name, r)| {
            format!(
                "{name} {} right / {} wrong over {} connections",
                thousands(r.server_right as f64),
                r.server_wrong,
                r.server_connections
            )
        })
        .collect();
    s.push_str(&format!(
        "- Checked on every request: the server answers 200 only when `Authorization` is what that host must get — the real secret where a proxy injects it, the placeholder everywhere else (a tunnelled host must receive the placeholder untouched) — and 403 otherwise, which the client counts as an error. Warm-up included, with the TLS connections the server accepted (one per client connection where the proxy relays or on the direct path; where a proxy intercepts, its own upstream connections): {}.\n",
        seen.join("; ")
    ));
    let audited: Vec<String> = e
        .audited
        .iter()
        .map(|(host, n)| format!("{host} {}", thousands(*n as f64)))
        .collect();
    s.push_str(&format!(
        "- Our proxy's audit summary afterwards: requests or tunnels per host {}; secrets injected: {}.\n",
        if audited.is_empty() { "none".to_owned() } else { audited.join(", ") },
        if e.secrets_used.is_empty() { "none".to_owned() } else { e.secrets_used.join(", ") }
    ));
    for (name, r) in &runs {
        if let Some(err) = &r.first_error {
            s.push_str(&format!("- First error of {name}: {err}\n"));
        }
    }
}
