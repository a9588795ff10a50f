//! The gateway's client for the desktop daemon's `/v1` API. The gateway
//! never touches X or the workspace itself; it asks the desktop, which
//! confines files and validates input on its own side too.

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

    /// The windows on screen.
    pub async fn windows(&self) -> Result<Vec<Window>, DesktopError> {
        #[derive(Deserialize)]
        struct List {
            windows: Vec<Window>,
        }
        let resp = self
            .call(Method::GET, "/v1/windows", None, None, "the window list")
            .await?;
        let list: List = resp
            .json()
            .await
            .map_err(|source| self.unreachable(source))?;
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
fn encode_query(value: &str) -> String {
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
