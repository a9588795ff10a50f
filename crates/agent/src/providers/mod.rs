//! One module per wire format, each implementing [`crate::model::Provider`].
//!
//! `http.rs` holds what they share: sending JSON with retries on 429/5xx (honouring
//! `retry-after`) and turning HTTP failures into [`crate::model::ProviderError`]s that name
//! the key or capability at fault.

pub mod anthropic;
pub mod gemini;
pub mod http;
pub mod openai;
pub mod openai_compat;
