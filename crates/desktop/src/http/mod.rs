//! The HTTP API: Bytebot's `/computer-use`, our `/v1`, health and metrics,
//! all behind token auth.

pub mod auth;
pub mod compat;
pub mod error;
pub mod v1;

use crate::config::DesktopConfig;
use crate::desktop::Desktop;
use crate::error::DesktopError;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::xserver::OwnedX;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use bytebot_protocol::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// The X display.
    pub desktop: Arc<Desktop>,
    /// The validated `[desktop]` config.
    pub config: DesktopConfig,
    /// The bearer token every request must carry.
    pub token: String,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Events for `/v1/events`.
    pub events: EventHub,
    /// The workspace folder file actions are confined to.
    pub workspace: PathBuf,
    /// Input tracking (XRecord), off until started.
    pub tracker: crate::record::Tracker,
    /// The live view's x11vnc, when `desktop.vnc` is on.
    pub vnc: Option<crate::vnc::Vnc>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state around a connected desktop.
    pub fn new(
        desktop: Arc<Desktop>,
        config: DesktopConfig,
        token: String,
        workspace: PathBuf,
    ) -> Self {
        Self::with_vnc(desktop, config, token, workspace, None)
    }

    /// Like [`new`](Self::new), with the live view's running x11vnc.
    pub fn with_vnc(
        desktop: Arc<Desktop>,
        config: DesktopConfig,
        token: String,
        workspace: PathBuf,
        vnc: Option<crate::vnc::Vnc>,
    ) -> Self {
        Self(Arc::new(Inner {
            desktop,
            config,
            token,
            metrics: Metrics::default(),
            events: EventHub::default(),
            workspace,
            tracker: crate::record::Tracker::default(),
            vnc,
        }))
    }
}

/// The limits the config implies.
pub fn limits(config: &DesktopConfig) -> Limits {
    Limits {
        max_text_chars: config.max_text_chars,
        max_file_bytes: config.max_file_bytes,
        ..Limits::default()
    }
}

/// Every route, with auth and body limits applied.
pub fn router(state: AppState) -> Router {
    // base64 grows files by 4/3; leave room for the JSON around them.
    let body_limit = state.config.max_file_bytes / 3 * 4 + 64 * 1024;
    Router::new()
        .merge(compat::routes())
        .merge(v1::routes())
        .merge(crate::files::routes())
        .merge(crate::apps::routes())
        .merge(crate::ocr::routes())
        .merge(crate::record::routes())
        .merge(crate::vnc::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A running desktop daemon: our Xvfb (if we started one) and the state.
pub struct Server {
    /// Handler state, shared with the HTTP server.
    pub state: AppState,
    /// Our own X server, stopped on drop.
    pub owned_x: Option<OwnedX>,
}

impl Server {
    /// Starts or attaches to the X display and prepares the state.
    pub fn start(
        config: DesktopConfig,
        token: String,
        workspace: PathBuf,
    ) -> Result<Self, DesktopError> {
        let owned_x = match &config.display {
            Some(_) => None,
            None => {
                let (w, h) = config
                    .screen_size()
                    .map_err(|p| DesktopError::Failed(format!("{}: {}", p.key, p.message)))?;
                Some(OwnedX::start(w, h, &config.window_manager)?)
            }
        };
        let display = match (&config.display, &owned_x) {
            (Some(d), _) => d.clone(),
            (None, Some(x)) => x.display.clone(),
            (None, None) => return Err(DesktopError::Unavailable("no display".into())),
        };
        std::fs::create_dir_all(&workspace).map_err(|e| {
            DesktopError::Failed(format!(
                "cannot create the workspace {}: {e}",
                workspace.display()
            ))
        })?;
        let desktop = Desktop::connect(&display, limits(&config))?;
        let vnc = if config.vnc {
            Some(crate::vnc::Vnc::start(&display)?)
        } else {
            None
        };
        let state = AppState::with_vnc(desktop, config, token, workspace, vnc);
        Ok(Self { state, owned_x })
    }

    /// The X display in use.
    pub fn display(&self) -> &str {
        self.state.desktop.display()
    }

    /// Serves HTTP on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.state.clone());
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
