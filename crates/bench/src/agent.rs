//! The agent part: overhead per step with a model that answers at once, the queue's
//! throughput, and memory while a task runs.
//!
//! A fake OpenAI-compatible server in this process answers every model call immediately: a
//! click for each of the first `steps` turns, then `set_task_status`. Ours is a real release
//! `bytebot up` (desktop, gateway and agent in one process, its own Xvfb, SQLite). A step is
//! everything the agent does between two model calls: store the answer, run the click on the
//! desktop, wait for the screen to settle, take and store the screenshot, store the result,
//! rebuild the context and send the next request. Bytebot's agent cannot be installed here;
//! its fixed sleeps per step (750 ms after each action plus nut-js's 100 ms auto-delay) are
//! the peer figure, from its source.

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::routing::post;
use bytebot_store::{NewAgentTask, Store};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-agent-token-0123456789";
/// Bytebot's agent sleeps 750 ms after every action and nut-js waits 100 ms per input call.
const PEER_FIXED_SLEEPS_MS: f64 = 850.0;

/// Options of the agent part.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "AgentOptions")]
pub struct Options {
    /// Steps per measured task.
    #[arg(long, default_value_t = 40)]
    pub agent_steps: usize,
    /// Measured tasks per configuration.
    #[arg(long, default_value_t = 3)]
    pub agent_tasks: usize,
    /// Tasks through the queue in the throughput run.
    #[arg(long, default_value_t = 1000)]
    pub queue_tasks: usize,
}

/// Begin and end markers of the generated agent block in the report.
pub const BEGIN: &str = "<!-- bytebot-bench agent: begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bytebot-bench agent: end -->";

/// Runs the agent part; returns its block for the report.
pub fn run(bytebot: &Path, opts: &Options) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fake = start_fake(opts.agent_steps).await?;
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for (label, settle) in [("settle off (quiet 0 ms)", 0u64), ("default settle (quiet 60 ms)", 60)] {
            let (per_step, rss_idle, rss_peak) =
                measure_steps(bytebot, &fake, settle, opts).await?;
            rows.push(format!(
                "| agent step, fake model answering at once, {label} | **{:.1} ms** per step (median of {} tasks × {} steps; best {:.1}) | Bytebot agent: fixed sleeps alone | {PEER_FIXED_SLEEPS_MS:.0} ms | **{:.0}×** less |",
                per_step.0, opts.agent_tasks, opts.agent_steps, per_step.1, PEER_FIXED_SLEEPS_MS / per_step.0
            ));
            if settle == 60 {
                rows.push(format!(
                    "| RSS of `bytebot up` (desktop + gateway + agent) | idle {:.1} MB; peak while a task runs {:.1} MB (+{:.1} MB) | Bytebot agent (Node) | not installable here | — |",
                    rss_idle as f64 / 1024.0,
                    rss_peak as f64 / 1024.0,
                    rss_peak.saturating_sub(rss_idle) as f64 / 1024.0
                ));
            }
        }
        let (tps, workers) = queue_throughput(opts.queue_tasks).await?;
        rows.push(format!(
            "| queue: {} tasks claimed and finished by {workers} workers, SQLite (WAL) | **{tps:.0} tasks/s** | Bytebot: one task at a time, no queue | — | — |",
            opts.queue_tasks
        ));
        notes.push(format!(
            "A step: the model's answer stored, the click run on the desktop, the screen settled (or not), the screenshot taken at the model's size and stored as a blob, the result stored, the context rebuilt and the next request sent. The fake model is an OpenAI-compatible server in the bench process that answers every call at once (a click, then `set_task_status` after {} steps).",
            opts.agent_steps
        ));
        notes.push("Settle: the desktop returns from `/v1/settle` as soon as the screen has been still for the quiet time, counting from the last change; a click on the bench's idle screen changes nothing, so the default settle costs little here. On a real application that redraws after the click, the step waits for the redraw plus the quiet time.".into());
        notes.push("Memory: the peak is the whole process while the agent holds the task's last screenshots, their base64 copies in the request body and the JSON of the answer; the allocator keeps some of it afterwards. Not yet optimised.".into());
        notes.push("Peer: Bytebot's agent cannot be installed from the registries this machine reaches; its fixed waits per step are in its source (750 ms after every action, plus nut-js's 100 ms auto-delay per input call), before any model or screenshot time. PostgreSQL queue throughput is not measured yet.".into());
        let date = bytebot_desktop::files::rfc3339(std::time::SystemTime::now())
            .unwrap_or_default()
            .chars()
            .take(10)
            .collect::<String>();
        let mut out = format!(
            "{BEGIN}\n## Agent\n\nMeasured {date} on this machine (2 cores) by `scripts/bench --parts agent`.\n\n| operation | ours | peer | peer figure | ratio |\n|---|---|---|---|---|\n"
        );
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
        out.push('\n');
        for n in notes {
            out.push_str(&format!("- {n}\n"));
        }
        out.push_str(END);
        out.push('\n');
        Ok(out)
    })
}

