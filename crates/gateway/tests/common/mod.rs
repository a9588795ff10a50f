//! Shared test support: a real desktop daemon on its own Xvfb and a real
//! gateway in front of it, both in-process on loopback ports, each test with
//! its own temp folder (store, data, workspace, secrets).
//!
//! Signing is done here with its own HMAC code, not the crate's `sign_hex`,
//! so a mistake in the gateway's signing string cannot hide in both places.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytebot_desktop::DesktopConfig;
use bytebot_desktop::config::AppSpec;
use bytebot_gateway::policy::Policy;
use bytebot_gateway::{Gateway, GatewayConfig, KeyConfig, Paths};
use bytebot_store::Store;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Hang guard for anything a test waits on; far above what any step needs.
pub const GUARD: Duration = Duration::from_secs(20);

/// The key id of the main token (profile `admin`, an approver).
pub const LOCAL: &str = "local";

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The bottle's init for tests: this crate's own init binary (cargo builds it for the
/// integration tests; another package's binary, like bytebot-bottle's, is not available here).
pub fn bottle_init() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_bytebot-gateway-bottle-init").into()]
}

/// A bottle keeping its files in `dir`, with the test init.
pub fn bottle(dir: &std::path::Path) -> bytebot_gateway::bottle::Bottle {
    bytebot_gateway::bottle::Bottle::new(bottle_init(), dir.to_path_buf())
}

/// Prints why a test is skipped; returns true when runs cannot execute in the bottle here
/// (no bubblewrap, or no user namespaces).
pub async fn skip_without_bottle() -> bool {
    let b = bottle(&std::env::temp_dir().join("bytebot-gateway-test-unused"));
    match b.ready().await {
        Ok(_) => false,
        Err(e) => {
            eprintln!("skipping: the bottle is not available ({e})");
            true
        }
    }
}

/// Prints why a test is skipped; returns true when `program` is missing.
pub fn skip_without(program: &str, package: &str) -> bool {
    if have(program) {
        return false;
    }
    eprintln!("skipping: {program} is not available (apt-get install {package})");
    true
}

/// Now, in unix seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A random nonce in the allowed alphabet.
pub fn fresh_nonce() -> String {
    format!("n-{}", uuid::Uuid::new_v4().simple())
}

