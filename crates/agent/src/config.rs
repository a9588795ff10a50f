//! The `[agent]` section: providers, models, limits; plus the quick set-up from the variables
//! users already have (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `OPENAI_BASE_URL`,
//! `GEMINI_API_KEY`, `OLLAMA_HOST`).
//!
//! API keys are never in the config text: a provider names the environment variable or the
//! 0600 file that holds its key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{ComputerTool, ImageLimit, ModelSpec, Price, ProviderKind};

/// `[agent]` in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where the task API listens.
    pub listen: std::net::SocketAddr,
    /// The model a task gets when it names none (a model id).
    pub default_model: Option<String>,
    /// Models tried in order after a task's own model fails.
    pub fallback: Vec<String>,
    /// Most model calls per task before it stops and asks for help.
    pub max_iterations: u32,
    /// Most dollars per task before it stops and asks for help.
    pub max_cost_usd: f64,
    /// Screenshots kept as images in the context; older ones become a short note.
    pub keep_screenshots: usize,
    /// Summarise the conversation when it passes this share of the model's context window.
    pub summarize_at: f64,
    /// Same action on an unchanged screen this many times in a row ends in NEEDS_HELP.
    pub loop_limit: u32,
    /// How long the screen must be still before the screenshot after an action (ms).
    pub settle_quiet_ms: u64,
    /// Seconds a worker's lease on a task lasts without renewal.
    pub lease_s: u64,
    /// The desktop application used for `navigate`.
    pub browser_app: String,
    /// Where blobs (screenshots, uploads) go: a folder (default `<data_dir>/blobs`) or
    /// `s3://bucket/prefix`.
    pub blobs: Option<String>,
    /// Extra desktops (beyond the local one) the workers may drive.
    pub desktops: Vec<DesktopTarget>,
    /// A signed webhook for finished / needs-help notifications.
    pub webhook: Option<WebhookConfig>,
    /// Provider entries by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Models by id.
    pub models: Vec<ModelConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9992)),
            default_model: None,
            fallback: Vec::new(),
            max_iterations: 80,
            max_cost_usd: 5.0,
            keep_screenshots: 3,
            summarize_at: 0.7,
            loop_limit: 3,
            settle_quiet_ms: 60,
            lease_s: 30,
            browser_app: "firefox".into(),
            blobs: None,
            desktops: Vec::new(),
            webhook: None,
            providers: BTreeMap::new(),
            models: Vec::new(),
        }
    }
}

/// Another desktop daemon.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopTarget {
    /// Its base URL.
    pub url: String,
    /// The environment variable holding its token.
    pub token_env: String,
}

/// Where to send notifications.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL that gets a POST per event.
    pub url: String,
    /// The environment variable holding the HMAC secret (`X-Bytebot-Signature`).
    pub secret_env: String,
}

/// One provider entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire format.
    pub kind: ProviderKind,
    /// Base URL (defaults per kind).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A 0600 file holding the key.
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// Seconds per request.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_timeout() -> u64 {
    120
}

/// One model entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Our id for it.
    pub id: String,
    /// The provider entry.
    pub provider: String,
    /// The wire name (defaults to the id).
    #[serde(default)]
    pub name: Option<String>,
    /// A title for pickers.
    #[serde(default)]
    pub title: Option<String>,
    /// The computer tool (defaults per provider and model).
    #[serde(default)]
    pub computer_tool: Option<ComputerTool>,
    /// Whether it can see images (default true).
    #[serde(default)]
    pub vision: Option<bool>,
    /// Context window in tokens.
    #[serde(default)]
    pub context_tokens: Option<u64>,
    /// Largest screenshot long edge.
    #[serde(default)]
    pub max_long_edge: Option<u32>,
    /// Dollars per million tokens.
    #[serde(default)]
    pub price: Option<Price>,
}

/// A provider entry with its key read.
#[derive(Clone)]
pub struct ResolvedProvider {
    /// Its name.
    pub name: String,
    /// The wire format.
    pub kind: ProviderKind,
    /// Base URL.
    pub base_url: String,
    /// The key, if it has one.
    pub api_key: Option<String>,
    /// What to check when the key is refused.
    pub key_hint: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for ResolvedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedProvider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// The providers and models the agent can use, checked.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Providers by name.
    pub providers: BTreeMap<String, ResolvedProvider>,
    /// Models, in config order.
    pub models: Vec<ModelSpec>,
    /// The default model id.
    pub default_model: Option<String>,
    /// The fallback chain.
    pub fallback: Vec<String>,
}

impl Catalog {
    /// A model by id.
    pub fn model(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The ids, for messages ("unknown model x; configured: a, b").
    pub fn ids(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.id.as_str()).collect()
    }
}

/// Reads a variable, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn default_base(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "https://api.anthropic.com",
        ProviderKind::Openai => "https://api.openai.com",
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
        ProviderKind::OpenaiCompatible => "http://127.0.0.1:11434",
    }
}

