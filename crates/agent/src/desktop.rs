//! A client for the desktop daemon's `/v1` API, used by the agent and the gateway. Neither
//! touches X or the workspace itself; they ask the desktop, which confines files and
//! validates input on its own side too.

use bytebot_protocol::{Action, BatchResult};
use reqwest::{Client, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// A window as the desktop lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Window {
    /// X window id.
    pub id: u32,
    /// Title.
    pub title: String,
    /// `WM_CLASS` instance and class.
    #[serde(default)]
    pub class: Vec<String>,
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// A PNG screenshot and the sizes needed to map its pixels to the screen's.
#[derive(Debug, Clone)]
pub struct Shot {
    /// The PNG bytes.
    pub png: Vec<u8>,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Screen width it was taken from.
    pub screen_width: u32,
    /// Screen height it was taken from.
    pub screen_height: u32,
}

/// A failed call to the desktop, with what it said.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// The desktop could not be reached.
    #[error("the desktop at {url} is unreachable: {source}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The desktop answered with an error status.
    #[error("the desktop refused {what} ({status}): {message}")]
    Refused {
        /// What we asked for.
        what: String,
        /// HTTP status.
        status: StatusCode,
        /// Its message.
        message: String,
    },
}

/// The desktop's event stream, one event at a time.
///
/// Read by hand rather than with an SSE crate: it is our own daemon's stream, one JSON `data:`
/// line per event, and the rest (ids, keep-alive comments) is skipped.
pub struct DesktopEvents {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl DesktopEvents {
    /// The next event; `None` when the stream ends. Events this version does not know are
    /// skipped.
    pub async fn next(&mut self) -> Option<bytebot_protocol::DesktopEvent> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(data) = line.trim_end().strip_prefix("data:")
                    && let Ok(event) = serde_json::from_str(data.trim_start())
                {
                    return Some(event);
                }
                continue;
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}

/// Client for one desktop daemon.
#[derive(Clone)]
pub struct DesktopClient {
    http: Client,
    base: String,
    token: String,
}

impl DesktopClient {
    /// A client for `base` (e.g. `http://127.0.0.1:9990`) using `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, reqwest::Error> {
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, source: reqwest::Error) -> DesktopError {
        DesktopError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        json_body: Option<&Value>,
        what: &str,
    ) -> Result<reqwest::Response, DesktopError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.body(b);
        }
        if let Some(j) = json_body {
            req = req.json(j);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or(text);
        Err(DesktopError::Refused {
            what: what.to_string(),
            status,
            message,
        })
    }

    /// [`Self::call`] and the answer's JSON body.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        json_body: Option<&Value>,
        what: &str,
    ) -> Result<T, DesktopError> {
        self.call(method, path, None, json_body, what)
            .await?
            .json()
            .await
            .map_err(|source| self.unreachable(source))
    }

    /// Whether the desktop answers `/ready`.
    pub async fn ready(&self) -> bool {
        self.call(Method::GET, "/ready", None, None, "ready")
            .await
            .is_ok()
    }

    /// A screenshot, whole screen or a region, as PNG or JPEG bytes.
    pub async fn screenshot(
        &self,
        format: &str,
        region: Option<(i32, i32, u32, u32)>,
    ) -> Result<Vec<u8>, DesktopError> {
        let mut path = format!("/v1/screenshot?format={format}");
        if let Some((x, y, w, h)) = region {
            let (x, y) = (x.max(0), y.max(0));
            path.push_str(&format!("&x={x}&y={y}&width={w}&height={h}"));
        }
        let resp = self
            .call(Method::GET, &path, None, None, "a screenshot")
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.unreachable(source))?;
        Ok(bytes.to_vec())
    }

    /// A screenshot for a model: PNG, scaled down to at most `max_width` pixels wide, with the
    /// size the desktop reports (so coordinates can be mapped back exactly).
    pub async fn screenshot_scaled(&self, max_width: Option<u32>) -> Result<Shot, DesktopError> {
        let path = match max_width {
            Some(w) => format!("/v1/screenshot?format=png&max_width={w}"),
            None => "/v1/screenshot?format=png".to_string(),
        };
        let resp = self
            .call(Method::GET, &path, None, None, "a screenshot")
            .await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size = header("x-bytebot-size").and_then(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        });
        let region = header("x-bytebot-region").and_then(|s| {
            let parts: Vec<u32> = s.split(',').filter_map(|p| p.parse().ok()).collect();
            (parts.len() == 4).then(|| (parts[2], parts[3]))
        });
        let (Some((width, height)), Some((screen_width, screen_height))) = (size, region) else {
            return Err(DesktopError::Refused {
                what: "a screenshot".into(),
                status: StatusCode::BAD_GATEWAY,
                message: "the answer lacks x-bytebot-size or x-bytebot-region; is this a bytebot-rs desktop?".into(),
            });
        };
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.unreachable(source))?;
        Ok(Shot {
            png: bytes.to_vec(),
            width,
            height,
            screen_width,
            screen_height,
        })
    }

    /// The screen size in pixels.
    pub async fn screen_size(&self) -> Result<(u32, u32), DesktopError> {
        #[derive(Deserialize)]
        struct Screen {
            width: u32,
            height: u32,
        }
        let s: Screen = self
            .call_json(Method::GET, "/v1/screen", None, "the screen size")
            .await?;
        Ok((s.width, s.height))
    }

    /// Runs actions in order; the desktop stops at the first failure and says which.
    pub async fn actions(&self, actions: &[Action]) -> Result<BatchResult, DesktopError> {
        let body = json!({ "actions": actions });
        self.call_json(Method::POST, "/v1/actions", Some(&body), "running actions")
            .await
    }

    /// OCR: where `text` is on the screen (`{"matches": [...], ...}` as the desktop answers).
    pub async fn find_text(&self, text: &str) -> Result<Value, DesktopError> {
        let body = json!({ "text": text });
        self.call_json(Method::POST, "/v1/find-text", Some(&body), "finding text")
            .await
    }

    /// OCR: clicks the `index`th match of `text` (a 404 `Refused` when it is not on screen).
    pub async fn click_text(
        &self,
        text: &str,
        button: &str,
        clicks: u32,
        index: usize,
    ) -> Result<Value, DesktopError> {
        let body = json!({ "text": text, "button": button, "clickCount": clicks, "index": index });
        self.call_json(Method::POST, "/v1/click-text", Some(&body), "clicking text")
            .await
    }

    /// The windows on screen.
    pub async fn windows(&self) -> Result<Vec<Window>, DesktopError> {
        #[derive(Deserialize)]
        struct List {
            windows: Vec<Window>,
        }
        let list: List = self
            .call_json(Method::GET, "/v1/windows", None, "the window list")
            .await?;
        Ok(list.windows)
    }

    /// Raises and focuses a window.
    pub async fn focus(&self, id: u32) -> Result<(), DesktopError> {
        self.call(
            Method::POST,
            &format!("/v1/windows/{id}/focus"),
            None,
            None,
            "focusing a window",
        )
        .await
        .map(drop)
    }

    /// Opens (or focuses) a configured application, with extra arguments.
    pub async fn open_app(&self, name: &str, args: &[String]) -> Result<(), DesktopError> {
        let body = json!({ "name": name, "args": args });
        self.call(
            Method::POST,
            "/v1/apps/open",
            None,
            Some(&body),
            "opening the application",
        )
        .await
        .map(drop)
    }

    /// Switches the recording of a person's input on or off.
    pub async fn input_tracking(&self, on: bool) -> Result<(), DesktopError> {
        let path = if on {
            "/v1/input-tracking/start"
        } else {
            "/v1/input-tracking/stop"
        };
        self.call(Method::POST, path, None, None, "switching input tracking")
            .await
            .map(drop)
    }

    /// The desktop's live event stream (`GET /v1/events`): a person's input while tracking is
    /// on, among others.
    pub async fn events(&self) -> Result<DesktopEvents, DesktopError> {
        let resp = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(&self.token)
            // A stream stays open as long as it is read; the client's request timeout is for
            // answers.
            .timeout(Duration::from_secs(30 * 24 * 3600))
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        if !resp.status().is_success() {
            return Err(DesktopError::Refused {
                what: "reading the desktop's events".into(),
                status: resp.status(),
                message: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(DesktopEvents {
            resp,
            buf: Vec::new(),
        })
    }

    /// Waits until the screen stops changing (bounded by the desktop).
    pub async fn settle(&self) -> Result<(), DesktopError> {
        let body = json!({ "quiet_ms": 300, "timeout_ms": 8000 });
        self.call(
            Method::POST,
            "/v1/settle",
            None,
            Some(&body),
            "waiting for the screen",
        )
        .await
        .map(drop)
    }

    /// Waits until the screen has been still for `quiet_ms` (at most 3 s), so a screenshot
    /// after an action shows its effect.
    pub async fn settle_for(&self, quiet_ms: u64) -> Result<(), DesktopError> {
        let body = json!({ "quiet_ms": quiet_ms, "timeout_ms": 3000 });
        self.call(
            Method::POST,
            "/v1/settle",
            None,
            Some(&body),
            "waiting for the screen",
        )
        .await
        .map(drop)
    }

    /// A workspace file's bytes, or `None` when it does not exist.
    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, DesktopError> {
        let q = encode_query(path);
        match self
            .call(
                Method::GET,
                &format!("/v1/files/content?path={q}"),
                None,
                None,
                "reading the file",
            )
            .await
        {
            Ok(resp) => {
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|source| self.unreachable(source))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(DesktopError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a workspace file (created with its folders, replaced atomically).
    pub async fn write_file(&self, path: &str, data: Vec<u8>) -> Result<(), DesktopError> {
        let q = encode_query(path);
        self.call(
            Method::PUT,
            &format!("/v1/files/content?path={q}"),
            Some(data),
            None,
            "writing the file",
        )
        .await
        .map(drop)
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(super::encode_query("a b/ü&x=1"), "a%20b/%C3%BC%26x%3D1");
    }
}
