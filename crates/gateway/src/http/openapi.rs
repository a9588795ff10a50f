//! The OpenAPI 3.1 document, generated from the handlers' annotations, so
//! Open WebUI (as a tool server) and schemathesis see exactly what runs.

use super::{handlers, stream};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's definition.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "bytebot gateway",
        description = "Plan → approve → execute: the safe way for AI front-ends to use a desktop. A model may only plan; a person approves the exact plan; only then does it run. Every operation takes `Authorization: Bearer <token>`; server-to-server callers may sign instead (the `signature` scheme: X-BYTEBOT-KEY-ID, X-BYTEBOT-TIMESTAMP, X-BYTEBOT-NONCE, X-BYTEBOT-SIG).",
    ),
    paths(
        handlers::capabilities,
        handlers::plan,
        handlers::execute,
        handlers::task,
        handlers::cancel,
        handlers::approve,
        handlers::approval_page,
        handlers::artifact,
        stream::sse,
        stream::websocket,
        handlers::health,
        handlers::ready,
        handlers::metrics,
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-BYTEBOT-SIG",
                "hex HMAC-SHA256 of \"v1\\n\" + timestamp + \"\\n\" + nonce + \"\\n\" + METHOD + \"\\n\" + path_and_query + \"\\n\" + body, with X-BYTEBOT-KEY-ID, X-BYTEBOT-TIMESTAMP and X-BYTEBOT-NONCE",
            ))),
        );
    }
}

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