/// A fake model server: `http://127.0.0.1:PORT`.
async fn start_fake(steps: usize) -> Result<String> {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(body): Json<Value>| async move {
            let done = body["messages"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
            let (name, args) = if done < steps {
                (
                    "computer",
                    json!({"action": "click", "x": 200 + (done % 50) as i64, "y": 300}),
                )
            } else {
                (
                    "set_task_status",
                    json!({"status": "completed", "message": "done"}),
                )
            };
            Json(json!({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null,
                    "tool_calls": [{"id": format!("c{done}"), "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}}]}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// A running `bytebot up`, killed on drop.
struct Up {
    child: Child,
    agent: String,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(bytebot: &Path, fake: &str, settle: u64) -> Result<Up> {
    if !bytebot.exists() {
        bail!(
            "{} does not exist; build it first: cargo build --release -p bytebot-cli",
            bytebot.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bytebot.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[log]
level = "warn"
[desktop]
listen = "127.0.0.1:0"
vnc = false
[gateway]
listen = "127.0.0.1:0"
[agent]
listen = "127.0.0.1:0"
default_model = "fake"
settle_quiet_ms = {settle}
max_iterations = 1000
[agent.providers.fake]
kind = "openai_compatible"
base_url = "{fake}"
[[agent.models]]
id = "fake"
provider = "fake"
max_long_edge = 1280
"#,
            data = dir.path().display()
        ),
    )?;
    let mut child = Command::new(bytebot)
        .args(["--config"])
        .arg(&config)
        .arg("up")
        .env("BYTEBOT_TOKEN", TOKEN)
        .env_remove("DISPLAY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bytebot up")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim_start().strip_prefix("agent ") {
                let url = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(url);
            }
        }
    });
    let agent = rx
        .recv_timeout(Duration::from_secs(60))
        .context("bytebot up did not print its agent URL")?;
    Ok(Up {
        child,
        agent,
        _dir: dir,
    })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs one warm-up task and `agent_tasks` measured ones; returns (median, best) ms per step
/// and RSS idle / peak in KB.
async fn measure_steps(
    bytebot: &Path,
    fake: &str,
    settle: u64,
    opts: &Options,
) -> Result<((f64, f64), u64, u64)> {
    let up = start_up(bytebot, fake, settle)?;
    let http = reqwest::Client::new();
    let pid = up.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kb(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let mut per_step = Vec::new();
    for i in 0..=opts.agent_tasks {
        let started = Instant::now();
        let task: Value = http
            .post(format!("{}/tasks", up.agent))
            .bearer_auth(TOKEN)
            .json(&json!({"description": format!("bench task {i}")}))
            .send()
            .await?
            .json()
            .await?;
        let id = task["id"].as_str().context("no task id")?.to_string();
        loop {
            let t: Value = http
                .get(format!("{}/tasks/{id}", up.agent))
                .bearer_auth(TOKEN)
                .send()
                .await?
                .json()
                .await?;
            match t["status"].as_str() {
                Some("COMPLETED") => break,
                Some("PENDING" | "RUNNING") => tokio::time::sleep(Duration::from_millis(5)).await,
                other => bail!("bench task ended as {other:?}: {t}"),
            }
        }
        // The first task warms up caches and connections; it is not counted.
        if i > 0 {
            per_step.push(started.elapsed().as_secs_f64() * 1000.0 / (opts.agent_steps + 1) as f64);
        }
    }
    sampler.abort();
    per_step.sort_by(f64::total_cmp);
    let median = per_step[per_step.len() / 2];
    let best = per_step[0];
    Ok((
        (median, best),
        idle,
        peak.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// Tasks per second through the queue on SQLite: `n` tasks, 4 workers claiming and finishing.
async fn queue_throughput(n: usize) -> Result<(f64, usize)> {
    const WORKERS: usize = 4;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("queue.db").display());
    let store = Store::open(&url).await?;
    for i in 0..n {
        store
            .insert_agent_task(&NewAgentTask::new(format!("t{i}"), "fake", "bench"))
            .await?;
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut done = 0usize;
            while let Some(t) = store
                .claim_agent_task(&worker, "d", Duration::from_secs(30))
                .await?
            {
                store
                    .finish_task(
                        &t.id,
                        &worker,
                        bytebot_protocol::TaskStatus::Completed,
                        None,
                        None,
                    )
                    .await?;
                done += 1;
            }
            Ok::<usize, anyhow::Error>(done)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    if total != n {
        bail!("the queue finished {total} of {n} tasks");
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), WORKERS))
}

/// `previous` with the agent block replaced (or appended).
pub fn merge(previous: &str, block: &str) -> String {
    match (previous.find(BEGIN), previous.find(END)) {
        (Some(b), Some(e)) if b < e => format!(
            "{}{}{}",
            &previous[..b],
            block.trim_end(),
            &previous[e + END.len()..]
        ),
        _ => format!("{}\n\n{}", previous.trim_end(), block),
    }
}
