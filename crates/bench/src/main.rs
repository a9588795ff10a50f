//! `bytebot-bench`: measures the desktop daemon and its peers side by side
//! on one Xvfb screen in one run, the gateway under load (`gateway.rs`), the
//! agent (`agent.rs`) and the bottle (`bottle.rs`), and writes docs/BENCHMARKS.md.
//!
//! Ours is the real `bytebot desktop` process driven over HTTP on loopback
//! (end to end, as a client sees it); the peers are the programs people use
//! instead (scrot, python mss, xdotool, the tesseract CLI), run on the same
//! screen with the same content.

mod agent;
mod bottle;
mod gateway;
mod procfs;
mod screen;
mod stats;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use stats::{Row, Stats, time_command};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Benchmarks bytebot's desktop daemon against scrot, mss, xdotool and tesseract, its gateway under load, and its bottle against bare bwrap and mitmproxy.
#[derive(Debug, Parser)]
#[command(
    after_help = "Example: cargo build --release && target/release/bytebot-bench --bytebot target/release/bytebot"
)]
struct Args {
    /// The bytebot binary to measure (a release build).
    #[arg(long, default_value = "target/release/bytebot")]
    bytebot: PathBuf,
    /// Iterations for fast operations (screenshots, clicks).
    #[arg(long, default_value_t = 60)]
    iterations: usize,
    /// Iterations for OCR.
    #[arg(long, default_value_t = 5)]
    ocr_iterations: usize,
    /// Where to write the report; `-` for stdout only.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: String,
    /// Which parts to run (comma-separated); a part not run keeps its section of the report.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "desktop,gateway"
    )]
    parts: Vec<Part>,
    #[command(flatten)]
    gateway: gateway::Options,
    #[command(flatten)]
    agent: agent::Options,
    #[command(flatten)]
    bottle: bottle::Options,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// The desktop daemon against scrot, mss, xdotool and tesseract.
    Desktop,
    /// The gateway: signed /plan load, wrk ceiling, SSE fan-out, memory.
    Gateway,
    /// The agent: overhead per step with an instant fake model, queue throughput, memory.
    Agent,
    /// The bottle: start time against bare bwrap; the egress proxy against direct and mitmproxy.
    Bottle,
}

const TOKEN: &str = "bench-token-0123456789abcdef";
const TEXT40: &str = "The quick brown fox jumps over a lazy dog";

fn main() -> Result<()> {
    let args = Args::parse();
    let desktop_report = if args.parts.contains(&Part::Desktop) {
        Some(desktop(&args)?)
    } else {
        None
    };
    let gateway_report = if args.parts.contains(&Part::Gateway) {
        Some(gateway::run(&args.bytebot, &args.gateway)?)
    } else {
        None
    };
    let previous = match args.out.as_str() {
        "-" => String::new(),
        path => std::fs::read_to_string(path).unwrap_or_default(),
    };
    let agent_report = if args.parts.contains(&Part::Agent) {
        Some(agent::run(&args.bytebot, &args.agent)?)
    } else {
        None
    };
    let bottle_report = if args.parts.contains(&Part::Bottle) {
        Some(bottle::run(&args.bottle, &args.bytebot)?)
    } else {
        None
    };
    let mut report = gateway::merge_report(
        &previous,
        desktop_report.as_deref(),
        gateway_report.as_deref(),
    );
    if let Some(block) = agent_report {
        report = agent::merge(&report, &block);
    }
    if let Some(block) = bottle_report {
        report = bottle::merge(&report, &block);
    }
    println!("{report}");
    if args.out != "-" {
        std::fs::write(&args.out, &report).with_context(|| format!("writing {}", args.out))?;
        eprintln!("wrote {}", args.out);
    }
    Ok(())
}

