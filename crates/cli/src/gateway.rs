//! Starting the gateway from the config: store, policy, keys, server.

use crate::config::Config;
use anyhow::{Context, Result, bail};
use bytebot_gateway::policy::Policy;
use bytebot_gateway::{Gateway, Paths, Server};
use std::net::SocketAddr;
use std::sync::Arc;

/// A config problem found while starting (exit code 2, like a bad config file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupConfigError(pub String);

/// Loads the policy file; on first start (no file, none configured) writes
/// the built-in default there so a person can read and edit it.
fn load_policy(config: &Config) -> Result<Policy> {
    let path = config.policy_path();
    if !path.exists() && config.gateway.policy.is_none() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, Policy::DEFAULT_JSON)
            .with_context(|| format!("cannot write the default policy to {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote the default policy (deny by default; edit it to allow more)");
    }
    Policy::load(&path).map_err(|e| StartupConfigError(format!("policy: {e}")).into())
}

/// Opens the store, loads the policy and starts the gateway on `listen`,
/// driving the desktop at `desktop_url`.
pub async fn start(
    config: &Config,
    token: &str,
    listen: SocketAddr,
    desktop_url: &str,
) -> Result<Server> {
    let gw = build(config, token, listen, desktop_url).await?;
    Server::start(gw, listen).await.with_context(|| {
        format!(
            "cannot listen on {listen} (gateway.listen / --listen): is another bytebot running?"
        )
    })
}

/// Opens the store, loads the policy and builds the gateway without serving
/// it (`bytebot mcp` serves it on stdio). `listen` only shapes the links it
/// hands out when `gateway.public_url` is not set.
pub async fn build(
    config: &Config,
    token: &str,
    listen: SocketAddr,
    desktop_url: &str,
) -> Result<Arc<Gateway>> {
    let policy = load_policy(config)?;
    let store = config.open_store().await?;
    let mut gw_config = config.gateway.clone();
    gw_config.listen = listen;
    gw_config.desktop_url = desktop_url.to_string();
    // `run` executes in the bottle, whose in-sandbox init is this executable's hidden
    // `__bottle-init` subcommand.
    match crate::bottle::init_argv() {
        Ok(init) => gw_config.bottle_init = init,
        Err(e) => tracing::warn!(
            error = %e,
            "cannot find the bytebot executable for the bottle's init; the run intent will be refused"
        ),
    }
    let paths = Paths {
        data_dir: config.data_dir.clone(),
        workspace: config.workspace(),
    };
    std::fs::create_dir_all(&paths.workspace)
        .with_context(|| format!("cannot create the workspace {}", paths.workspace.display()))?;
    match Gateway::new(gw_config, policy, token, store, paths).await {
        Ok(gw) => Ok(gw),
        Err(e) => bail!(StartupConfigError(e)),
    }
}
