//! Live view: x11vnc on loopback behind a random password, and an
//! authenticated WebSocket bridge (`/websockify`) that does the VNC password
//! handshake itself, so browsers (noVNC, served at `/novnc/`) never learn it.
//! See `docs/live-view.md`.

use crate::error::DesktopError;
use crate::http::AppState;
use crate::http::error::ApiError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where `/novnc` sends the browser: noVNC connects to `/websockify` on the
/// same origin by itself, and the token travels in the `bytebot_token` cookie.
pub const NOVNC_PAGE: &str =
    "/novnc/vnc.html?autoconnect=true&reconnect=true&resize=scale&path=websockify";

const RFB_VERSION: &[u8; 12] = b"RFB 003.008\n";
const SECURITY_NONE: u8 = 1;
const SECURITY_VNC_AUTH: u8 = 2;
const START_TIMEOUT: Duration = Duration::from_secs(20);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BROWSER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 4;
const STDERR_TAIL: usize = 12;

/// A running x11vnc on 127.0.0.1, stopped (and its password folder removed)
/// on drop.
pub struct Vnc {
    port: u16,
    password: String,
    child: Child,
    dir: PathBuf,
}

impl std::fmt::Debug for Vnc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vnc")
            .field("port", &self.port)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Vnc {
    /// Starts x11vnc on `display`, listening on a free loopback port with a
    /// fresh random password; returns once it accepts connections.
    pub fn start(display: &str) -> Result<Self, DesktopError> {
        Self::start_program("x11vnc", display)
    }

    /// The loopback TCP port x11vnc listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of x11vnc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_program(program: &str, display: &str) -> Result<Self, DesktopError> {
        let dir = private_dir()?;
        let password = random_password();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match spawn_once(program, display, &dir, &password) {
                Ok(Spawned::Ready(child, port)) => {
                    return Ok(Self {
                        port,
                        password,
                        child,
                        dir,
                    });
                }
                // Another process took the port between our probe and x11vnc's bind: try another.
                Ok(Spawned::Exited(why)) => last_error = why,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(DesktopError::Unavailable(format!(
            "x11vnc did not start on display {display}: {last_error} (set desktop.vnc = false to run without the live view)"
        )))
    }
}

impl Drop for Vnc {
    fn drop(&mut self) {
        terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops x11vnc with SIGTERM first: killed outright it leaves its System V
/// shared-memory segments behind, and enough of those exhaust the host's
/// limit so that no new x11vnc can start. SIGKILL after a short grace.
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

enum Spawned {
    Ready(Child, u16),
    Exited(String),
}

/// One try: pick a free port, write the password file, start x11vnc and wait
/// for its `PORT=` line.
fn spawn_once(
    program: &str,
    display: &str,
    dir: &std::path::Path,
    password: &str,
) -> Result<Spawned, DesktopError> {
    let port = free_port()?;
    let file = dir.join("passwd");
    let _ = std::fs::remove_file(&file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(format!("{password}\n").as_bytes()))
        .map_err(|e| {
            DesktopError::Failed(format!(
                "cannot write the VNC password file {}: {e}",
                file.display()
            ))
        })?;
    // `rm:` makes x11vnc delete the file as soon as it has read it.
    let passwdfile = format!("rm:{}", file.display());
    let mut child = Command::new(program)
        .args(["-display", display, "-localhost", "-noipv6", "-rfbport", &port.to_string()])
        .args(["-passwdfile", &passwdfile, "-forever", "-shared", "-norc", "-noremote"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            DesktopError::Unavailable(format!(
                "cannot start {program} for the live view: {e}; install it (apt-get install x11vnc) or set desktop.vnc = false to run without the live view"
            ))
        })?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = child.stderr.take() {
        let tail = tail.clone();
        std::thread::spawn(move || drain_stderr(stderr, &tail));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line
                    .trim()
                    .strip_prefix("PORT=")
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = tx.send(p);
                }
            }
        });
    }
    let stop = |mut child: Child| terminate(&mut child);
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(announced) if announced == port && accepts(port) => Ok(Spawned::Ready(child, port)),
        Ok(announced) => {
            stop(child);
            Ok(Spawned::Exited(format!(
                "it announced port {announced} instead of {port}, or did not accept connections"
            )))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            stop(child);
            Ok(Spawned::Exited(format!(
                "no listening port after {START_TIMEOUT:?}; {}",
                stderr_tail(&tail)
            )))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            // Give the stderr thread a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(50));
            Ok(Spawned::Exited(format!(
                "it exited ({status}); {}",
                stderr_tail(&tail)
            )))
        }
    }
}

