//! `bytebot task …`: a client of the agent's task API with live progress.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Write;

/// Where the agent is and how to prove who we are.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for `base` with `token`.
    pub fn new(base: &str, token: &str) -> Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .build()
                .context("cannot build the HTTP client")?,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| {
            format!(
                "cannot reach the agent at {} (is `bytebot up` running? --url)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            bail!("the agent answered {status}: {msg}");
        }
        Ok(body)
    }

    /// `POST /tasks`.
    pub async fn create(
        &self,
        description: &str,
        model: Option<&str>,
        priority: Option<&str>,
    ) -> Result<Value> {
        let mut body = json!({ "description": description });
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        if let Some(p) = priority {
            body["priority"] = json!(p);
        }
        self.send(self.http.post(format!("{}/tasks", self.base)).json(&body))
            .await
    }

    /// `GET /tasks`.
    pub async fn list(
        &self,
        status: Option<&str>,
        search: Option<&str>,
        limit: u32,
    ) -> Result<Value> {
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.to_string()));
        }
        if let Some(s) = search {
            query.push(("search", s.to_string()));
        }
        self.send(self.http.get(format!("{}/tasks", self.base)).query(&query))
            .await
    }

    /// Follows `GET /tasks/{id}/events` (SSE) and prints each step until the task stops
    /// running; returns its last status.
    pub async fn watch(&self, id: &str) -> Result<String> {
        let mut resp = self
            .http
            .get(format!("{}/tasks/{id}/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the agent at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            bail!(
                "the agent answered {status}: {}",
                body.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
        }
        let mut buf = String::new();
        let mut out = std::io::stdout();
        while let Some(chunk) = resp.chunk().await.context("the event stream broke")? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                let line = describe(&event);
                if !line.is_empty() {
                    let _ = writeln!(out, "{line}");
                }
                if event["kind"] == "status"
                    && let Some(s) = event["data"]["status"].as_str()
                    && !matches!(s, "PENDING" | "RUNNING")
                {
                    return Ok(s.to_string());
                }
            }
        }
        bail!("the event stream ended before the task finished")
    }
}

/// One readable line per event.
fn describe(e: &Value) -> String {
    let d = &e["data"];
    match e["kind"].as_str().unwrap_or("") {
        "status" => {
            let mut s = format!("● {}", d["status"].as_str().unwrap_or("?"));
            if let Some(err) = d["error"].as_str() {
                s.push_str(&format!(": {err}"));
            }
            if let Some(m) = d.pointer("/result/message").and_then(Value::as_str) {
                s.push_str(&format!(": {m}"));
            }
            s
        }
        "tool_call" => format!("  → {}", d["call"]),
        "usage" => format!(
            "  model {} ({} ms, ${:.4})",
            d["model"].as_str().unwrap_or("?"),
            d["ms"],
            d["cost_usd"].as_f64().unwrap_or(0.0)
        ),
        "model_error" => format!("  ! {}", d["message"].as_str().unwrap_or("")),
        "message" if d["role"] == "assistant" => d["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .map(|t| format!("  “{t}”"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
