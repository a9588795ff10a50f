//! The desktop daemon: drives one real X display (XTEST input, MIT-SHM
//! capture, XFixes, RandR, EWMH, XDamage, XRecord) and serves Bytebot's
//! `POST /computer-use` plus our own `/v1` API over HTTP.
//!
//! Invariants: no shell is ever spawned; file access stays inside the
//! workspace; sensitive text is never logged; every endpoint needs the token.

pub mod apps;
pub mod config;
pub mod desktop;
pub mod encode;
pub mod error;
pub mod events;
pub mod files;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod ocr;
pub mod record;
pub mod vnc;
pub mod x11;
pub mod xserver;

pub use config::DesktopConfig;
pub use desktop::Desktop;
pub use error::DesktopError;
pub use http::{AppState, Server};
