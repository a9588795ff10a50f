//! The HTTP API of the gateway: routes, authentication and rate-limit
//! middleware, and the server.

mod handlers;
pub mod openapi;
mod stream;

use crate::auth::{AuthError, AuthMethod, Caller, NonceReceipt, SignedHeaders};
use crate::error::ApiError;
use crate::service::Gateway;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The gateway.
    pub gw: Arc<Gateway>,
    limiters: Arc<HashMap<String, DefaultDirectRateLimiter>>,
    /// The MCP endpoint (streamable HTTP), mounted at `/mcp`.
    mcp: crate::mcp::McpService,
}

impl AppState {
    /// State for `gw`, with one rate limiter per key from its profile.
    pub fn new(gw: Arc<Gateway>) -> Self {
        let mut limiters = HashMap::new();
        for (id, profile) in gw.auth.profiles() {
            if let Some(p) = gw.policy.profile(profile) {
                let rl = p.rate_limit();
                let per_minute = NonZeroU32::new(rl.per_minute).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(rl.burst).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::per_minute(per_minute).allow_burst(burst);
                limiters.insert(id.to_string(), governor::RateLimiter::direct(quota));
            }
        }
        Self {
            mcp: crate::mcp::http_service(Arc::clone(&gw)),
            gw,
            limiters: Arc::new(limiters),
        }
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/capabilities", get(handlers::capabilities))
        .route("/plan", post(handlers::plan))
        .route("/execute", post(handlers::execute))
        .route("/tasks/{id}", get(handlers::task))
        .route("/tasks/{id}/cancel", post(handlers::cancel))
        .route(
            "/approve/{task_id}",
            post(handlers::approve).get(handlers::approval_page),
        )
        .route("/events", get(stream::sse))
        .route("/events/ws", get(stream::websocket))
        .route("/openapi.json", get(openapi::document))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::metrics))
        // MCP (streamable HTTP); inside this router so it gets the same auth.
        .nest_service("/mcp", state.mcp.clone())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    // Artifact links carry their own signature, so a chat UI can show them
    // without a key; the handler accepts a key too.
    let links = Router::new().route("/artifacts/{id}", get(handlers::artifact));
    authed
        .merge(links)
        .fallback(handlers::not_found)
        .with_state(state)
}

/// Identifies the caller of a request whose body has been read. A signed request's nonce may
/// still be committing: confirm the receipt before answering.
pub async fn identify(
    gw: &Gateway,
    parts: &Parts,
    body: &[u8],
) -> Result<(Caller, NonceReceipt), AuthError> {
    let h = &parts.headers;
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(signature) = text("x-bytebot-sig") {
        let headers = SignedHeaders {
            key_id: text("x-bytebot-key-id"),
            timestamp: text("x-bytebot-timestamp"),
            nonce: text("x-bytebot-nonce"),
            signature: Some(signature),
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        return gw
            .auth
            .signed(headers, parts.method.as_str(), path, body)
            .await;
    }
    if let Some(auth) = text("authorization") {
        let token = bytebot_protocol::auth::bearer(auth).ok_or_else(|| {
            AuthError::BadHeader("Authorization must be \"Bearer <token>\"".into())
        })?;
        return Ok((
            gw.auth.bearer(token.trim(), AuthMethod::Bearer)?,
            NonceReceipt::default(),
        ));
    }
    if let Some(token) = cookie_token(h) {
        let caller = gw.auth.bearer(token, AuthMethod::Cookie)?;
        if parts.method != axum::http::Method::GET && !same_origin(h) {
            return Err(AuthError::BadHeader(
                "a cookie-authenticated change must come from the gateway's own page (Origin does not match Host)".into(),
            ));
        }
        return Ok((caller, NonceReceipt::default()));
    }
    Err(AuthError::Missing)
}

fn cookie_token(h: &HeaderMap) -> Option<&str> {
    bytebot_protocol::auth::cookie_token(
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// Browsers send `Origin` on cross-site POSTs; it must name this host.
fn same_origin(h: &HeaderMap) -> bool {
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        _ => false,
    }
}

/// Reads the body (bounded), identifies the caller, applies its rate limit,
/// and records the request's metrics.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let gw = Arc::clone(&state.gw);
    let response = match admit(&state, req).await {
        Ok((req, receipt)) => {
            let response = next.run(req).await;
            // The handler ran while the nonce committed; nothing is answered before it is
            // durable (see NonceReceipt).
            match receipt.confirm().await {
                Ok(()) => response,
                Err(e) => {
                    tracing::error!(error = %e, "a signed request's nonce was not recorded after its handler ran");
                    gw.metrics.auth_failure(e.code());
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
                        .into_response()
                }
            }
        }
        Err(e) => e.into_response(),
    };
    gw.metrics
        .request(&route, response.status().as_u16(), started.elapsed());
    response
}

async fn admit(state: &AppState, req: Request) -> Result<(Request, NonceReceipt), ApiError> {
    let gw = &state.gw;
    let (mut parts, body) = req.into_parts();
    let limit = gw.config.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over {limit} bytes (gateway.max_body_bytes)"),
        )
    })?;
    let (caller, receipt) = match identify(gw, &parts, &bytes).await {
        Ok(c) => c,
        Err(e) => {
            gw.metrics.auth_failure(e.code());
            gw.audit.record(
                "auth.refused",
                None,
                serde_json::json!({"reason": e.code(), "path": parts.uri.path(), "key_id": parts.headers.get("x-bytebot-key-id").and_then(|v| v.to_str().ok())}),
            );
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                e.code(),
                e.to_string(),
            ));
        }
    };
    if let Some(limiter) = state.limiters.get(&caller.key_id)
        && let Err(not_until) = limiter.check()
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        gw.audit.record(
            "rate_limited",
            Some(&caller.key_id),
            serde_json::json!({"path": parts.uri.path()}),
        );
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "key \"{}\" is over its rate limit; retry in {} ms",
                caller.key_id,
                wait.as_millis().max(1)
            ),
        ));
    }
    parts.extensions.insert(caller);
    Ok((Request::from_parts(parts, Body::from(bytes)), receipt))
}

/// A running gateway server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    gw: Arc<Gateway>,
}

impl Server {
    /// The gateway this server serves.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// Binds `addr` and serves until [`Server::stop`].
    pub async fn start(gw: Arc<Gateway>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        gw.bound_to(addr);
        let state = AppState::new(Arc::clone(&gw));
        let mcp = state.mcp.clone();
        let app = router(state);
        let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
        let keep = Arc::clone(&gw);
        let pruner = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                gw.auth.prune().await;
            }
        });
        let handle = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.await;
                // Open MCP streams would otherwise hold the shutdown forever.
                crate::mcp::stop(&mcp);
            })
            .await;
            pruner.abort();
            served
        });
        Ok(Self {
            addr,
            handle,
            shutdown,
            gw: keep,
        })
    }

    /// Stops accepting, lets running requests finish, and waits.
    pub async fn stop(self) -> std::io::Result<()> {
        self.gw.begin_shutdown();
        let _ = self.shutdown.send(());
        self.handle.await.map_err(std::io::Error::other)?
    }

    /// Waits until the server ends on its own.
    pub async fn wait(self) -> std::io::Result<()> {
        let _keep = self.shutdown;
        self.handle.await.map_err(std::io::Error::other)?
    }
}
