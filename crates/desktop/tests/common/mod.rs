//! Shared test support: a real Xvfb with a real daemon on a loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytebot_desktop::{DesktopConfig, Server};
use std::path::PathBuf;
use std::process::Command;

/// A daemon on its own Xvfb, stopped on drop.
pub struct TestDesktop {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// The X display, e.g. `:12`.
    pub display: String,
    /// The workspace folder.
    pub workspace: PathBuf,
    /// An authenticated HTTP client.
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    server: std::sync::Arc<Server>,
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Prints why a test is skipped; returns true when `program` is missing.
pub fn skip_without(program: &str, package: &str) -> bool {
    if have(program) {
        return false;
    }
    eprintln!("skipping: {program} is not available (apt-get install {package})");
    true
}

impl TestDesktop {
    /// Starts Xvfb (1280×960) with openbox and the daemon; `None` (after
    /// printing why) when Xvfb is missing.
    pub async fn start() -> Option<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start) with a config tweak.
    pub async fn start_with(tweak: impl FnOnce(&mut DesktopConfig)) -> Option<Self> {
        if skip_without("Xvfb", "xvfb") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        let mut config = DesktopConfig {
            vnc: false,
            ..DesktopConfig::default()
        };
        if !have("openbox") {
            config.window_manager.clear();
        }
        tweak(&mut config);
        let token = "test-token-0123456789".to_string();
        let server = tokio::task::spawn_blocking({
            let (config, token, workspace) = (config, token.clone(), workspace.clone());
            move || Server::start(config, token, workspace)
        })
        .await
        .unwrap()
        .expect("daemon starts");
        let server = std::sync::Arc::new(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = server.clone();
        tokio::spawn(async move {
            s.serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        let display = server.display().to_string();
        Some(Self {
            url,
            token,
            display,
            workspace,
            client,
            _dir: dir,
            _shutdown: tx,
            server,
        })
    }

    /// POSTs a `/computer-use` action; returns status and body text.
    pub async fn act(&self, body: serde_json::Value) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}/computer-use", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A command with `DISPLAY` set to this desktop.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display);
        c
    }
}

/// The independent test X client (`tests/support/xrecorder.py`): a window
/// with a known pattern that reports every event it receives.
pub struct Recorder {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Everything received so far.
    pub seen: Vec<serde_json::Value>,
    /// Window position and size on the screen.
    pub x: i64,
    /// Top edge.
    pub y: i64,
}

impl Recorder {
    /// Opens the recorder window at (x, y) sized w×h and waits until it shows;
    /// `None` (after printing why) without python3-xlib.
    pub fn open(d: &TestDesktop, x: u32, y: u32, w: u32, h: u32) -> Option<Self> {
        let ok = Command::new("/usr/bin/python3")
            .args(["-c", "import Xlib"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: python3-xlib is not available (apt-get install python3-xlib)");
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/xrecorder.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([x, y, w, h].map(|v| v.to_string()))
            .env("DISPLAY", &d.display)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(v) = serde_json::from_str(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let ready: serde_json::Value = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("recorder window appears");
        assert_eq!(ready["ready"], true, "{ready}");
        Some(Self {
            child,
            lines: rx,
            seen: Vec::new(),
            x: ready["x"].as_i64().unwrap(),
            y: ready["y"].as_i64().unwrap(),
        })
    }

    /// Collects events until `done(all seen)` holds or 5 s pass; returns whether it held.
    pub fn wait_for(&mut self, done: impl Fn(&[serde_json::Value]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => return false,
            }
        }
        true
    }

    /// Events of one type seen so far.
    pub fn of_type(&self, kind: &str) -> Vec<serde_json::Value> {
        self.seen
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// The text typed so far (characters of key presses).
    pub fn text(&self) -> String {
        self.seen
            .iter()
            .filter_map(|e| e["char"].as_str())
            .collect()
    }

    /// Forgets what was seen.
    pub fn clear(&mut self) {
        while self.lines.try_recv().is_ok() {}
        self.seen.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
