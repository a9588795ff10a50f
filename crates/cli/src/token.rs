//! The API token: from config/`BYTEBOT_TOKEN`, else the one kept in the data
//! folder, else a new random one saved there (mode 0600) so restarts keep it.

use crate::config::Config;
use anyhow::{Context, Result};
use rand::distr::{Alphanumeric, SampleString};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// A token and where it came from, for the start-up banner.
pub struct Token {
    /// The secret itself.
    pub value: String,
    /// "from config", "kept in …", "new, saved to …".
    pub origin: String,
}

/// Finds or creates the token.
pub fn resolve(config: &Config) -> Result<Token> {
    if let Some(t) = &config.token {
        return Ok(Token {
            value: t.clone(),
            origin: "from config or BYTEBOT_TOKEN".into(),
        });
    }
    let path = config.data_dir.join("token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if existing.len() >= 16 {
            return Ok(Token {
                value: existing,
                origin: format!("kept in {}", path.display()),
            });
        }
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {} (data_dir)",
            config.data_dir.display()
        )
    })?;
    let value = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot save the token to {}", path.display()))?;
    file.write_all(value.as_bytes())
        .with_context(|| format!("cannot save the token to {}", path.display()))?;
    Ok(Token {
        value,
        origin: format!("new, saved to {}", path.display()),
    })
}
