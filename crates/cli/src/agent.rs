//! Starting the agent from the config: store, blobs, models, workers, the task API.

use crate::config::Config;
use crate::gateway::StartupConfigError;
use anyhow::{Context, Result};
use bytebot_agent::api::{ApiState, router};
use bytebot_agent::desktop::DesktopClient;
use bytebot_agent::service::Agent;
use bytebot_store::{Blobs, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// A running agent: its API server and its workers.
pub struct AgentServer {
    /// Where the task API listens.
    pub addr: SocketAddr,
    /// The shared state (the gateway's `task` intent hands over to it).
    pub agent: Arc<Agent>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AgentServer {
    /// Stops the workers (their tasks go back to the queue) and the server.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}

/// Opens the store (or shares `store`, as `bytebot up` does with the gateway's) and blobs,
/// checks the models, starts one worker per desktop and serves the task API on `listen`.
pub async fn start(
    config: &Config,
    token: &str,
    listen: SocketAddr,
    desktop_url: &str,
    store: Option<Store>,
) -> Result<AgentServer> {
    let catalog = config
        .agent
        .catalog()
        .map_err(|e| StartupConfigError(e.to_string()))?;
    let store = match store {
        Some(store) => store,
        None => config.open_store().await?,
    };
    let blob_target = config
        .agent
        .blobs
        .clone()
        .unwrap_or_else(|| config.data_dir.join("blobs").display().to_string());
    let blobs = Blobs::open(&blob_target)
        .with_context(|| format!("cannot open the blob store {blob_target} (agent.blobs)"))?;
    if catalog.models.is_empty() {
        tracing::warn!(
            "no model configured: tasks cannot run until ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY or OLLAMA_HOST is set, or [agent] models are configured"
        );
    }
    let agent = Arc::new(Agent::new(store, blobs, config.agent.clone(), catalog));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut desktops = vec![(desktop_url.to_string(), token.to_string())];
    for d in &config.agent.desktops {
        let t = std::env::var(&d.token_env).map_err(|_| {
            StartupConfigError(format!(
                "agent.desktops: the token variable {} of {} is unset",
                d.token_env, d.url
            ))
        })?;
        desktops.push((d.url.clone(), t));
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bytebot".into());
    for (i, (url, tok)) in desktops.into_iter().enumerate() {
        let client = DesktopClient::new(&url, &tok).context("cannot build the desktop client")?;
        let worker = format!("{host}-{}-{i}", std::process::id());
        tasks.push(tokio::spawn(bytebot_agent::worker::work(
            Arc::clone(&agent),
            client,
            worker,
            url,
            rx.clone(),
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} (agent.listen / --listen): is another bytebot running?"
            )
        })?;
    let addr = listener.local_addr().context("listener has no address")?;
    let app = router(ApiState {
        agent: Arc::clone(&agent),
        token: Arc::from(token),
    });
    let mut stop = rx.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "agent API server failed");
        }
    }));
    Ok(AgentServer {
        addr,
        agent,
        shutdown,
        tasks,
    })
}
