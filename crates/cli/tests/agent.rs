//! The agent end to end: real `bytebot desktop` and `bytebot agent` processes on a real Xvfb,
//! a fake OpenAI-compatible model server on loopback scripted to drive the desktop, and checks
//! by the effects (an independent X client records the clicks and the typed text).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../agent/tests/common/mod.rs"]
mod fake;

use fake::{FakeProvider, Reply};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "agent-test-token-0123456789";

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bytebot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bytebot"));
    for var in [
        "DISPLAY",
        "BYTEBOT_TOKEN",
        "BYTEBOT_CONFIG",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "OLLAMA_HOST",
    ] {
        c.env_remove(var);
    }
    c.env("BYTEBOT_TOKEN", TOKEN);
    c
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bytebot` with `args` and returns it with the URL after `marker` on its stdout.
fn start(args: &[&str], config: &std::path::Path, marker: &str) -> (Proc, String) {
    let mut child = bytebot()
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pos) = line.find(&marker) {
                let rest = &line[pos + marker.len()..];
                let url = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the process prints its URL");
    (Proc(child), url)
}

/// A desktop daemon served from this test process on its own Xvfb.
struct InProcessDesktop {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _server: std::sync::Arc<bytebot_desktop::Server>,
}

async fn start_desktop(workspace: std::path::PathBuf) -> InProcessDesktop {
    let config = bytebot_desktop::DesktopConfig {
        vnc: false,
        ..bytebot_desktop::DesktopConfig::default()
    };
    let server = tokio::task::spawn_blocking(move || {
        bytebot_desktop::Server::start(config, TOKEN.to_string(), workspace)
    })
    .await
    .unwrap()
    .expect("desktop starts");
    let server = std::sync::Arc::new(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = std::sync::Arc::clone(&server);
    tokio::spawn(async move {
        let _ = s
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await;
    });
    InProcessDesktop {
        url,
        _stop: tx,
        _server: server,
    }
}

/// A desktop, an agent and a fake model server.
struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    desktop_url: String,
    display: String,
    agent_url: String,
    agent: Option<Proc>,
    _desktop: InProcessDesktop,
    fake: FakeProvider,
    http: reqwest::Client,
}

impl Setup {
    async fn start(extra: &str) -> Option<Setup> {
        if !have("Xvfb") {
            eprintln!("skipping: Xvfb is not available (apt-get install xvfb)");
            return None;
        }
        let fake = FakeProvider::start().await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bytebot.toml");
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[desktop]
vnc = false
[agent]
default_model = "fake"
lease_s = 3
settle_quiet_ms = 30
{extra}
[agent.providers.local]
kind = "openai_compatible"
base_url = "{base}"
timeout_s = 20
[[agent.models]]
id = "fake"
provider = "local"
name = "fake-vision"
max_long_edge = 1280
"#,
                data = dir.path().display(),
                base = fake.url(),
                extra = extra.replace("{FAKE}", &fake.url()),
            ),
        )
        .unwrap();
        // The desktop runs in this process (as in the desktop crate's tests); the agent is the
        // real binary, so it can be killed with SIGKILL.
        let desktop = start_desktop(dir.path().join("workspace")).await;
        let desktop_url = desktop.url.clone();
        let http = reqwest::Client::new();
        let screen: Value = http
            .get(format!("{desktop_url}/v1/screen"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let display = screen["display"].as_str().unwrap().to_string();
        let mut s = Setup {
            dir,
            config,
            desktop_url,
            display,
            agent_url: String::new(),
            agent: None,
            _desktop: desktop,
            fake,
            http,
        };
        s.start_agent();
        Some(s)
    }

    fn start_agent(&mut self) {
        let db = format!("sqlite:{}", self.dir.path().join("agent.db").display());
        let (agent, url) = start(
            &[
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--desktop",
                &self.desktop_url,
                "--database",
                &db,
            ],
            &self.config,
            "agent listening on ",
        );
        self.agent = Some(agent);
        self.agent_url = url;
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.agent_url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.agent_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Queues a task whose first model turn is a wait of `ms`, and returns its id once the
    /// agent has asked the model (so the wait is running).
    async fn start_waiting_task(&self, call_id: &str, ms: u64) -> String {
        self.fake.push(tool_call(
            call_id,
            "computer",
            json!({"action": "wait", "duration_ms": ms}),
        ));
        let (status, task) = self
            .post("/tasks", json!({"description": "wait, then see"}))
            .await;
        assert_eq!(status, 201, "{task}");
        let id = task["id"].as_str().unwrap().to_string();
        // Until the agent has stored the model's answer, the wait has not started.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let msgs = self.get(&format!("/tasks/{id}/messages")).await;
            let answered = msgs["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant"));
            if answered {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never stored the answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        id
    }

    /// Waits until the task leaves PENDING/RUNNING (at most `secs`); returns it.
    async fn wait_done(&self, id: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.get(&format!("/tasks/{id}")).await;
            let s = t["status"].as_str().unwrap_or("");
            if !matches!(s, "PENDING" | "RUNNING") || Instant::now() > deadline {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Image-space coordinates the model must send to hit screen point (x, y).
    async fn image_point(&self, x: i32, y: i32) -> (i32, i32) {
        let screen: Value = self
            .http
            .get(format!("{}/v1/screen", self.desktop_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sw = screen["width"].as_u64().unwrap() as u32;
        let sh = screen["height"].as_u64().unwrap() as u32;
        let scale = bytebot_agent::screen::Scale {
            screen: (sw, sh),
            image: bytebot_agent::screen::fit(
                (sw, sh),
                bytebot_agent::model::ImageLimit {
                    max_long_edge: 1280,
                    max_pixels: 1280 * 800,
                },
            ),
        };
        let p = scale.to_image(bytebot_agent::model::Point { x, y });
        (p.x, p.y)
    }
}

/// Reads `/tasks/{id}/events` (from the start, or after `last_id`) until the task's final
/// status event.
async fn read_events(s: &Setup, id: &str, last_id: Option<i64>) -> Vec<Value> {
    read_events_until(s, id, last_id, "COMPLETED", |e| {
        e.last()
            .is_some_and(|e| e["kind"] == "status" && e["data"]["status"] == "COMPLETED")
    })
    .await
}

/// Reads `/tasks/{id}/events` until `done` says the events so far are enough (10 s at most,
/// then it fails naming `what` it waited for).
async fn read_events_until(
    s: &Setup,
    id: &str,
    last_id: Option<i64>,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut req = s
        .http
        .get(format!("{}/tasks/{id}/events", s.agent_url))
        .bearer_auth(TOKEN);
    if let Some(last) = last_id {
        req = req.header("last-event-id", last.to_string());
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await
        else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                events.push(serde_json::from_str(data.trim()).unwrap());
                if done(&events) {
                    return events;
                }
            }
        }
    }
    panic!("the stream did not reach {what}: {events:?}");
}

/// One chat-completions answer with a tool call, as OpenAI documents it.
fn tool_call(id: &str, name: &str, args: Value) -> Reply {
    Reply::json(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-vision",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}
                }]
            },
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020}
    }))
}

/// The `tool` message answering `call_id` in a chat-completions request body.
fn tool_answer<'a>(body: &'a Value, call_id: &str) -> Option<&'a Value> {
    body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
}

/// The recorder window of the desktop tests (an independent X client that prints its events).
struct Recorder {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Recorder {
    fn open(display: &str, x: u32, y: u32, w: u32, h: u32) -> Option<Recorder> {
        let ok = Command::new("/usr/bin/python3")
            .args(["-c", "import Xlib"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: python3-xlib is not available (apt-get install python3-xlib)");
            return None;
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../desktop/tests/support/xrecorder.py"
        );
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([x, y, w, h].map(|v| v.to_string()))
            .env("DISPLAY", display)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("recorder appears");
        assert_eq!(ready["ready"], true, "{ready}");
        Some(Recorder {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    fn wait_for(&mut self, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => return false,
            }
        }
        true
    }

    fn text(&self) -> String {
        self.seen
            .iter()
            .filter_map(|e| e["char"].as_str())
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_model_drives_the_desktop_by_coordinates_by_text_and_types_unicode() {
    let Some(s) = Setup::start("").await else {
        return;
    };
    if !have("xmessage") {
        eprintln!("skipping: xmessage is not available (apt-get install x11-utils)");
        return;
    }
    let mut msg = Proc(
        Command::new("xmessage")
            // Styled as in the desktop's OCR tests: a large font and a padded button OCR reads.
            .args([
                "-print",
                "-geometry",
                "+700+500",
                "-fn",
                "-adobe-helvetica-bold-r-normal--34-*-*-*-*-*-iso8859-1",
            ])
            .args([
                "-xrm",
                "*message.scrollVertical: never",
                "-xrm",
                "*message.scrollHorizontal: never",
            ])
            .args([
                "-xrm",
                "*message.borderWidth: 0",
                "-xrm",
                "*message*leftMargin: 16",
            ])
            .args([
                "-xrm",
                "*message*topMargin: 8",
                "-xrm",
                "*message*rightMargin: 16",
            ])
            .args([
                "-xrm",
                "*Command.internalWidth: 16",
                "-xrm",
                "*Command.internalHeight: 6",
            ])
            .args(["-buttons", "Proceed", "Press the button"])
            .env("DISPLAY", &s.display)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A window is mapped before its client draws; on a loaded machine that takes a while.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Value = s
            .http
            .post(format!("{}/v1/find-text", s.desktop_url))
            .bearer_auth(TOKEN)
            .json(&json!({"text": "Proceed"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if found["matches"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "xmessage never became readable: {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Opened last, so it has the keyboard focus for the typing.
    let Some(mut rec) = Recorder::open(&s.display, 100, 100, 500, 300) else {
        return;
    };

    let (ix, iy) = s.image_point(300, 250).await;
    s.fake.push(tool_call(
        "c1",
        "computer",
        json!({"action": "click", "x": ix, "y": iy}),
    ));
    s.fake.push(tool_call(
        "c2",
        "computer",
        json!({"action": "type", "text": "héllo wörld ✓"}),
    ));
    s.fake
        .push(tool_call("c3", "click_text", json!({"text": "Proceed"})));
    s.fake.push(tool_call(
        "c4",
        "click_text",
        json!({"text": "No such label here"}),
    ));
    s.fake.push(tool_call(
        "c5",
        "set_task_status",
        json!({"status": "completed", "message": "clicked, typed and pressed Proceed"}),
    ));

    let (status, task) = s
        .post(
            "/tasks",
            json!({"description": "Click the window, type, press Proceed"}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let done = s.wait_done(&id, 60).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["result"]["message"],
        "clicked, typed and pressed Proceed"
    );

    // The click landed where the model pointed, mapped back to the screen.
    assert!(rec.wait_for(|seen| seen.iter().any(|e| e["type"] == "button_press")));
    let press = rec
        .seen
        .iter()
        .find(|e| e["type"] == "button_press")
        .unwrap()
        .clone();
    let (px, py) = (press["x"].as_i64().unwrap(), press["y"].as_i64().unwrap());
    assert!(
        (px - 300).abs() <= 1 && (py - 250).abs() <= 1,
        "click at {px},{py}"
    );
    // The Unicode text arrived in the focused window.
    assert!(
        rec.wait_for(|seen| {
            seen.iter()
                .filter_map(|e| e["char"].as_str())
                .collect::<String>()
                .contains("héllo wörld ✓")
        }),
        "typed: {:?}",
        rec.text()
    );
    // xmessage prints the pressed button and exits.
    let out = msg.0.wait_with_output_timeout();
    let c3 = tool_answer(&s.fake.seen()[3].body, "c3").cloned();
    assert!(
        out.contains("Proceed"),
        "xmessage said {out:?}; the agent said {c3:?}"
    );

    // Each result went back to the model: screenshots as images, the failed OCR click as an
    // error with the real reason.
    let seen = s.fake.seen();
    assert_eq!(seen.len(), 5, "one request per model turn");
    let c1 = tool_answer(&seen[1].body, "c1").expect("c1 answered");
    assert!(
        !c1["content"].as_str().unwrap_or("").starts_with("Error"),
        "{c1}"
    );
    let images = seen[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "image_url")
        .count();
    assert!(
        images >= 1,
        "the screenshot after the click is sent as an image"
    );
    let c4 = tool_answer(&seen[4].body, "c4").expect("c4 answered");
    let text = c4["content"].as_str().unwrap_or("");
    assert!(
        text.starts_with("Error") && text.contains("not on the screen"),
        "{text}"
    );

    // The metrics count what happened.
    let metrics = s
        .http
        .get(format!("{}/metrics", s.agent_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"bytebot_agent_model_calls_total{model="fake",outcome="ok"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"bytebot_agent_tool_calls_total{kind="click_text",outcome="error"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"bytebot_agent_tasks_finished_total{kind="COMPLETED",outcome=""} 1"#),
        "{metrics}"
    );

    // The live stream replays every event in order and resumes after Last-Event-ID.
    let events = read_events(&s, &id, None).await;
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for kind in ["message", "tool_call", "usage", "status"] {
        assert!(events.iter().any(|e| e["kind"] == kind), "no {kind} event");
    }
    let mid = ids[ids.len() / 2];
    let rest = read_events(&s, &id, Some(mid)).await;
    let rest_ids: Vec<i64> = rest.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(rest_ids, ids[ids.len() / 2 + 1..].to_vec());
    // `bytebot task watch` follows the same stream and reports the end.
    let out = bytebot()
        .arg("--config")
        .arg(&s.config)
        .args(["task", "watch", &id, "--url", &s.agent_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("is COMPLETED"),
        "{text}"
    );

    // Usage and cost were recorded per call.
    assert_eq!(done["input_tokens"].as_i64(), Some(5000), "{done}");
    let msgs = s.get(&format!("/tasks/{id}/messages")).await;
    assert!(msgs["messages"].as_array().unwrap().len() >= 11, "{msgs}");
}

trait WaitOutput {
    fn wait_with_output_timeout(&mut self) -> String;
}

impl WaitOutput for Child {
    fn wait_with_output_timeout(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.try_wait() {
                let mut out = String::new();
                if let Some(mut o) = self.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut out);
                }
                return out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.kill();
        String::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_task_resumes_and_the_in_flight_action_is_not_repeated() {
    let Some(mut s) = Setup::start("").await else {
        return;
    };
    // The first turn asks for a long wait; the agent is killed while it runs.
    let id = s.start_waiting_task("w1", 4000).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut agent = s.agent.take().unwrap();
    // SIGKILL: no chance to clean up or release the lease.
    agent.0.kill().unwrap();
    let _ = agent.0.wait();
    drop(agent);
    assert_eq!(s.fake.seen().len(), 1);

    s.fake.push(tool_call(
        "f1",
        "set_task_status",
        json!({"status": "completed", "message": "resumed"}),
    ));
    s.start_agent();
    let done = s.wait_done(&id, 60).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["attempts"].as_i64(),
        Some(2),
        "taken again after the lease ran out: {done}"
    );
    let seen = s.fake.seen();
    assert_eq!(seen.len(), 2, "the model was asked again, once");
    let w1 = tool_answer(&seen[1].body, "w1").expect("the in-flight call is answered");
    let text = w1["content"].as_str().unwrap_or("");
    assert!(text.contains("Not known to have run"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_provider_faults_are_reported_clearly() {
    let Some(s) = Setup::start("max_iterations = 3").await else {
        return;
    };
    // Invalid bodies: 422 naming the field.
    let (st, body) = s.post("/tasks", json!({"descripton": "typo"})).await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("descripton"),
        "{body}"
    );
    let (st, body) = s
        .post("/tasks", json!({"description": "x", "priority": "SOON"}))
        .await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (422, Some("priority")),
        "{body}"
    );
    // An unknown model names the configured ones.
    let (st, body) = s
        .post("/tasks", json!({"description": "x", "model": "gpt-9"}))
        .await;
    assert_eq!(st, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("configured: fake"),
        "{body}"
    );
    // No token: 401.
    let r = s
        .http
        .get(format!("{}/tasks", s.agent_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The provider refuses the key: the task needs help and says which key.
    s.fake.push(Reply::status(401, json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})));
    let (_, t) = s.post("/tasks", json!({"description": "one"})).await;
    let done = s.wait_done(t["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "NEEDS_HELP", "{done}");
    let err = done["error"].as_str().unwrap();
    assert!(err.contains("401") && err.contains("api_key_env"), "{err}");

    // Garbage: the step fails with the reason.
    s.fake.push(Reply::raw(200, "<html>not json</html>"));
    let (_, t) = s.post("/tasks", json!({"description": "two"})).await;
    let done = s.wait_done(t["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "NEEDS_HELP", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("not JSON"),
        "{done}"
    );

    // A model that only ever takes screenshots hits the iteration cap.
    for i in 0..3 {
        s.fake.push(tool_call(
            &format!("s{i}"),
            "computer",
            json!({"action": "screenshot"}),
        ));
    }
    let (_, t) = s.post("/tasks", json!({"description": "three"})).await;
    let done = s.wait_done(t["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "NEEDS_HELP", "{done}");
    let err = done["error"].as_str().unwrap();
    assert!(
        err.contains("max_iterations") || err.contains("repeated"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_pauses_the_agent_and_hand_back_resumes_with_the_persons_note() {
    let Some(s) = Setup::start("").await else {
        return;
    };
    let id = s.start_waiting_task("w1", 10000).await;
    let started = Instant::now();
    let (st, t) = s.post(&format!("/tasks/{id}/takeover"), json!({})).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["control"], "USER");
    // The agent stops at once (inside its 10 s wait) and leaves the desktop alone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = s.get(&format!("/tasks/{id}")).await;
        if t["status"] == "PENDING" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not stop: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.fake.seen().len(),
        1,
        "no model call while a person has control"
    );
    assert_eq!(s.get(&format!("/tasks/{id}")).await["status"], "PENDING");

    // The person acts on the desktop (an X client of its own, as a VNC viewer would be): the
    // worker that ran the task records it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tracking: Value = s
            .http
            .get(format!("{}/v1/input-tracking", s.desktop_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if tracking["tracking"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "input tracking did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if have("xdotool") {
        let person = Command::new("xdotool")
            .env("DISPLAY", &s.display)
            .args([
                "mousemove",
                "200",
                "150",
                "click",
                "1",
                "type",
                "--delay",
                "20",
                "ok",
            ])
            .status()
            .unwrap();
        assert!(person.success());
        read_events_until(&s, &id, None, "three person_input events", |e| {
            e.iter().filter(|e| e["kind"] == "person_input").count() >= 3
        })
        .await;
    } else {
        eprintln!(
            "xdotool is missing (apt-get install xdotool): the person's input is not checked"
        );
    }

    s.fake.push(tool_call(
        "f1",
        "set_task_status",
        json!({"status": "completed", "message": "thanks"}),
    ));
    let (st, t) = s
        .post(
            &format!("/tasks/{id}/resume"),
            json!({"message": "I pressed OK myself"}),
        )
        .await;
    assert_eq!((st, t["control"].as_str()), (200, Some("ASSISTANT")), "{t}");
    let done = s.wait_done(&id, 30).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let body = s.fake.seen()[1].body.to_string();
    assert!(
        body.contains("I pressed OK myself"),
        "the person's note reaches the model"
    );
    assert!(
        body.contains("This is the screen now"),
        "with a fresh screenshot"
    );
    if have("xdotool") {
        // What the person did, in the model's image coordinates.
        let (ix, iy) = s.image_point(200, 150).await;
        assert!(
            body.contains(&format!("left-clicked at ({ix}, {iy})"))
                && body.contains("typed \\\"ok\\\""),
            "{body}"
        );
    }
    assert!(
        body.contains("Stopped: the task was cancelled or a person took over"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_task_at_once() {
    let Some(s) = Setup::start("").await else {
        return;
    };
    let id = s.start_waiting_task("w1", 20000).await;
    let (st, t) = s.post(&format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!((st, t["status"].as_str()), (200, Some("CANCELLED")), "{t}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(t["status"], "CANCELLED", "{t}");
    assert_eq!(s.fake.seen().len(), 1, "no model call after cancel");
    // A cancelled task cannot be cancelled again, nor resumed.
    let (st, _) = s.post(&format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(st, 409);
    let (st, body) = s.post(&format!("/tasks/{id}/resume"), json!({})).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CANCELLED"),
        "{body}"
    );
    // Deleting removes it.
    let r = s
        .http
        .delete(format!("{}/tasks/{id}", s.agent_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = s
        .http
        .get(format!("{}/tasks/{id}", s.agent_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_is_summarised_instead_of_outgrowing_the_context() {
    let Some(s) = Setup::start(
        r#"summarize_at = 0.5
[[agent.models]]
id = "small"
provider = "local"
name = "fake-small"
context_tokens = 8000
max_long_edge = 1280"#,
    )
    .await
    else {
        return;
    };
    for i in 0..8 {
        s.fake.push(tool_call(
            &format!("k{i}"),
            "computer",
            // Different each time: the same action on an unchanged screen counts as a loop.
            json!({"action": "wait", "duration_ms": 10 + i}),
        ));
    }
    s.fake.push(tool_call(
        "done",
        "set_task_status",
        json!({"status": "completed", "message": "waited 8 times"}),
    ));
    let (st, t) = s
        .post(
            "/tasks",
            json!({"description": "wait eight times", "model": "small"}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap();
    let done = s.wait_done(id, 60).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let seen = s.fake.seen();
    let last = seen.last().unwrap().body.to_string();
    assert!(
        last.contains("Summary of the steps so far"),
        "the last request is summarised"
    );
    assert!(
        last.contains("wait eight times"),
        "and still says what the task is"
    );
    let first_summarised = seen
        .iter()
        .position(|r| r.body.to_string().contains("Summary of the steps so far"))
        .unwrap();
    assert!(first_summarised > 1, "short contexts are sent whole");
    // Every message is still stored; only the model's view is shorter.
    let msgs = s.get(&format!("/tasks/{id}/messages?limit=500")).await;
    assert!(msgs["messages"].as_array().unwrap().len() >= 18, "{msgs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_task_intent_hands_an_approved_prompt_to_the_agent() {
    if !have("Xvfb") {
        eprintln!("skipping: Xvfb is not available (apt-get install xvfb)");
        return;
    }
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bytebot.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[desktop]
listen = "127.0.0.1:0"
vnc = false
[gateway]
listen = "127.0.0.1:0"
[agent]
listen = "127.0.0.1:0"
[agent.providers.local]
kind = "openai_compatible"
base_url = "{base}"
[[agent.models]]
id = "fake"
provider = "local"
max_long_edge = 1280
"#,
            data = dir.path().display(),
            base = fake.url(),
        ),
    )
    .unwrap();
    let (_up, gateway) = start(&["up", "--own-display"], &config, "gateway       ");
    fake.push(tool_call(
        "t1",
        "set_task_status",
        json!({"status": "completed", "message": "the report is written"}),
    ));
    let http = reqwest::Client::new();
    let caps: Value = http
        .get(format!("{gateway}/capabilities"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(caps["intents"]["task"].is_object(), "{caps}");
    let plan: Value = http
        .post(format!("{gateway}/plan"))
        .bearer_auth(TOKEN)
        .json(&json!({"intent": "task", "args": {"prompt": "write the weekly report"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plan["est_risk"], "high", "{plan}");
    assert!(fake.seen().is_empty(), "nothing runs before approval");
    let done: Value = http
        .post(format!("{gateway}/execute"))
        .bearer_auth(TOKEN)
        .json(&json!({"task_id": plan["task_id"], "confirm_token": plan["confirm_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done.to_string().contains("the report is written"), "{done}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body.to_string().contains("write the weekly report"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_falls_back_to_the_next_in_the_chain() {
    let Some(s) = Setup::start(
        r#"fallback = ["second"]
[[agent.models]]
id = "second"
provider = "local"
name = "second-wire"
max_long_edge = 1280"#,
    )
    .await
    else {
        return;
    };
    // The task's own model answers garbage, then overload; the fallback answers properly.
    s.fake.push(Reply::raw(200, "{\"unexpected\": true"));
    s.fake.push(tool_call(
        "f1",
        "set_task_status",
        json!({"status": "completed", "message": "done by the fallback"}),
    ));
    let (_, t) = s.post("/tasks", json!({"description": "try twice"})).await;
    let done = s.wait_done(t["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let seen = s.fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body["model"], "fake-vision");
    assert_eq!(seen[1].body["model"], "second-wire");
    // The failure is on the task's stream, with its reason.
    let events = read_events(&s, t["id"].as_str().unwrap(), None).await;
    let err = events
        .iter()
        .find(|e| e["kind"] == "model_error")
        .expect("a model_error event");
    assert!(
        err["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{err}"
    );
    // Usage is booked to the model that answered.
    let by_model = &done["usage_by_model"];
    assert_eq!(by_model[0]["model"], "second", "{by_model}");
}

/// A Responses API answer as OpenAI's reference shows it.
fn responses(id: &str, output: Value) -> Reply {
    Reply::json(json!({
        "id": id, "object": "response", "created_at": 1_741_446_088, "status": "completed",
        "error": null, "incomplete_details": null, "model": "computer-use-preview-2025-03-11",
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "store": true, "truncation": "auto",
        "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 1020}
    }))
}

/// A Responses `computer_call` clicking at (`x`, `y`) that the provider flags with one
/// safety check; ids `resp_N`, `cu_N`, `call_N`, `sc_N`.
fn flagged_click(n: u32, x: i32, y: i32, code: &str, message: &str) -> Reply {
    responses(
        &format!("resp_{n}"),
        json!([{
            "type": "computer_call", "id": format!("cu_{n}"), "call_id": format!("call_{n}"),
            "action": {"type": "click", "button": "left", "x": x, "y": y},
            "pending_safety_checks": [{"id": format!("sc_{n}"), "code": code, "message": message}],
            "status": "completed"
        }]),
    )
}

/// A Responses `function_call` of `set_task_status` with `status` and `message`.
fn status_call(response: &str, item: &str, call: &str, status: &str, message: &str) -> Reply {
    let arguments = json!({"status": status, "message": message}).to_string();
    responses(
        response,
        json!([{
            "type": "function_call", "id": item, "call_id": call, "name": "set_task_status",
            "arguments": arguments, "status": "completed"
        }]),
    )
}

/// The `computer_call_output` item a Responses request sends back.
fn computer_output(body: &Value) -> &Value {
    body["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "computer_call_output")
        .expect("the click's result goes back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_safety_check_waits_for_a_persons_approval() {
    use std::os::unix::fs::PermissionsExt as _;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("openai.key");
    std::fs::write(&key, "sk-test-not-real").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let Some(s) = Setup::start(&format!(
        r#"[agent.providers.oa]
kind = "openai"
base_url = "{{FAKE}}"
api_key_file = "{}"
[[agent.models]]
id = "cua"
provider = "oa"
name = "computer-use-preview"
max_long_edge = 1280"#,
        key.display()
    ))
    .await
    else {
        return;
    };
    let (ix, iy) = s.image_point(300, 250).await;
    s.fake.push(flagged_click(
        1,
        ix,
        iy,
        "malicious_instructions",
        "The page may contain instructions you did not give.",
    ));
    let (st, t) = s
        .post("/tasks", json!({"description": "click it", "model": "cua"}))
        .await;
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    // The agent stops and asks; nothing is acknowledged on our own.
    let waiting = s.wait_done(&id, 30).await;
    assert_eq!(waiting["status"], "NEEDS_HELP", "{waiting}");
    let err = waiting["error"].as_str().unwrap();
    assert!(
        err.contains("instructions you did not give") && err.contains("acknowledge_safety_checks"),
        "{err}"
    );
    assert_eq!(s.fake.seen().len(), 1);
    assert_eq!(
        s.fake.seen()[0].header("authorization"),
        Some("Bearer sk-test-not-real")
    );

    // A person approves: the click runs and the provider hears the acknowledgement.
    s.fake.push(status_call(
        "resp_2",
        "fc_1",
        "call_2",
        "completed",
        "clicked after approval",
    ));
    let (st, t) = s
        .post(
            &format!("/tasks/{id}/resume"),
            json!({"acknowledge_safety_checks": true}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let done = s.wait_done(&id, 30).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let second = &s.fake.seen()[1].body;
    let output = computer_output(second);
    assert_eq!(output["call_id"], "call_1");
    assert_eq!(
        output["acknowledged_safety_checks"][0]["id"], "sc_1",
        "{output}"
    );

    // Refused: resuming without the acknowledgement tells the model, and nothing runs.
    s.fake.push(flagged_click(
        3,
        ix,
        iy,
        "sensitive_domain",
        "This looks like a banking site.",
    ));
    let (_, t) = s
        .post(
            "/tasks",
            json!({"description": "click again", "model": "cua"}),
        )
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_done(&id, 30).await["status"], "NEEDS_HELP");
    s.fake.push(status_call(
        "resp_4",
        "fc_4",
        "call_4",
        "needs_help",
        "not allowed",
    ));
    let (st, _) = s.post(&format!("/tasks/{id}/resume"), json!({})).await;
    assert_eq!(st, 200);
    let done = s.wait_done(&id, 30).await;
    assert_eq!(done["error"], "not allowed", "{done}");
    let last = s.fake.last().body.to_string();
    assert!(
        last.contains("a person did not approve the safety check"),
        "{last}"
    );
    assert!(
        !last.contains("\"acknowledged_safety_checks\":[{"),
        "{last}"
    );
}

/// A key besides the main token, with the `default` profile.
const OTHER_TOKEN: &str = "other-key-token-0123456789";
/// sha256 of [`OTHER_TOKEN`], as the config stores it.
const OTHER_TOKEN_SHA256: &str = "bb4b89a73a910a125b7d7d4790caa8da1b1824c732060eb3f954257b1d5a469c";

/// A JSON request to the gateway; gives the status and the body.
async fn gateway_call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_flagged_step_comes_back_through_the_gateway_as_a_plan_to_approve() {
    use reqwest::Method;
    use std::os::unix::fs::PermissionsExt as _;
    if !have("Xvfb") {
        eprintln!("skipping: Xvfb is not available (apt-get install xvfb)");
        return;
    }
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai.key");
    std::fs::write(&key, "sk-test-not-real").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("bytebot.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[desktop]
listen = "127.0.0.1:0"
vnc = false
[gateway]
listen = "127.0.0.1:0"
[[gateway.keys]]
id = "other"
profile = "default"
token_sha256 = "{OTHER_TOKEN_SHA256}"
[agent]
listen = "127.0.0.1:0"
[agent.providers.oa]
kind = "openai"
base_url = "{base}"
api_key_file = "{key}"
[[agent.models]]
id = "cua"
provider = "oa"
name = "computer-use-preview"
max_long_edge = 1280
"#,
            data = dir.path().display(),
            base = fake.url(),
            key = key.display(),
        ),
    )
    .unwrap();
    let (_up, gateway) = start(&["up", "--own-display"], &config, "gateway       ");
    let flagged = |n: u32| {
        flagged_click(
            n,
            5,
            5,
            "malicious_instructions",
            "The page may contain instructions you did not give.",
        )
    };
    let http = reqwest::Client::new();
    let call = |method: Method, path: &str, token: &'static str, body: Option<Value>| {
        gateway_call(&http, method, format!("{gateway}{path}"), token, body)
    };
    // Plans and executes a `task`; gives the execute answer.
    let run_task = async |prompt: &str| {
        let (st, plan) = call(
            Method::POST,
            "/plan",
            TOKEN,
            Some(json!({"intent": "task", "args": {"prompt": prompt, "model": "cua"}})),
        )
        .await;
        assert_eq!(st, 200, "{plan}");
        let (st, done) = call(
            Method::POST,
            "/execute",
            TOKEN,
            Some(json!({"task_id": plan["task_id"], "confirm_token": plan["confirm_token"]})),
        )
        .await;
        assert_eq!(st, 200, "{done}");
        (plan["task_id"].as_str().unwrap().to_string(), done)
    };

    let (_, caps) = call(Method::GET, "/capabilities", TOKEN, None).await;
    assert!(caps["intents"]["agent_step"].is_object(), "{caps}");

    // The provider flags the agent's first click: the run stops and hands back a plan.
    fake.push(flagged(1));
    let (first_id, done) = run_task("tidy the desktop").await;
    assert_eq!(done["status"], "needs_approval", "{done}");
    let next = &done["next_plan"];
    assert_eq!(next["est_risk"], "high", "{next}");
    let token = next["confirm_token"]
        .as_str()
        .expect("the live answer carries the token");
    let step = &next["plan"][0];
    assert_eq!(step["action"]["op"], "agent_step", "{step}");
    assert!(
        step["summary"]
            .as_str()
            .unwrap()
            .contains("instructions you did not give"),
        "{step}"
    );
    let agent_task = step["action"]["agent_task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let call_id = step["action"]["call_id"].as_str().unwrap().to_string();
    assert_eq!(call_id, "call_1");
    assert_eq!(fake.seen().len(), 1, "the flagged click was not run");
    // The token is not kept anywhere but in that answer.
    let (_, view) = call(Method::GET, &format!("/tasks/{first_id}"), TOKEN, None).await;
    assert_eq!(view["state"], "needs_approval", "{view}");
    assert_eq!(view["next_plan"]["task_id"], next["task_id"], "{view}");
    assert!(!view.to_string().contains(token), "{view}");

    // Another key may neither plan nor execute the approval of this key's agent task.
    let step_args = json!({"agent_task_id": agent_task, "call_id": call_id});
    let (st, refused) = call(
        Method::POST,
        "/plan",
        OTHER_TOKEN,
        Some(json!({"intent": "agent_step", "args": step_args})),
    )
    .await;
    assert_eq!(st, 422, "{refused}");
    assert_eq!(refused["error"]["field"], "args.agent_task_id", "{refused}");
    let (st, refused) = call(
        Method::POST,
        "/execute",
        OTHER_TOKEN,
        Some(json!({"task_id": next["task_id"], "confirm_token": token})),
    )
    .await;
    assert_eq!(st, 403, "{refused}");
    // A plan for a call the agent is not waiting on is refused with the field.
    let (st, refused) = call(
        Method::POST,
        "/plan",
        TOKEN,
        Some(json!({"intent": "agent_step", "args": {"agent_task_id": agent_task, "call_id": "call_9"}})),
    )
    .await;
    assert_eq!(st, 422, "{refused}");
    assert_eq!(refused["error"]["field"], "args.call_id", "{refused}");

    // Approved: the click runs, the provider hears the acknowledgement, the agent finishes.
    fake.push(status_call(
        "resp_2",
        "fc_2",
        "call_2",
        "completed",
        "tidied after approval",
    ));
    let (st, done) = call(
        Method::POST,
        "/execute",
        TOKEN,
        Some(json!({"task_id": next["task_id"], "confirm_token": token})),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done.to_string().contains("tidied after approval"), "{done}");
    let seen = fake.seen();
    let output = computer_output(&seen[1].body);
    assert_eq!(output["call_id"], "call_1");
    assert_eq!(
        output["acknowledged_safety_checks"][0]["id"], "sc_1",
        "{output}"
    );
    // The approval works once.
    let (st, again) = call(
        Method::POST,
        "/execute",
        TOKEN,
        Some(json!({"task_id": next["task_id"], "confirm_token": token})),
    )
    .await;
    assert_eq!(st, 409, "{again}");

    // Refused: cancelling the follow-up cancels the agent task, and nothing of it runs.
    fake.push(flagged(3));
    let (_, done) = run_task("tidy it again").await;
    assert_eq!(done["status"], "needs_approval", "{done}");
    let next = &done["next_plan"];
    let agent_task = next["plan"][0]["action"]["agent_task_id"].clone();
    let (st, cancelled) = call(
        Method::POST,
        &format!("/tasks/{}/cancel", next["task_id"].as_str().unwrap()),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (st, refused) = call(
        Method::POST,
        "/plan",
        TOKEN,
        Some(json!({"intent": "agent_step", "args": {"agent_task_id": agent_task, "call_id": "call_3"}})),
    )
    .await;
    assert_eq!(st, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CANCELLED"),
        "{refused}"
    );
    assert_eq!(fake.seen().len(), 3, "no model call after the refusal");
}

/// A `multipart/form-data` body of text `fields` and `(part, file name, content type, bytes)`
/// files, and its content type.
fn form(fields: &[(&str, &str)], files: &[(&str, &str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "bytebot-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (part, file, media, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{file}\"\r\nContent-Type: {media}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_uploaded_with_a_task_reach_the_desktop_and_the_model_hears_where() {
    let Some(s) = Setup::start("").await else {
        return;
    };
    let post_form = async |fields: &[(&str, &str)], files: &[(&str, &str, &str, &[u8])]| {
        let (content_type, body) = form(fields, files);
        let r = s
            .http
            .post(format!("{}/tasks", s.agent_url))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let notes = "first line\nzweite Zeile ✓\n".as_bytes();
    let png: &[u8] = &[0x89, b'P', b'N', b'G', 0, 1, 2, 3];
    s.fake.push(tool_call(
        "u1",
        "set_task_status",
        json!({"status": "completed", "message": "read them"}),
    ));
    let (st, t) = post_form(
        &[
            ("description", "summarise the notes"),
            (
                "model",
                r#"{"provider": "local", "name": "fake", "title": "Fake"}"#,
            ),
            ("priority", "HIGH"),
        ],
        &[
            ("files", "notes.txt", "text/plain", notes),
            // A path in the name is cut to its last part.
            ("files", "../../etc/pic.png", "image/png", png),
        ],
    )
    .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["priority"], "HIGH", "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let done = s.wait_done(&id, 30).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let names: Vec<&str> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt", "pic.png"], "{done}");
    // The bytes are in the desktop's workspace, and the model was told where.
    let folder = s.dir.path().join("workspace").join("uploads").join(&id);
    assert_eq!(std::fs::read(folder.join("notes.txt")).unwrap(), notes);
    assert_eq!(std::fs::read(folder.join("pic.png")).unwrap(), png);
    let first = s.fake.seen()[0].body.to_string();
    assert!(
        first.contains(&format!(
            "workspace folder uploads/{id}/: notes.txt ({} bytes, text/plain)",
            notes.len()
        )),
        "{first}"
    );
    // A file comes back as uploaded, as a download.
    let file_id = done["files"][0]["id"].as_str().unwrap();
    let r = s
        .http
        .get(format!("{}/tasks/{id}/files/{file_id}", s.agent_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"),
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), notes);
    let r = s
        .http
        .get(format!("{}/tasks/{id}/files/nope", s.agent_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Bad uploads are refused with the part at fault, and create nothing.
    let before = s.get("/tasks").await["tasks"]
        .as_array()
        .map_or(0, Vec::len);
    let (st, e) = post_form(
        &[("description", "x")],
        &[("files", "..", "text/plain", b"x")],
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["error"]["field"], "files", "{e}");
    let many: Vec<(&str, &str, &str, &[u8])> = (0..21)
        .map(|_| ("files", "a.txt", "text/plain", &b"a"[..]))
        .collect();
    let (st, e) = post_form(&[("description", "x")], &many).await;
    assert_eq!(st, 422, "{e}");
    let (st, e) = post_form(
        &[("priority", "HIGH")],
        &[("files", "a.txt", "text/plain", b"a")],
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("description"),
        "{e}"
    );
    let (st, e) = s
        .post(
            "/tasks",
            json!({"description": "x".repeat(2 * 1024 * 1024)}),
        )
        .await;
    assert_eq!(st, 413, "{e}");
    let after = s.get("/tasks").await["tasks"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(before, after, "a refused upload created a task");
}