/// Forwards x11vnc's log to tracing and keeps the last lines for errors.
/// (x11vnc never logs the password when it comes from a file.)
fn drain_stderr(stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        tracing::debug!(target: "x11vnc", "{line}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

fn stderr_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let lines = tail
        .lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
        .unwrap_or_default();
    if lines.is_empty() {
        "it printed nothing".into()
    } else {
        format!("its last words: {lines}")
    }
}

fn accepts(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (0..50).any(|_| {
        let ok = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(20));
        }
        ok
    })
}

fn free_port() -> Result<u16, DesktopError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| {
            DesktopError::Failed(format!("cannot find a free loopback port for x11vnc: {e}"))
        })
}

/// A fresh folder only we can enter, for the password file.
fn private_dir() -> Result<PathBuf, DesktopError> {
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..8 {
        let name: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        let dir = base.join(format!("bytebot-vnc-{name}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(DesktopError::Failed(format!(
        "cannot create a private folder for the VNC password in {}: {} (check TMPDIR)",
        base.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Eight random letters and digits: VNC uses at most eight password bytes,
/// and x11vnc's password file gives meaning to some punctuation.
fn random_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}

/// The answer to a VNC-auth challenge: each 8-byte half DES-encrypted with
/// the password (zero-padded to 8 bytes, each byte bit-reversed, as VNC's
/// d3des reads keys least significant bit first).
fn vnc_auth_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&key.into());
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

/// Reads RFB's length-prefixed reason string.
async fn read_reason(tcp: &mut TcpStream) -> String {
    let Ok(len) = tcp.read_u32().await else {
        return "no reason given".into();
    };
    let mut reason = vec![0u8; len.min(4096) as usize];
    match tcp.read_exact(&mut reason).await {
        Ok(_) => String::from_utf8_lossy(&reason).into_owned(),
        Err(_) => "no reason given".into(),
    }
}

/// Connects to x11vnc and authenticates as RFB 3.8 with VNC auth; returns
/// the stream right before ClientInit.
async fn connect_vnc(port: u16, password: &str) -> Result<TcpStream, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot reach x11vnc on port {port}: {e}"))?;
    let io = |e: std::io::Error| format!("x11vnc hung up during the handshake: {e}");
    let mut version = [0u8; 12];
    tcp.read_exact(&mut version).await.map_err(io)?;
    let minor = parse_version(&version).ok_or_else(|| {
        format!(
            "x11vnc sent no RFB version: {:?}",
            String::from_utf8_lossy(&version)
        )
    })?;
    if minor < 8 {
        return Err(format!("x11vnc speaks RFB 3.{minor}; the bridge needs 3.8"));
    }
    tcp.write_all(RFB_VERSION).await.map_err(io)?;
    let count = tcp.read_u8().await.map_err(io)?;
    if count == 0 {
        return Err(format!(
            "x11vnc refused the connection: {}",
            read_reason(&mut tcp).await
        ));
    }
    let mut types = vec![0u8; usize::from(count)];
    tcp.read_exact(&mut types).await.map_err(io)?;
    if !types.contains(&SECURITY_VNC_AUTH) {
        return Err(format!(
            "x11vnc does not offer VNC password auth (offers {types:?})"
        ));
    }
    tcp.write_all(&[SECURITY_VNC_AUTH]).await.map_err(io)?;
    let mut challenge = [0u8; 16];
    tcp.read_exact(&mut challenge).await.map_err(io)?;
    tcp.write_all(&vnc_auth_response(password.as_bytes(), &challenge))
        .await
        .map_err(io)?;
    match tcp.read_u32().await.map_err(io)? {
        0 => Ok(tcp),
        _ => Err(format!(
            "x11vnc rejected the bridge's password: {}",
            read_reason(&mut tcp).await
        )),
    }
}

/// `RFB 003.008\n` → 8 (the minor version), if it is RFB 3.x.
fn parse_version(v: &[u8; 12]) -> Option<u32> {
    let s = std::str::from_utf8(v).ok()?;
    let minor = s.strip_prefix("RFB 003.")?.strip_suffix('\n')?;
    minor.parse().ok()
}

/// Bytes from the browser, regrouped: WebSocket messages may split or join
/// RFB messages anywhere.
struct BrowserIn {
    buf: Vec<u8>,
}

impl BrowserIn {
    async fn read(&mut self, ws: &mut WebSocket, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            match ws.recv().await {
                Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Err("the browser sent text; RFB goes in binary messages".into());
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err("the browser closed the connection".into());
                }
                Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

async fn send(ws: &mut WebSocket, bytes: Vec<u8>) -> Result<(), String> {
    ws.send(Message::Binary(Bytes::from(bytes)))
        .await
        .map_err(|e| format!("WebSocket error: {e}"))
}

/// Our half toward the browser: RFB 3.8 (or what it picks), security None.
async fn greet_browser(ws: &mut WebSocket, input: &mut BrowserIn) -> Result<(), String> {
    send(ws, RFB_VERSION.to_vec()).await?;
    let version: [u8; 12] = input
        .read(ws, 12)
        .await?
        .try_into()
        .map_err(|_| "short version".to_string())?;
    let minor = parse_version(&version).ok_or_else(|| {
        format!(
            "the browser sent no RFB version: {:?}",
            String::from_utf8_lossy(&version)
        )
    })?;
    if minor < 7 {
        // RFB 3.3: the server picks the security type, as a u32.
        return send(ws, u32::from(SECURITY_NONE).to_be_bytes().to_vec()).await;
    }
    send(ws, vec![1, SECURITY_NONE]).await?;
    let chosen = input.read(ws, 1).await?;
    if chosen != [SECURITY_NONE] {
        if minor >= 8 {
            let reason =
                b"only security type 1 (None) is offered; the bridge has already authenticated you";
            let mut msg = 1u32.to_be_bytes().to_vec();
            msg.extend_from_slice(&(reason.len() as u32).to_be_bytes());
            msg.extend_from_slice(reason);
            send(ws, msg).await?;
        }
        return Err(format!(
            "the browser chose security type {chosen:?}, not 1 (None)"
        ));
    }
    if minor >= 8 {
        send(ws, 0u32.to_be_bytes().to_vec()).await?;
    }
    Ok(())
}

/// Tells the browser, in RFB terms, why there is no desktop, then closes.
async fn refuse(mut ws: WebSocket, reason: &str) {
    let mut msg = RFB_VERSION.to_vec();
    msg.push(0);
    msg.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    msg.extend_from_slice(reason.as_bytes());
    let _ = send(&mut ws, msg).await;
    let _ = ws.send(Message::Close(None)).await;
}

async fn bridge(mut ws: WebSocket, port: u16, password: Arc<str>) {
    let tcp = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_vnc(port, &password)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(why)) => {
            tracing::warn!("live view: {why}");
            return refuse(ws, &why).await;
        }
        Err(_) => {
            tracing::warn!(
                "live view: x11vnc did not finish the handshake in {HANDSHAKE_TIMEOUT:?}"
            );
            return refuse(ws, "x11vnc did not answer in time").await;
        }
    };
    let mut input = BrowserIn { buf: Vec::new() };
    match tokio::time::timeout(
        BROWSER_HANDSHAKE_TIMEOUT,
        greet_browser(&mut ws, &mut input),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            tracing::debug!("live view handshake with the browser failed: {why}");
            return;
        }
        Err(_) => {
            tracing::debug!(
                "live view: the browser did not finish the handshake in {BROWSER_HANDSHAKE_TIMEOUT:?}"
            );
            return;
        }
    }
    splice(ws, tcp, input.buf).await;
}

