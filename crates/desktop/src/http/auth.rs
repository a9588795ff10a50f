//! Token auth on every route: `Authorization: Bearer TOKEN`, or for browsers
//! (WebSocket, noVNC) a `token` query parameter or `bytebot_token` cookie.

use super::AppState;
use super::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytebot_protocol::auth;
use std::net::SocketAddr;

/// Middleware: lets the request through only with the right token.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
    let allowed = (loopback && state.config.allow_loopback_without_token)
        || presented_token(&req).is_some_and(|t| auth::token_matches(t, &state.token));
    if !allowed {
        state.metrics.request(401);
        return ApiError::unauthorized().into_response();
    }
    let response = next.run(req).await;
    state.metrics.request(response.status().as_u16());
    response
}

fn presented_token(req: &Request) -> Option<&str> {
    let headers = req.headers();
    if let Some(bearer) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
    {
        return Some(bearer);
    }
    if let Some(t) = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
    {
        return Some(t);
    }
    auth::cookie_token(
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}
