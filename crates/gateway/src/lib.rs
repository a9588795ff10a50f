//! The gateway: the safe way for other AI front-ends to use the desktop.
//! A caller may only plan; a person approves the exact plan; only then does
//! it run (see `shared/specs/gateway.md` and docs/ARCHITECTURE.md).

pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod bottle;
pub mod config;
pub mod error;
pub mod events;
pub mod exec;
pub mod http;
pub mod intents;
pub mod mcp;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod service;

pub use config::{GatewayConfig, KeyConfig};
pub use http::Server;
pub use service::{Gateway, Paths};