/// Copies bytes both ways until either side closes. Each direction runs on
/// its own, so a slow browser never stops us from reading what it sends.
async fn splice(ws: WebSocket, tcp: TcpStream, pending: Vec<u8>) {
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let to_vnc = async move {
        if !pending.is_empty() && tcp_tx.write_all(&pending).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws_rx.next().await {
            match msg {
                Message::Binary(b) => {
                    if tcp_tx.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) | Message::Text(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let to_browser = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = to_vnc => {}
        () = to_browser => {}
    }
}

/// `GET /websockify`: the RFB stream of the desktop for noVNC.
async fn websockify(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(vnc) = state.vnc.as_ref() else {
        return live_view_off().into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let why = rejection.body_text();
            return ApiError::new(
                rejection.status(),
                "websocket_required",
                format!("{why}; /websockify carries RFB over a WebSocket (open /novnc in a browser, or use a WebSocket client)"),
            )
            .into_response();
        }
    };
    let (port, password) = (vnc.port, Arc::<str>::from(vnc.password.as_str()));
    ws.protocols(["binary"])
        .on_upgrade(move |socket| bridge(socket, port, password))
}

fn live_view_off() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "live_view_off",
        "the live view is off; set desktop.vnc = true to turn it on",
    )
}

/// `GET /novnc`: remembers the `?token=` in an HttpOnly cookie (so noVNC's
/// files and its WebSocket carry it) and sends the browser to noVNC.
async fn novnc_entry(State(state): State<AppState>, uri: Uri) -> Response {
    if state.vnc.is_none() {
        return live_view_off().into_response();
    }
    let mut response = Redirect::to(NOVNC_PAGE).into_response();
    let token = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    // Only what the browser itself presented goes back: with
    // `allow_loopback_without_token` a wrong token passes auth too.
    let cookie_safe = |t: &&str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    };
    if let Some(token) = token.filter(cookie_safe)
        && let Ok(cookie) = HeaderValue::from_str(&format!(
            "bytebot_token={token}; Path=/; HttpOnly; SameSite=Strict"
        ))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /novnc/{*path}`: noVNC's files from `desktop.novnc_dir`.
async fn novnc_file(State(state): State<AppState>, req: Request) -> Response {
    let dir = &state.config.novnc_dir;
    if !dir.join("vnc.html").is_file() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "novnc_missing",
            format!("noVNC is not installed in {}; install it (apt-get install novnc) or point desktop.novnc_dir at it", dir.display()),
        )
        .into_response();
    }
    let (mut parts, _) = req.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix("/novnc")
        .unwrap_or("/")
        .to_string();
    let Ok(uri) = rest.parse::<Uri>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    parts.uri = uri;
    let req = Request::from_parts(parts, Body::empty());
    match tower_http::services::ServeDir::new(dir).try_call(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "novnc_read_failed",
            format!("cannot read noVNC's files: {e}"),
        )
        .into_response(),
    }
}

/// Routes `/websockify`, `/novnc` and `/novnc/…`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/websockify", get(websockify))
        .route("/novnc", get(novnc_entry))
        .route("/novnc/", get(novnc_entry))
        .route("/novnc/{*path}", get(novnc_file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn vnc_auth_matches_a_reference_des() {
        // From `openssl enc -des-ecb -nopad` with the bit-reversed key of "secret".
        let got = vnc_auth_response(b"secret", b"0123456789abcdef");
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "752440ee2bfcc2a0d9013fd20371e23b");
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version(b"RFB 003.008\n"), Some(8));
        assert_eq!(parse_version(b"RFB 003.003\n"), Some(3));
        assert_eq!(parse_version(b"RFB 004.001\n"), None);
        assert_eq!(parse_version(b"GET / HTTP/1"), None);
    }

    #[test]
    fn passwords_are_random_alphanumerics() {
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_missing_x11vnc_names_the_package_and_the_config_key() {
        let err = Vnc::start_program("x11vnc-does-not-exist", ":0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("apt-get install x11vnc"), "{err}");
        assert!(err.contains("desktop.vnc"), "{err}");
    }

    /// Needs Xvfb and x11vnc; skipped without them.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_password_stays_off_the_command_line_and_works() {
        let have = |p: &str| {
            Command::new(p)
                .arg("-help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if !have("Xvfb") || !have("x11vnc") {
            eprintln!("skipping: needs Xvfb and x11vnc (apt-get install xvfb x11vnc)");
            return;
        }
        let x = crate::xserver::OwnedX::start(640, 480, "").unwrap();
        let vnc = Vnc::start(&x.display).unwrap();
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", vnc.pid())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains(&vnc.password),
            "password on the command line"
        );
        let meta = std::fs::metadata(&vnc.dir).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o700
        );
        assert!(
            !vnc.dir.join("passwd").exists(),
            "x11vnc should have removed the password file"
        );
        connect_vnc(vnc.port, &vnc.password).await.unwrap();
        let wrong = connect_vnc(vnc.port, "wrong000").await.unwrap_err();
        assert!(wrong.contains("rejected"), "{wrong}");
        let dir = vnc.dir.clone();
        drop(vnc);
        assert!(!dir.exists());
    }
}
