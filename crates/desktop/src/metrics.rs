//! Prometheus metrics: action counts and latency histograms, HTTP requests.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of one action sample.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action's wire name.
    pub action: String,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of one finished HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP status code.
    pub status: u16,
}

/// Every metric the desktop exports.
pub struct Metrics {
    registry: Registry,
    actions: Family<ActionLabels, Counter>,
    latency: Family<ActionLabels, Histogram>,
    requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bytebot_desktop");
        let actions = Family::<ActionLabels, Counter>::default();
        // 50 µs to ~26 s: clicks sit at the bottom, OCR and waits at the top.
        let latency = Family::<ActionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("actions", "Computer-use actions run", actions.clone());
        registry.register(
            "action_duration_seconds",
            "Time to run one action",
            latency.clone(),
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        Self {
            registry,
            actions,
            latency,
            requests,
        }
    }
}

impl Metrics {
    /// Records one action.
    pub fn action(&self, name: &str, ok: bool, took: Duration) {
        let labels = ActionLabels {
            action: name.to_string(),
            outcome: if ok { "ok" } else { "error" },
        };
        self.actions.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records one HTTP response.
    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&RequestLabels { status }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
