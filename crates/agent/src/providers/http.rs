//! Sending one JSON request to a provider, with the retry rules every provider shares.
//!
//! 429, 500, 502, 503, 504 and 529 (Anthropic's "overloaded") are retried with exponential
//! backoff and jitter; a `retry-after-ms` or `retry-after` header (seconds or an HTTP date) is
//! honoured when present. A wait longer than [`RetryPolicy::max_delay`] is not sat out: the
//! call fails at once so the task can fall back to another model. Timeouts and refused
//! connections are not retried here for the same reason.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::model::{Capability, ProviderError};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles on each retry.
    pub base_delay: Duration,
    /// The longest single wait; a provider asking for more makes the call fail instead.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Where and how to reach one provider entry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider entry's name, for messages.
    pub provider: String,
    /// Base URL without a trailing slash, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// Which key to check when it is refused (`ANTHROPIC_API_KEY`, `[providers.x] api_key`).
    pub key_hint: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retry rules.
    pub retry: RetryPolicy,
}

impl Endpoint {
    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

/// POSTs `body` as JSON to `endpoint.url(path)` with `headers`, retrying as described in the
/// module docs, and returns the parsed JSON of a 2xx answer.
pub async fn post_json(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<Value, ProviderError> {
    let url = endpoint.url(path);
    let policy = endpoint.retry;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client.post(&url).timeout(endpoint.timeout).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_error(endpoint, &url, &e)),
        };
        let status = response.status();
        let asked_wait = retry_after(response.headers());
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return Err(transport_error(endpoint, &url, &e)),
        };
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| ProviderError::BadResponse {
                provider: endpoint.provider.clone(),
                message: format!("not JSON ({e}): {}", excerpt(&text)),
            });
        }
        let message = error_message(&text);
        if retryable(status) && attempt < policy.max_attempts {
            let wait = match asked_wait {
                Some(w) if w > policy.max_delay => {
                    return Err(final_error(endpoint, status, message, asked_wait));
                }
                Some(w) => w,
                None => backoff(policy, attempt),
            };
            tracing::info!(
                provider = %endpoint.provider,
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "provider busy; retrying"
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        return Err(final_error(endpoint, status, message, asked_wait));
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504 | 529)
}

/// `base * 2^(attempt-1)`, capped, with up to 25 % jitter so many workers do not retry in
/// step.
fn backoff(policy: RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << (attempt - 1).min(16));
    let capped = exp.min(policy.max_delay);
    let jitter = rand::random::<f64>() * 0.25;
    capped.mul_f64(1.0 + jitter).min(policy.max_delay)
}

/// Reads `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn final_error(
    endpoint: &Endpoint,
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    let provider = endpoint.provider.clone();
    match status.as_u16() {
        401 | 403 => ProviderError::Auth {
            provider,
            status: status.as_u16(),
            message,
            key_hint: endpoint.key_hint.clone(),
        },
        429 => ProviderError::RateLimited {
            provider,
            retry_after,
            message,
        },
        s if s >= 500 => ProviderError::Server {
            provider,
            status: s,
            message,
        },
        s => ProviderError::Rejected {
            provider,
            status: s,
            message,
        },
    }
}

fn transport_error(endpoint: &Endpoint, url: &str, e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout {
            provider: endpoint.provider.clone(),
            after: endpoint.timeout,
        };
    }
    // The source chain holds the useful part ("connection refused").
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    ProviderError::Connect {
        provider: endpoint.provider.clone(),
        url: url.to_string(),
        message,
    }
}

/// The human part of an error body: `error.message` (Anthropic, OpenAI, Gemini, Ollama's
/// OpenAI layer), `error` as a string (Ollama's native errors), `message`, or the text itself.
pub fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let found = v
            .pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(Value::as_str);
        if let Some(m) = found {
            return excerpt(m);
        }
    }
    let body = body.trim();
    if body.is_empty() {
        "(empty body)".into()
    } else {
        excerpt(body)
    }
}

/// The first 300 characters, on a character boundary.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Recognises the messages servers give when a model lacks a capability, so the task can
/// say so at once instead of looping: Ollama's "does not support tools", vLLM's "not a
/// multimodal model", and the like.
pub fn missing_capability(message: &str) -> Option<Capability> {
    let m = message.to_ascii_lowercase();
    let tools = [
        "does not support tools",
        "tool use is not supported",
        "tools are not supported",
        "does not support function",
        "function calling is not supported",
    ];
    let vision = [
        "does not support image",
        "image input is not supported",
        "not a multimodal model",
        "does not support vision",
        "images are not supported",
        "image_url is not supported",
        "vision is not supported",
    ];
    if tools.iter().any(|p| m.contains(p)) {
        Some(Capability::Tools)
    } else if vision.iter().any(|p| m.contains(p)) {
        Some(Capability::Vision)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_messages_come_from_every_known_shape() {
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(
            error_message(r#"{"error":"model \"x\" not found"}"#),
            "model \"x\" not found"
        );
        assert_eq!(error_message("  "), "(empty body)");
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn backoff_doubles_and_stays_under_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let first = backoff(p, 1);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        let third = backoff(p, 3);
        assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(500));
        assert!(backoff(p, 9) <= Duration::from_secs(1));
    }

    #[test]
    fn missing_capabilities_are_recognised() {
        assert_eq!(
            missing_capability("registry.ollama.ai/library/gemma:2b does not support tools"),
            Some(Capability::Tools)
        );
        assert_eq!(
            missing_capability("llama3 is not a multimodal model"),
            Some(Capability::Vision)
        );
        assert_eq!(missing_capability("context length exceeded"), None);
    }
}
