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

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Catalog;
use crate::model::{Provider, ProviderKind};

/// One client per configured provider entry, sharing one connection pool.
pub fn build(catalog: &Catalog) -> BTreeMap<String, Arc<dyn Provider>> {
    let client = reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap_or_default();
    catalog
        .providers
        .values()
        .map(|p| {
            let endpoint = http::Endpoint {
                provider: p.name.clone(),
                base_url: p.base_url.clone(),
                key_hint: p.key_hint.clone(),
                timeout: p.timeout,
                retry: http::RetryPolicy::default(),
            };
            let key = p.api_key.clone().unwrap_or_default();
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::Anthropic => Arc::new(anthropic::AnthropicProvider::new(
                    p.name.clone(),
                    endpoint,
                    key,
                    client.clone(),
                )),
                ProviderKind::Openai => Arc::new(openai::OpenAiProvider::new(
                    p.name.clone(),
                    endpoint,
                    key,
                    client.clone(),
                )),
                ProviderKind::Gemini => Arc::new(gemini::GeminiProvider::new(
                    p.name.clone(),
                    endpoint,
                    key,
                    client.clone(),
                )),
                ProviderKind::OpenaiCompatible => {
                    Arc::new(openai_compat::OpenAiCompatProvider::new(
                        p.name.clone(),
                        endpoint,
                        p.api_key.clone(),
                        client.clone(),
                    ))
                }
            };
            (p.name.clone(), provider)
        })
        .collect()
}