/// Hex HMAC-SHA256, computed here independently of the gateway crate.
pub fn hmac_hex(secret: &[u8], message: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `X-BYTEBOT-*` headers of a v1 signature with a given timestamp and nonce.
pub fn signed_at(
    key_id: &str,
    secret: &str,
    ts: i64,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> HeaderMap {
    let mut message = format!("v1\n{ts}\n{nonce}\n{method}\n{path_and_query}\n").into_bytes();
    message.extend_from_slice(body);
    let sig = hmac_hex(secret.as_bytes(), &message);
    let mut h = HeaderMap::new();
    h.insert("x-bytebot-key-id", HeaderValue::from_str(key_id).unwrap());
    h.insert(
        "x-bytebot-timestamp",
        HeaderValue::from_str(&ts.to_string()).unwrap(),
    );
    h.insert("x-bytebot-nonce", HeaderValue::from_str(nonce).unwrap());
    h.insert("x-bytebot-sig", HeaderValue::from_str(&sig).unwrap());
    h
}

/// The `X-BYTEBOT-*` headers of a fresh v1 signature (now, a new nonce).
pub fn signed(
    key_id: &str,
    secret: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> HeaderMap {
    signed_at(
        key_id,
        secret,
        now_s(),
        &fresh_nonce(),
        method,
        path_and_query,
        body,
    )
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// A key the gateway is configured with.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Key id.
    pub id: String,
    /// Policy profile.
    pub profile: String,
    /// Whether the draft's body-only signature is accepted.
    pub legacy: bool,
}

/// A key with both a bearer token and an HMAC secret.
pub fn key(id: &str, profile: &str) -> KeySpec {
    KeySpec {
        id: id.into(),
        profile: profile.into(),
        legacy: false,
    }
}

impl KeySpec {
    /// Turns on `legacy_body_signature`.
    pub fn legacy(mut self) -> Self {
        self.legacy = true;
        self
    }
}

/// A configured key's credentials, as a client holds them.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// Key id.
    pub id: String,
    /// Bearer token (the config holds only its SHA-256).
    pub token: String,
    /// HMAC secret (the config names the 0600 file holding it).
    pub secret: String,
}

/// One profile as most tests want it; `approver` says whether it may approve.
pub fn profile(approver: bool) -> Value {
    json!({
        "intents": ["screenshot", "open_app", "browse", "edit_file", "run"],
        "apps": ["xmessage"],
        "browse": { "allow": ["example.com", "*.example.com"], "deny": ["secret.example.com"] },
        "files": { "read": ["**"], "write": ["notes/**"], "max_bytes": 65536 },
        "run": { "programs": ["echo", "sleep", "cat"], "timeout_s": 30, "max_timeout_s": 60 },
        "auto_approve": [],
        "rate_limit": { "per_minute": 6000, "burst": 1000 },
        "approver": approver
    })
}

/// Profiles `default` (may not approve), `approver` and `admin` (both may).
pub fn standard_policy() -> Value {
    json!({
        "profiles": {
            "default": profile(false),
            "approver": profile(true),
            "admin": profile(true),
        }
    })
}

type GatewayTweak = Box<dyn FnOnce(&mut GatewayConfig)>;
type DesktopTweak = Box<dyn FnOnce(&mut DesktopConfig) + Send>;

/// How to start a [`TestGateway`].
pub struct Builder {
    policy: Value,
    keys: Vec<KeySpec>,
    gateway: Vec<GatewayTweak>,
    desktop: Vec<DesktopTweak>,
}

impl Builder {
    /// The policy (JSON, checked by `Policy::from_json`).
    pub fn policy(mut self, policy: Value) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the keys (the main token is always there as `local`).
    pub fn keys(mut self, keys: Vec<KeySpec>) -> Self {
        self.keys = keys;
        self
    }

    /// Changes the gateway config before start.
    pub fn gateway(mut self, f: impl FnOnce(&mut GatewayConfig) + 'static) -> Self {
        self.gateway.push(Box::new(f));
        self
    }

    /// Changes the desktop config before start.
    pub fn desktop(mut self, f: impl FnOnce(&mut DesktopConfig) + Send + 'static) -> Self {
        self.desktop.push(Box::new(f));
        self
    }

    /// Starts the desktop and the gateway; `None` (after printing why) when
    /// Xvfb is missing.
    pub async fn start(self) -> Option<TestGateway> {
        if skip_without("Xvfb", "xvfb") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        let data_dir = dir.path().join("data");
        let secrets = dir.path().join("secrets");
        for d in [&workspace, &data_dir, &secrets] {
            std::fs::create_dir_all(d).unwrap();
        }

        // The desktop, on its own Xvfb, sharing the workspace with the gateway.
        let mut dconfig = DesktopConfig {
            vnc: false,
            ..DesktopConfig::default()
        };
        if !have("openbox") {
            dconfig.window_manager.clear();
        }
        dconfig.applications.insert(
            "xmessage".into(),
            AppSpec {
                command: vec!["xmessage".into(), "opened by the gateway test".into()],
                window_class: Some("xmessage".into()),
            },
        );
        // A "browser" that shows the URL it is given in a window.
        dconfig.applications.insert(
            "browser".into(),
            AppSpec {
                command: vec!["xmessage".into()],
                window_class: Some("xmessage".into()),
            },
        );
        for f in self.desktop {
            f(&mut dconfig);
        }
        let desktop_token = format!("desktop-{}", uuid::Uuid::new_v4().simple());
        let desktop = tokio::task::spawn_blocking({
            let (c, t, w) = (dconfig, desktop_token.clone(), workspace.clone());
            move || bytebot_desktop::Server::start(c, t, w)
        })
        .await
        .unwrap()
        .expect("the desktop starts");
        let desktop = Arc::new(desktop);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let desktop_url = format!("http://{}", listener.local_addr().unwrap());
        let (desktop_shutdown, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn({
            let d = Arc::clone(&desktop);
            async move {
                d.serve(listener, async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }
        });
        let display = desktop.display().to_string();

        // Keys: a bearer token (hashed in the config) and an HMAC secret in a 0600 file.
        let mut keys = BTreeMap::new();
        let mut key_configs = Vec::new();
        for k in &self.keys {
            let token = format!("tok_{}_{}", k.id, uuid::Uuid::new_v4().simple());
            let secret = format!("sec_{}_{}", k.id, uuid::Uuid::new_v4().simple());
            let secret_file = secrets.join(format!("{}.secret", k.id));
            write_private(&secret_file, format!("{secret}\n").as_bytes());
            key_configs.push(KeyConfig {
                id: k.id.clone(),
                profile: k.profile.clone(),
                token_sha256: Some(sha256_hex(token.as_bytes())),
                secret_env: None,
                secret_file: Some(secret_file),
                legacy_body_signature: k.legacy,
            });
            keys.insert(
                k.id.clone(),
                TestKey {
                    id: k.id.clone(),
                    token,
                    secret,
                },
            );
        }
        let main_token = format!("main-{}", uuid::Uuid::new_v4().simple());
        keys.insert(
            LOCAL.into(),
            TestKey {
                id: LOCAL.into(),
                token: main_token.clone(),
                secret: main_token.clone(),
            },
        );
        let mut config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            desktop_url: desktop_url.clone(),
            desktop_token: Some(desktop_token.clone()),
            local_profile: "admin".into(),
            browser_app: "browser".into(),
            keys: key_configs,
            bottle_init: bottle_init(),
            ..GatewayConfig::default()
        };
        for f in self.gateway {
            f(&mut config);
        }
        let problems = config.validate();
        assert!(problems.is_empty(), "test config is invalid: {problems:?}");

        let mut t = TestGateway {
            url: String::new(),
            gw: None,
            server: None,
            config,
            policy_json: serde_json::to_string_pretty(&self.policy).unwrap(),
            main_token,
            keys,
            store_path: dir.path().join("gateway.db"),
            data_dir,
            workspace,
            desktop_url,
            desktop_token,
            display,
            http: reqwest::Client::builder().timeout(GUARD).build().unwrap(),
            _desktop: desktop,
            _desktop_shutdown: desktop_shutdown,
            _dir: dir,
        };
        t.start_gateway().await;
        Some(t)
    }
}

/// Writes a file readable only by its owner.
fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (panics with the text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a 200 and returns the JSON body.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text());
        self.json()
    }

    /// Asserts an error answer `{"error": {"code", "message", …}}` with this
    /// status and code and a message that says something; returns `error`.
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}: {}",
            self.text()
        );
        let body = self.json();
        let err = body
            .get("error")
            .unwrap_or_else(|| panic!("no \"error\" object: {body}"))
            .clone();
        assert_eq!(err["code"], code, "{body}");
        let message = err["message"].as_str().unwrap_or_default();
        // A clear message is a sentence, not a code or an empty string.
        assert!(
            message.len() >= 20 && message.contains(' '),
            "message is not clear: {message:?}"
        );
        err
    }

    /// The error message (after [`Resp::error`]).
    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
    }
}

