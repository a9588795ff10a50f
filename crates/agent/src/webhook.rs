//! Notifications when a task finishes or needs a person: a JSON POST signed with HMAC-SHA256.
//!
//! The receiver checks `X-Bytebot-Signature: sha256=<hex>` over
//! `<X-Bytebot-Timestamp> + "." + <body>` with the shared secret, and refuses old timestamps.
//! Sending never blocks a task: it runs in the background with a few retries.

use std::time::Duration;

use bytebot_store::AgentTask;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::WebhookConfig;

/// A configured webhook.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

impl Webhook {
    /// From the config; `None` (with a warning) when the secret variable is unset.
    pub fn from_config(c: &WebhookConfig) -> Option<Webhook> {
        let Some(secret) = std::env::var(&c.secret_env).ok().filter(|s| !s.is_empty()) else {
            tracing::warn!(var = %c.secret_env, "agent.webhook: the secret variable is unset; notifications are off");
            return None;
        };
        Some(Webhook {
            url: c.url.clone(),
            secret: secret.into_bytes(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .ok()?,
        })
    }

    /// The signature header value for a body sent at `ts` (unix seconds).
    pub fn signature(secret: &[u8], ts: i64, body: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return String::new();
        };
        mac.update(ts.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Sends `task`'s state in the background (three tries, 1 s and 4 s apart).
    pub fn send(&self, task: &AgentTask) {
        let body = json!({
            "event": format!("task.{}", task.status.as_str().to_ascii_lowercase()),
            "task": task,
        })
        .to_string();
        let hook = self.clone();
        tokio::spawn(async move {
            for (attempt, pause) in [0u64, 1, 4].into_iter().enumerate() {
                tokio::time::sleep(Duration::from_secs(pause)).await;
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let sent = hook
                    .client
                    .post(&hook.url)
                    .header("content-type", "application/json")
                    .header("x-bytebot-timestamp", ts.to_string())
                    .header(
                        "x-bytebot-signature",
                        Webhook::signature(&hook.secret, ts, body.as_bytes()),
                    )
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(url = %hook.url, status = r.status().as_u16(), attempt, "webhook refused")
                    }
                    Err(e) => {
                        tracing::warn!(url = %hook.url, error = %e, attempt, "webhook unreachable")
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let a = super::Webhook::signature(b"k", 1, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, super::Webhook::signature(b"k", 2, b"{}"));
        assert_ne!(a, super::Webhook::signature(b"k", 1, b"{ }"));
    }
}