/// The desktop part: its whole report.
fn desktop(args: &Args) -> Result<String> {
    let x =
        bytebot_desktop::xserver::OwnedX::start(1280, 960, "openbox").context("starting Xvfb")?;
    let painter = screen::Painter::open(&x.display)?;
    painter.paint_desktop()?;
    let port = free_port()?;
    let mut daemon = start_daemon(&args.bytebot, &x.display, port)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(args, &x.display, port, daemon.id(), &painter));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let (rows, notes) = result?;
    Ok(stats::render(&rows, &notes))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_daemon(bin: &PathBuf, display: &str, port: u16) -> Result<Child> {
    if !bin.exists() {
        bail!(
            "{} does not exist; build it first: cargo build --release -p bytebot-cli",
            bin.display()
        );
    }
    let data = std::env::temp_dir().join(format!("bytebot-bench-{}", std::process::id()));
    Command::new(bin)
        .args([
            "desktop",
            "--display",
            display,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("BYTEBOT_TOKEN", TOKEN)
        .env("BYTEBOT_DESKTOP_VNC", "false")
        .env("BYTEBOT_DATA_DIR", &data)
        .env("BYTEBOT_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting bytebot desktop")
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

async fn run(
    args: &Args,
    display: &str,
    port: u16,
    pid: u32,
    painter: &screen::Painter,
) -> Result<(Vec<Row>, Vec<String>)> {
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().build()?;
    let auth = format!("Bearer {TOKEN}");
    // Wait for the daemon.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = client
            .get(format!("{base}/ready"))
            .header("authorization", &auth)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("bytebot desktop did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kb(pid);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let n = args.iterations;

    // Screenshots.
    let get = |path: String| {
        let (client, auth) = (client.clone(), auth.clone());
        async move {
            let r = client
                .get(path)
                .header("authorization", auth)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "HTTP {}", r.status());
            Ok::<_, anyhow::Error>(r.bytes().await?.len())
        }
    };
    let post = |path: String, body: serde_json::Value| {
        let (client, auth) = (client.clone(), auth.clone());
        async move {
            let r = client
                .post(path)
                .header("authorization", auth)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                r.status().is_success(),
                "HTTP {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            Ok::<_, anyhow::Error>(r.bytes().await?.len())
        }
    };
    let png = stats::time_async(n, || get(format!("{base}/v1/screenshot"))).await?;
    let compat = stats::time_async(n, || {
        post(
            format!("{base}/computer-use"),
            json!({"action": "screenshot"}),
        )
    })
    .await?;
    let jpeg = stats::time_async(n, || {
        get(format!("{base}/v1/screenshot?format=jpeg&quality=80"))
    })
    .await?;
    let scaled = stats::time_async(n, || {
        get(format!(
            "{base}/v1/screenshot?format=jpeg&quality=80&max_width=1024"
        ))
    })
    .await?;
    let scrot = time_command(n.min(30), || {
        let mut c = Command::new("scrot");
        c.args(["-o", "-z", "/tmp/bytebot-bench-scrot.png"])
            .env("DISPLAY", display);
        c
    });
    match &scrot {
        Ok(s) => rows.push(Row::new(
            "screenshot, full screen PNG",
            "GET /v1/screenshot",
            png,
            "scrot",
            *s,
        )),
        Err(e) => notes.push(format!("scrot not measured: {e}")),
    }
    match mss(display, n.min(30)) {
        Ok(s) => rows.push(Row::new(
            "screenshot, full screen PNG",
            "GET /v1/screenshot",
            png,
            "python mss + mss.tools.to_png",
            s,
        )),
        Err(e) => notes.push(format!("python mss not measured: {e} (pip install mss)")),
    }
    if let Ok(s) = &scrot {
        rows.push(Row::new(
            "screenshot, Bytebot API (base64 PNG in JSON)",
            "POST /computer-use screenshot",
            compat,
            "scrot",
            *s,
        ));
        rows.push(Row::new(
            "screenshot, JPEG q80",
            "GET /v1/screenshot?format=jpeg",
            jpeg,
            "scrot (PNG)",
            *s,
        ));
        rows.push(Row::new(
            "screenshot, JPEG q80 scaled to 1024 wide",
            "…&max_width=1024",
            scaled,
            "scrot (PNG, full size)",
            *s,
        ));
    }

    // Clicks and typing.
    let click = json!({"action": "click_mouse", "coordinates": {"x": 1200, "y": 900}, "button": "left", "clickCount": 1});
    let ours_click = stats::time_async(n * 3, || {
        post(format!("{base}/computer-use"), click.clone())
    })
    .await?;
    for (label, extra) in [
        ("xdotool click (default)", vec![]),
        ("xdotool click --delay 0", vec!["--delay", "0"]),
    ] {
        let s = time_command(n.min(30), || {
            let mut c = Command::new("xdotool");
            c.args(["mousemove", "1200", "900", "click"])
                .args(&extra)
                .arg("1")
                .env("DISPLAY", display);
            c
        });
        match s {
            Ok(s) => rows.push(Row::new(
                "one click at a point",
                "POST /computer-use click_mouse",
                ours_click,
                label,
                s,
            )),
            Err(e) => notes.push(format!("{label} not measured: {e}")),
        }
    }
    let typing = json!({"action": "type_text", "text": TEXT40});
    let ours_type =
        stats::time_async(n, || post(format!("{base}/computer-use"), typing.clone())).await?;
    for (label, extra) in [
        ("xdotool type (default 12 ms delay)", vec![]),
        ("xdotool type --delay 0", vec!["--delay", "0"]),
    ] {
        let s = time_command(n.min(15), || {
            let mut c = Command::new("xdotool");
            c.arg("type")
                .args(&extra)
                .arg(TEXT40)
                .env("DISPLAY", display);
            c
        });
        match s {
            Ok(s) => rows.push(Row::new(
                "type 40 ASCII characters",
                "POST /computer-use type_text",
                ours_type,
                label,
                s,
            )),
            Err(e) => notes.push(format!("{label} not measured: {e}")),
        }
    }
    let unicode = json!({"action": "type_text", "text": "Grüße, 世界! ñandú — ça va? 🎉 Привет"});
    let ours_unicode =
        stats::time_async(n, || post(format!("{base}/computer-use"), unicode.clone())).await?;
    rows.push(Row::only("type 34 mixed Unicode characters (xdotool types these wrongly or not at all on a US layout)", "POST /computer-use type_text", ours_unicode));

    // OCR.
    let region = json!({"x": 0, "y": 0, "width": 640, "height": 240});
    let mut k = 0u32;
    let full = stats::time_async(args.ocr_iterations, || {
        k += 1;
        // Change a corner so the content cache cannot answer.
        let _ = painter.mark(k);
        post(format!("{base}/v1/find-text"), json!({"text": "Terminal"}))
    })
    .await;
    let cached = stats::time_async(args.ocr_iterations, || {
        post(format!("{base}/v1/find-text"), json!({"text": "Terminal"}))
    })
    .await;
    let regional = stats::time_async(args.ocr_iterations, || {
        k += 1;
        let _ = painter.mark(k);
        post(
            format!("{base}/v1/find-text"),
            json!({"text": "Terminal", "region": region.clone()}),
        )
    })
    .await;
    let shot = "/tmp/bytebot-bench-ocr.png";
    let _ = Command::new("scrot")
        .args(["-o", shot])
        .env("DISPLAY", display)
        .status();
    let tess = |threads: Option<&'static str>| {
        time_command(args.ocr_iterations, move || {
            let mut c = Command::new("tesseract");
            c.args([shot, "stdout"]);
            if let Some(t) = threads {
                c.env("OMP_THREAD_LIMIT", t);
            }
            c
        })
    };
    match (full, tess(None), tess(Some("1"))) {
        (Ok(full), Ok(t_default), Ok(t_one)) => {
            rows.push(Row::new(
                "OCR find-text, full screen",
                "POST /v1/find-text",
                full,
                "tesseract CLI (default)",
                t_default,
            ));
            rows.push(Row::new(
                "OCR find-text, full screen",
                "POST /v1/find-text",
                full,
                "tesseract CLI (1 thread)",
                t_one,
            ));
            if let Ok(r) = regional {
                rows.push(Row::new(
                    "OCR find-text, 640×240 region",
                    "POST /v1/find-text + region",
                    r,
                    "tesseract CLI full screen (1 thread)",
                    t_one,
                ));
            }
            if let Ok(c) = cached {
                rows.push(Row::new(
                    "OCR find-text, unchanged screen (cached)",
                    "POST /v1/find-text",
                    c,
                    "tesseract CLI full screen (1 thread)",
                    t_one,
                ));
            }
        }
        (full, a, b) => notes.push(format!(
            "OCR not measured: {}",
            [full.err(), a.err(), b.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }

    if let Some(kb) = idle_rss {
        rows.push(Row::memory(
            "daemon RSS, idle after start",
            kb,
            "Bytebot's bytebotd (Node), from BASELINES.md, not this run",
            135 * 1024,
        ));
    }
    if let Some(kb) = rss_kb(pid) {
        rows.push(Row::memory(
            "daemon RSS after the benchmark",
            kb,
            "Bytebot's bytebotd (Node), from BASELINES.md, not this run",
            135 * 1024,
        ));
    }
    notes.push(format!("Machine: {} cores; Xvfb 1280×960×24 with openbox and a synthetic busy desktop; medians of {n} runs (OCR: {}).", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), args.ocr_iterations));
    notes.push("Ours is measured end to end over HTTP on loopback against the release `bytebot desktop` process; peers are measured as processes (including their start-up, which is how agents call them).".into());
    Ok((rows, notes))
}

fn mss(display: &str, n: usize) -> Result<Stats> {
    let script = r#"
import sys, time, statistics, mss, mss.tools
n = int(sys.argv[1]); ts = []
with mss.mss() as s:
    m = s.monitors[1]
    for _ in range(n):
        t = time.perf_counter(); img = s.grab(m); mss.tools.to_png(img.rgb, img.size); ts.append((time.perf_counter() - t) * 1000)
ts.sort(); print(statistics.median(ts), ts[int(len(ts) * 0.95) - 1])
"#;
    let out = Command::new("python3")
        .args(["-c", script, &n.to_string()])
        .env("DISPLAY", display)
        .output()?;
    if !out.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok());
    match (parts.next(), parts.next()) {
        (Some(median), Some(p95)) => Ok(Stats {
            median_ms: median,
            p95_ms: p95,
            n,
        }),
        _ => bail!("unexpected output {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_of_all_parts_fit_together() {
        // Catches two parts' options sharing an id, which clap reports only when parsing (and
        // only in debug builds); each part names its group for that reason.
        <Args as clap::CommandFactory>::command().debug_assert();
    }
}