/// A desktop and a gateway for one test; stopped when dropped.
pub struct TestGateway {
    /// `http://127.0.0.1:PORT` of the gateway (changes on restart).
    pub url: String,
    gw: Option<Arc<Gateway>>,
    server: Option<bytebot_gateway::Server>,
    /// The gateway's config.
    pub config: GatewayConfig,
    policy_json: String,
    /// The main token (key `local`, profile `admin`).
    pub main_token: String,
    /// Credentials by key id (`local` included).
    pub keys: BTreeMap<String, TestKey>,
    /// The SQLite file of the store.
    pub store_path: PathBuf,
    /// The gateway's data folder.
    pub data_dir: PathBuf,
    /// The workspace both share.
    pub workspace: PathBuf,
    /// `http://127.0.0.1:PORT` of the desktop.
    pub desktop_url: String,
    /// The desktop's token.
    pub desktop_token: String,
    /// The desktop's X display.
    pub display: String,
    /// A plain HTTP client (no credentials).
    pub http: reqwest::Client,
    _desktop: Arc<bytebot_desktop::Server>,
    _desktop_shutdown: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// A builder with the standard policy and keys `bot`, `other` (profile
    /// `default`) and `person` (profile `approver`).
    pub fn builder() -> Builder {
        Builder {
            policy: standard_policy(),
            keys: vec![
                key("bot", "default"),
                key("other", "default"),
                key("person", "approver"),
            ],
            gateway: Vec::new(),
            desktop: Vec::new(),
        }
    }