/// Per-kind defaults for a model entry that does not say.
fn defaults_for(kind: ProviderKind, wire: &str) -> (ComputerTool, ImageLimit, u64) {
    let xga = ImageLimit {
        max_long_edge: 1280,
        max_pixels: 1280 * 800,
    };
    match kind {
        ProviderKind::Anthropic => (
            crate::providers::anthropic::default_computer_tool(wire),
            crate::providers::anthropic::image_limit(wire),
            200_000,
        ),
        ProviderKind::Openai => (
            if wire.contains("computer-use-preview") {
                ComputerTool::OpenaiPreview
            } else {
                ComputerTool::OpenaiComputer
            },
            crate::providers::openai::image_limit(wire),
            128_000,
        ),
        ProviderKind::Gemini => (
            ComputerTool::GeminiComputerUse,
            crate::providers::gemini::image_limit(wire),
            1_000_000,
        ),
        ProviderKind::OpenaiCompatible => (ComputerTool::Function, xga, 32_000),
    }
}

/// Why the agent's configuration cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config: [agent] {0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Checks the section and resolves keys; adds the quick providers from well-known
    /// environment variables when the config names none.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let mut cfg = self.clone();
        if cfg.providers.is_empty() && cfg.models.is_empty() {
            cfg.add_from_env();
        }
        if cfg.max_iterations == 0 {
            return Err(ConfigError("max_iterations must be at least 1".into()));
        }
        if cfg.max_cost_usd.is_nan() || cfg.max_cost_usd <= 0.0 {
            return Err(ConfigError(format!(
                "max_cost_usd = {} must be above 0",
                cfg.max_cost_usd
            )));
        }
        if !(0.1..=0.95).contains(&cfg.summarize_at) {
            return Err(ConfigError(format!(
                "summarize_at = {} must be between 0.1 and 0.95 (a share of the context window)",
                cfg.summarize_at
            )));
        }
        let mut providers = BTreeMap::new();
        for (name, p) in &cfg.providers {
            let (api_key, key_hint) =
                match (&p.api_key_env, &p.api_key_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError(format!(
                            "providers.{name}: set api_key_env or api_key_file, not both"
                        )));
                    }
                    (Some(var), None) => (env(var), var.clone()),
                    (None, Some(file)) => (
                        Some(read_key_file(file).map_err(|e| {
                            ConfigError(format!("providers.{name}.api_key_file: {e}"))
                        })?),
                        file.clone(),
                    ),
                    (None, None) => (None, format!("[agent.providers.{name}] api_key_env")),
                };
            if api_key.is_none() && p.kind != ProviderKind::OpenaiCompatible {
                return Err(ConfigError(format!(
                    "providers.{name}: no API key: set {key_hint} (a {} provider needs one)",
                    p.kind.as_str()
                )));
            }
            let base_url = p
                .base_url
                .clone()
                .unwrap_or_else(|| default_base(p.kind).to_string());
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "providers.{name}.base_url \"{base_url}\" must start with http:// or https://"
                )));
            }
            providers.insert(
                name.clone(),
                ResolvedProvider {
                    name: name.clone(),
                    kind: p.kind,
                    base_url,
                    api_key,
                    key_hint,
                    timeout: Duration::from_secs(p.timeout_s.max(1)),
                },
            );
        }
        let mut models: Vec<ModelSpec> = Vec::new();
        for m in &cfg.models {
            let Some(p) = providers.get(&m.provider) else {
                return Err(ConfigError(format!(
                    "models \"{}\": provider \"{}\" is not configured; configured: {}",
                    m.id,
                    m.provider,
                    providers.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            };
            if models.iter().any(|x| x.id == m.id) {
                return Err(ConfigError(format!("models: \"{}\" is listed twice", m.id)));
            }
            let wire = m.name.clone().unwrap_or_else(|| m.id.clone());
            let (tool, mut limit, context) = defaults_for(p.kind, &wire);
            if let Some(edge) = m.max_long_edge {
                limit.max_long_edge = edge;
            }
            models.push(ModelSpec {
                id: m.id.clone(),
                provider: m.provider.clone(),
                kind: p.kind,
                title: m.title.clone().unwrap_or_else(|| wire.clone()),
                wire_name: wire,
                computer_tool: m.computer_tool.unwrap_or(tool),
                image_limit: limit,
                vision: m.vision.unwrap_or(true),
                context_tokens: m.context_tokens.unwrap_or(context),
                price: m.price,
            });
        }
        let known = |id: &str| models.iter().any(|m| m.id == id);
        let list = || {
            models
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(d) = &cfg.default_model
            && !known(d)
        {
            return Err(ConfigError(format!(
                "default_model \"{d}\" is not a configured model; configured: {}",
                list()
            )));
        }
        for f in &cfg.fallback {
            if !known(f) {
                return Err(ConfigError(format!(
                    "fallback \"{f}\" is not a configured model; configured: {}",
                    list()
                )));
            }
        }
        Ok(Catalog {
            default_model: cfg
                .default_model
                .clone()
                .or_else(|| models.first().map(|m| m.id.clone())),
            fallback: cfg.fallback.clone(),
            providers,
            models,
        })
    }

    /// Providers and models from `ANTHROPIC_API_KEY`, `OPENAI_API_KEY` (+ `OPENAI_BASE_URL`),
    /// `GEMINI_API_KEY` and `OLLAMA_HOST` (+ `OLLAMA_MODEL`, default `qwen2.5vl:7b`).
    fn add_from_env(&mut self) {
        let mut add = |name: &str,
                       kind,
                       base: Option<String>,
                       key_env: Option<&str>,
                       models: &[(&str, Price)]| {
            self.providers.insert(
                name.into(),
                ProviderConfig {
                    kind,
                    base_url: base,
                    api_key_env: key_env.map(str::to_string),
                    api_key_file: None,
                    timeout_s: default_timeout(),
                },
            );
            for (id, price) in models {
                self.models.push(ModelConfig {
                    id: (*id).into(),
                    provider: name.into(),
                    name: None,
                    title: None,
                    computer_tool: None,
                    vision: None,
                    context_tokens: None,
                    max_long_edge: None,
                    price: (price.input > 0.0).then_some(*price),
                });
            }
        };
        let price = |input, output, cache_write, cache_read| Price {
            input,
            output,
            cache_write,
            cache_read,
        };
        if env("ANTHROPIC_API_KEY").is_some() {
            add(
                "anthropic",
                ProviderKind::Anthropic,
                env("ANTHROPIC_BASE_URL"),
                Some("ANTHROPIC_API_KEY"),
                &[("claude-sonnet-4-5", price(3.0, 15.0, 3.75, 0.3))],
            );
        }
        if env("OPENAI_API_KEY").is_some() {
            add(
                "openai",
                ProviderKind::Openai,
                env("OPENAI_BASE_URL").map(|u| u.trim_end_matches("/v1").to_string()),
                Some("OPENAI_API_KEY"),
                &[("computer-use-preview", price(3.0, 12.0, 0.0, 0.0))],
            );
        }
        if env("GEMINI_API_KEY").is_some() {
            add(
                "gemini",
                ProviderKind::Gemini,
                None,
                Some("GEMINI_API_KEY"),
                &[(
                    "gemini-2.5-computer-use-preview-10-2025",
                    price(1.25, 10.0, 0.0, 0.31),
                )],
            );
        }
        if let Some(host) = env("OLLAMA_HOST") {
            let base = if host.starts_with("http") {
                host
            } else {
                format!("http://{host}")
            };
            let model = env("OLLAMA_MODEL").unwrap_or_else(|| "qwen2.5vl:7b".into());
            add(
                "ollama",
                ProviderKind::OpenaiCompatible,
                Some(base),
                None,
                &[(model.as_str(), Price::default())],
            );
        }
    }
}

/// Reads a key from a file that only its owner may read.
fn read_key_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{path} has mode {mode:o}; others may read it: chmod 600 {path}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let key = text.trim().to_string();
    if key.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AgentConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_config_with_a_keyless_local_server_resolves() {
        let cfg = parse(
            r#"
            default_model = "local"
            [providers.ollama]
            kind = "openai_compatible"
            base_url = "http://127.0.0.1:11434"
            [[models]]
            id = "local"
            provider = "ollama"
            name = "qwen2.5vl:7b"
            vision = true
            "#,
        );
        let c = cfg.catalog().unwrap();
        let m = c.model("local").unwrap();
        assert_eq!(m.wire_name, "qwen2.5vl:7b");
        assert_eq!(m.computer_tool, ComputerTool::Function);
        assert_eq!(c.default_model.as_deref(), Some("local"));
    }

    #[test]
    fn mistakes_are_named() {
        let cfg = parse(
            r#"
            [providers.x]
            kind = "openai_compatible"
            [[models]]
            id = "a"
            provider = "y"
            "#,
        );
        let e = cfg.catalog().unwrap_err().to_string();
        assert!(
            e.contains("provider \"y\" is not configured; configured: x"),
            "{e}"
        );
        let cfg = parse(
            r#"
            default_model = "nope"
            [providers.x]
            kind = "openai_compatible"
            [[models]]
            id = "a"
            provider = "x"
            "#,
        );
        let e = cfg.catalog().unwrap_err().to_string();
        assert!(e.contains("default_model \"nope\""), "{e}");
        assert!(toml::from_str::<AgentConfig>("max_iteration = 3").is_err());
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-test\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(path.to_str().unwrap()).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(path.to_str().unwrap()).unwrap(), "sk-test");
    }
}
