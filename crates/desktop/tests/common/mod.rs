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
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
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
        let mut config = DesktopConfig { vnc: false, ..DesktopConfig::default() };
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
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
        let display = server.display().to_string();
        Some(Self { url, token, display, workspace, client, _dir: dir, _shutdown: tx, server })
    }

    /// POSTs a `/computer-use` action; returns status and body text.
    pub async fn act(&self, body: serde_json::Value) -> (u16, String) {
        let r = self.client.post(format!("{}/computer-use", self.url)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A command with `DISPLAY` set to this desktop.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display);
        c
    }
}
