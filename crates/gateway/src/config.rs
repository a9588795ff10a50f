//! The `[gateway]` section of the config file, with defaults and validation.

use serde::Deserialize;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One client key: who may call the gateway and under which policy profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, sent as `X-BYTEBOT-KEY-ID` and recorded in the audit log.
    pub id: String,
    /// Policy profile this key acts under (`profiles.<name>` in policy.json).
    pub profile: String,
    /// SHA-256 (hex) of the bearer token. Only the hash is kept at rest;
    /// make one with `printf %s "$TOKEN" | sha256sum`.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Environment variable holding the HMAC secret. A verifier must hold
    /// the secret itself, so it is read from the environment or a file,
    /// never written into the config.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HMAC secret (trailing newline ignored; must not be
    /// readable by group or others).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Accept the draft integration's body-only signature (no timestamp, no
    /// nonce, so replayable). Off unless a legacy client needs it.
    #[serde(default)]
    pub legacy_body_signature: bool,
}

/// Settings of the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Base URL of the desktop daemon it drives.
    pub desktop_url: String,
    /// Token for the desktop daemon; defaults to the main token.
    pub desktop_token: Option<String>,
    /// The policy file; defaults to `<data_dir>/policy.json`, written from
    /// the built-in default on first start.
    pub policy: Option<PathBuf>,
    /// Profile of the built-in `local` key (the main token).
    pub local_profile: String,
    /// Public base URL used in approval links; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Desktop application used by the `browse` intent.
    pub browser_app: String,
    /// How long a confirm token stays valid, in seconds.
    pub confirm_ttl_s: u64,
    /// How long a signed artifact link stays valid, in seconds.
    pub artifact_ttl_s: u64,
    /// Allowed clock difference for signed requests, in seconds.
    pub clock_skew_s: u64,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Client keys.
    pub keys: Vec<KeyConfig>,
    /// How the bottle starts its in-sandbox init for `run`: a host program (bound read-only
    /// into the sandbox) and its leading arguments. Not read from the config file: the program
    /// that embeds the gateway sets it (`bytebot` passes itself and `__bottle-init`; the
    /// `bytebot-gateway-bottle-init` binary of this crate takes no leading argument). Left
    /// empty, `run` is refused at plan time with 503.
    #[serde(skip)]
    pub bottle_init: Vec<OsString>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9991)),
            desktop_url: "http://127.0.0.1:9990".into(),
            desktop_token: None,
            policy: None,
            local_profile: "admin".into(),
            public_url: None,
            browser_app: "firefox".into(),
            confirm_ttl_s: 600,
            artifact_ttl_s: 3600,
            clock_skew_s: 300,
            max_body_bytes: 1024 * 1024,
            keys: Vec::new(),
            bottle_init: Vec::new(),
        }
    }
}

/// One thing wrong with the config: the key and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `gateway.keys[0].id`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl GatewayConfig {
    /// Checks values serde cannot; an empty list means valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |key: String, message: String| out.push(Problem { key, message });
        if !(self.desktop_url.starts_with("http://") || self.desktop_url.starts_with("https://")) {
            push(
                "gateway.desktop_url".into(),
                format!(
                    "\"{}\" is not an http(s) URL; use e.g. http://127.0.0.1:9990",
                    self.desktop_url
                ),
            );
        }
        for (name, value, min) in [
            ("confirm_ttl_s", self.confirm_ttl_s, 1),
            ("artifact_ttl_s", self.artifact_ttl_s, 1),
            ("clock_skew_s", self.clock_skew_s, 1),
        ] {
            if value < min || value > 7 * 24 * 3600 {
                push(
                    format!("gateway.{name}"),
                    format!("{value} is out of range; use {min}..=604800 seconds"),
                );
            }
        }
        if self.max_body_bytes < 1024 {
            push(
                "gateway.max_body_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("gateway.keys[{i}].{field}");
            let id_ok = !key.id.is_empty()
                && key.id.len() <= 64
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !id_ok {
                push(
                    at("id"),
                    format!(
                        "\"{}\" is not a key id; use 1-64 letters, digits, '-', '_' or '.'",
                        key.id
                    ),
                );
            }
            if key.id == LOCAL_KEY_ID {
                push(
                    at("id"),
                    format!("\"{LOCAL_KEY_ID}\" is reserved for the main token; pick another id"),
                );
            }
            if !seen.insert(key.id.as_str()) {
                push(at("id"), format!("\"{}\" appears twice", key.id));
            }
            if let Some(h) = &key.token_sha256
                && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                push(
                    at("token_sha256"),
                    "must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)".into(),
                );
            }
            if key.secret_env.is_some() && key.secret_file.is_some() {
                push(
                    at("secret_env"),
                    "give secret_env or secret_file, not both".into(),
                );
            }
            if key.token_sha256.is_none() && key.secret_env.is_none() && key.secret_file.is_none() {
                push(
                    at("token_sha256"),
                    "the key has no credential; set token_sha256 (bearer) and/or secret_env or secret_file (HMAC)".into(),
                );
            }
            if key.legacy_body_signature && key.secret_env.is_none() && key.secret_file.is_none() {
                push(
                    at("legacy_body_signature"),
                    "needs an HMAC secret (secret_env or secret_file)".into(),
                );
            }
        }
        out
    }
}

/// The key id of the main token.
pub const LOCAL_KEY_ID: &str = "local";

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> KeyConfig {
        KeyConfig {
            id: id.into(),
            profile: "default".into(),
            token_sha256: Some("a".repeat(64)),
            secret_env: None,
            secret_file: None,
            legacy_body_signature: false,
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(GatewayConfig::default().validate().is_empty());
    }

    #[test]
    fn bad_keys_are_named() {
        let mut c = GatewayConfig::default();
        let mut no_cred = key("b");
        no_cred.token_sha256 = None;
        let mut bad_hash = key("c");
        bad_hash.token_sha256 = Some("xyz".into());
        c.keys = vec![
            key("a"),
            key("a"),
            no_cred,
            bad_hash,
            key("local"),
            key("sp ace"),
        ];
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "gateway.keys[1].id",
                "gateway.keys[2].token_sha256",
                "gateway.keys[3].token_sha256",
                "gateway.keys[4].id",
                "gateway.keys[5].id",
            ]
        );
    }
}