    /// Starts with the defaults of [`TestGateway::builder`].
    pub async fn start() -> Option<Self> {
        Self::builder().start().await
    }

    /// The running gateway.
    pub fn gw(&self) -> &Arc<Gateway> {
        self.gw.as_ref().expect("the gateway is running")
    }

    /// The gateway's store.
    pub fn store(&self) -> &Store {
        &self.gw().store
    }

    async fn start_gateway(&mut self) {
        let store = Store::open(&bytebot_store::sqlite_url(&self.store_path))
            .await
            .expect("the store opens");
        let policy = Policy::from_json(&self.policy_json, "test-policy.json")
            .unwrap_or_else(|e| panic!("test policy: {e}"));
        let gw = Gateway::new(
            self.config.clone(),
            policy,
            &self.main_token,
            store,
            Paths {
                data_dir: self.data_dir.clone(),
                workspace: self.workspace.clone(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("the gateway starts: {e}"));
        let server = bytebot_gateway::Server::start(Arc::clone(&gw), self.config.listen)
            .await
            .unwrap();
        self.url = format!("http://{}", server.addr);
        self.gw = Some(gw);
        self.server = Some(server);
    }

    /// Stops only the gateway and starts a new one on the same store file,
    /// data folder and config (the desktop keeps running).
    pub async fn restart_gateway(&mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(GUARD, server.stop())
                .await
                .expect("the gateway stops")
                .unwrap();
        }
        if let Some(gw) = self.gw.take() {
            gw.store.close().await;
        }
        self.start_gateway().await;
    }

    /// The credentials of a key.
    pub fn key(&self, id: &str) -> &TestKey {
        self.keys
            .get(id)
            .unwrap_or_else(|| panic!("no test key {id}"))
    }

    /// Sends a request with exactly these headers and body.
    pub async fn send(&self, method: &str, path: &str, headers: HeaderMap, body: Vec<u8>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .headers(headers);
        if !body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends with the key's bearer token.
    pub async fn bearer(
        &self,
        key_id: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, path, bearer(&self.key(key_id).token), body)
            .await
    }

    /// Sends signed with the key's HMAC secret (fresh timestamp and nonce).
    pub async fn signed(
        &self,
        key_id: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let k = self.key(key_id);
        let headers = signed(&k.id, &k.secret, method, path, &body);
        self.send(method, path, headers, body).await
    }

    /// Plans with a bearer token; asserts 200 and returns the answer.
    pub async fn plan(&self, key_id: &str, intent: &str, args: Value) -> Value {
        self.bearer(
            key_id,
            "POST",
            "/plan",
            Some(&json!({"intent": intent, "args": args})),
        )
        .await
        .ok()
    }

    /// Executes a task with its confirm token (bearer).
    pub async fn execute(&self, key_id: &str, plan: &Value) -> Resp {
        let body = json!({"task_id": plan["task_id"], "confirm_token": plan["confirm_token"]});
        self.bearer(key_id, "POST", "/execute", Some(&body)).await
    }

    /// A task as `GET /tasks/{id}` shows it to the main key (an approver).
    pub async fn task(&self, task_id: &str) -> Value {
        self.bearer(LOCAL, "GET", &format!("/tasks/{task_id}"), None)
            .await
            .ok()
    }

    /// Asserts that a task never ran: `GET /tasks/{id}` shows it `planned`
    /// (or `expired`, for a plan past its token's life) with no
    /// observations and no artifacts, its token is unused in the store, and
    /// its only event is `plan.created`.
    pub async fn assert_not_executed(&self, task_id: &str) {
        let view = self.task(task_id).await;
        let state = view["state"].as_str().unwrap();
        assert!(
            state == "planned" || state == "expired",
            "task {task_id} is {state}, expected it untouched: {view}"
        );
        assert_eq!(view["observations"], json!([]), "{view}");
        assert_eq!(view["artifacts"], json!([]), "{view}");
        let row = self.store().get_task(task_id).await.unwrap().unwrap();
        assert_eq!(row.state, "planned", "{row:?}");
        assert!(row.token_used_at.is_none(), "token was spent: {row:?}");
        let kinds: Vec<String> = self
            .store()
            .events_after(0, Some(task_id), None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["plan.created"],
            "task {task_id} has events beyond its plan"
        );
    }

    /// An artifact link (path and query) fetched without any credentials.
    pub async fn download(&self, link: &str) -> Resp {
        self.send("GET", link, HeaderMap::new(), Vec::new()).await
    }

    /// A workspace file's path.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.workspace.join(rel)
    }

