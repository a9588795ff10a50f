//! The config file (TOML) plus `BYTEBOT_*` environment overrides, validated
//! before anything starts. Every error names the file, the key and what is
//! expected.

use anyhow::{Context, Result, bail};
use bytebot_agent::config::AgentConfig;
use bytebot_desktop::DesktopConfig;
use bytebot_gateway::GatewayConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `bytebot_desktop=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The API token; generated and kept in the data folder when unset.
    pub token: Option<String>,
    /// Where bytebot keeps its state (token, workspace, database).
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// The desktop daemon.
    pub desktop: DesktopConfig,
    /// The gateway.
    pub gateway: GatewayConfig,
    /// The database.
    pub store: StoreConfig,
    /// The agent: models, providers, limits.
    pub agent: AgentConfig,
}

/// Where state is stored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:/path/file.db` or `postgres://user@host/db`; default
    /// `sqlite:<data_dir>/bytebot.db`.
    pub url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            token: None,
            data_dir: default_data_dir(),
            log: LogConfig::default(),
            desktop: DesktopConfig::default(),
            gateway: GatewayConfig::default(),
            store: StoreConfig::default(),
            agent: AgentConfig::default(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("bytebot");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/bytebot"),
        None => PathBuf::from("/var/lib/bytebot"),
    }
}

/// Sections that environment variables may address: `BYTEBOT_DESKTOP_LISTEN`
/// sets `desktop.listen`.
const SECTIONS: &[&str] = &["desktop", "gateway", "store", "log", "agent"];

/// Variables that are not config keys.
/// (`BYTEBOT_BIN` is how test harnesses and scripts name the binary itself.)
const NOT_KEYS: &[&str] = &["BYTEBOT_CONFIG", "BYTEBOT_BIN"];

impl Config {
    /// Loads `path` (or defaults when `None`), applies `env` overrides, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let (source, mut table) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("config: cannot read {}", p.display()))?;
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                    anyhow::anyhow!("config: {}: {}", p.display(), e.to_string().trim_end())
                })?;
                (p.display().to_string(), table)
            }
            None => ("(defaults)".to_string(), toml::Table::new()),
        };
        apply_env(&mut table, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                anyhow::anyhow!(
                    "config: {source}: {key}: {}",
                    e.into_inner().to_string().trim_end()
                )
            })?;
        config.validate(&source)?;
        Ok(config)
    }

    fn validate(&self, source: &str) -> Result<()> {
        let mut problems: Vec<String> = self
            .desktop
            .validate()
            .into_iter()
            .map(|p| format!("config: {source}: {}: {}", p.key, p.message))
            .chain(
                self.gateway
                    .validate()
                    .into_iter()
                    .map(|p| format!("config: {source}: {}: {}", p.key, p.message)),
            )
            .collect();
        if let Err(e) = self.agent.catalog() {
            problems.push(format!("config: {source}: agent: {}", e.0));
        }
        if let Some(url) = &self.store.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "config: {source}: store.url: \"{url}\" is not a database URL; use sqlite:/path/bytebot.db or postgres://user@host/db"
            ));
        }
        let weak =
            |t: &String| t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control());
        if self.token.as_ref().is_some_and(weak) {
            problems.push(format!(
                "config: {source}: token: must be at least 16 characters with no spaces (or leave it unset to generate one)"
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        bail!("{}", problems.join("\n"))
    }

    /// The database URL: configured, or a SQLite file in the data folder.
    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("bytebot.db").display()))
    }

    /// Opens the store at [`Config::store_url`], creating a SQLite file's folder first.
    pub async fn open_store(&self) -> Result<bytebot_store::Store> {
        let url = self.store_url();
        if let Some(path) = url.strip_prefix("sqlite:")
            && let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        bytebot_store::Store::open(&url)
            .await
            .context("cannot open the store (store.url / --database)")
    }

    /// The policy file: configured, or `<data_dir>/policy.json`.
    pub fn policy_path(&self) -> PathBuf {
        self.gateway
            .policy
            .clone()
            .unwrap_or_else(|| self.data_dir.join("policy.json"))
    }

    /// The workspace folder: configured, or `<data_dir>/workspace`.
    pub fn workspace(&self) -> PathBuf {
        self.desktop
            .workspace
            .clone()
            .unwrap_or_else(|| self.data_dir.join("workspace"))
    }
}

/// Folds `BYTEBOT_*` variables into the table: `BYTEBOT_TOKEN` → `token`,
/// `BYTEBOT_DESKTOP_MAX_TEXT_CHARS` → `desktop.max_text_chars`. Values are
/// read as TOML (numbers, booleans, arrays) and otherwise as strings.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("BYTEBOT_") else {
            continue;
        };
        if NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        let parsed = parse_env_value(&value);
        let (section, field) = match SECTIONS.iter().find(|s| key.starts_with(&format!("{s}_"))) {
            Some(s) => (Some(*s), key[s.len() + 1..].to_string()),
            None => (None, key),
        };
        let target = match section {
            Some(s) => {
                let entry = table
                    .entry(s.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(t) => t,
                    None => bail!("config: {name}: [{s}] in the file is not a table"),
                }
            }
            None => &mut *table,
        };
        let full = section.map_or(field.clone(), |s| format!("{s}.{field}"));
        if field.is_empty() {
            bail!(
                "config: environment variable {name} names no key; use e.g. BYTEBOT_TOKEN or BYTEBOT_DESKTOP_LISTEN"
            );
        }
        tracing::debug!(key = %full, "config key set from the environment");
        target.insert(field, parsed);
    }
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    let wrapped = format!("v = {value}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_load_without_a_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.desktop.listen.to_string(), "127.0.0.1:9990");
    }

    #[test]
    fn a_file_and_env_overrides_combine() {
        let f = write("[desktop]\nresolution = \"1024x768\"\nmax_text_chars = 10\n");
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("BYTEBOT_DESKTOP_MAX_TEXT_CHARS", "99"),
                ("BYTEBOT_TOKEN", "0123456789abcdef0"),
                ("BYTEBOT_CONFIG", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.desktop.resolution, "1024x768");
        assert_eq!(c.desktop.max_text_chars, 99);
        assert_eq!(c.token.as_deref(), Some("0123456789abcdef0"));
    }

    #[test]
    fn unknown_keys_name_the_file_and_key() {
        let f = write("[desktop]\nresolutoin = \"1x1\"\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("desktop"), "{e}");
        assert!(e.contains("unknown field `resolutoin`"), "{e}");
        let e = Config::load(None, env(&[("BYTEBOT_DESKTOP_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `listn`"), "{e}");
    }

    #[test]
    fn wrong_values_say_what_is_expected() {
        let f = write("[desktop]\nlisten = \"nowhere\"\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("desktop.listen"), "{e}");
        let f = write("[desktop]\nresolution = \"1280x\"\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("desktop.resolution") && e.contains("WIDTHxHEIGHT"),
            "{e}"
        );
        let f = write("[desktop\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = Config::load(None, env(&[("BYTEBOT_TOKEN", "short")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("token"), "{e}");
    }
}