    /// A workspace file's text, or `None` when it does not exist.
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.file(rel)).ok()
    }

    /// Writes a workspace file (creating folders).
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.file(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The desktop's windows, as its own `/v1/windows` lists them.
    pub async fn windows(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/v1/windows", self.desktop_url))
            .bearer_auth(&self.desktop_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["windows"].as_array().unwrap().clone()
    }

    /// Whether a window whose `WM_CLASS` is `class` (any case) is on screen.
    pub async fn has_window_of_class(&self, class: &str) -> bool {
        self.windows().await.iter().any(|w| {
            w["class"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case(class)))
            })
        })
    }

    /// Files in the gateway's artifact folder.
    pub fn artifact_files(&self) -> usize {
        std::fs::read_dir(self.data_dir.join("artifacts"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Opens `GET path` as Server-Sent Events with the key's bearer token.
    pub async fn sse(&self, key_id: &str, path: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key(key_id).token)
            // The stream stays open; the per-read guard bounds each wait instead.
            .timeout(Duration::from_secs(600));
        if let Some(id) = last_event_id {
            req = req.header(HeaderName::from_static("last-event-id"), id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Sse {
            resp,
            buf: Vec::new(),
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id:`.
    pub id: i64,
    /// Its `event:`.
    pub kind: String,
    /// Its `data:` as JSON.
    pub data: Value,
}

/// A Server-Sent Events reader over a streaming response.
pub struct Sse {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Sse {
    /// The next event; panics when none comes within [`GUARD`].
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(GUARD)
            .await
            .expect("an event arrives before the hang guard")
    }

    /// The next event, or `None` when none comes within `wait` or the
    /// stream ends.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end.1).collect();
                let block = String::from_utf8_lossy(&block[..end.0]).into_owned();
                if let Some(e) = parse_block(&block) {
                    return Some(e);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

/// The end of the first event block: (end of its text, end including the blank line).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
    }
    None
}

/// An event from one block; `None` for comments (keep-alives).
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut kind, mut data) = (None, String::from("message"), String::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse::<i64>().expect("numeric event id")),
            "event" => kind = value.to_string(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    if data.is_empty() && id.is_none() {
        return None;
    }
    Some(SseEvent {
        id: id.expect("every event has an id"),
        kind,
        data: serde_json::from_str(&data).expect("event data is JSON"),
    })
}
