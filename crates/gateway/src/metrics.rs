//! Prometheus metrics of the gateway: requests and their latency, plans and
//! executions by outcome, refused authentications, live subscribers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of a finished HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/tasks/{id}`.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a plan or execution.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The intent.
    pub intent: String,
    /// What happened (`planned`, `denied`, `succeeded`, `token_used`…).
    pub outcome: String,
}

/// Labels of a refused authentication.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why, e.g. `bad_signature`, `replayed_nonce`.
    pub reason: String,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    plans: Family<OutcomeLabels, Counter>,
    executions: Family<OutcomeLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    subscribers: Gauge,
}

impl Metrics {
    /// A fresh registry under the `bytebot_gateway` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bytebot_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        // 20 µs to ~40 s.
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_02, 2.0, 22))
        });
        let plans = Family::<OutcomeLabels, Counter>::default();
        let executions = Family::<OutcomeLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let subscribers = Gauge::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (streams: to the first byte)",
            latency.clone(),
        );
        registry.register(
            "plans",
            "Plan requests by intent and outcome",
            plans.clone(),
        );
        registry.register(
            "executions",
            "Execute requests by intent and outcome",
            executions.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused authentications by reason",
            auth_failures.clone(),
        );
        registry.register(
            "event_subscribers",
            "Live SSE and WebSocket subscribers",
            subscribers.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            plans,
            executions,
            auth_failures,
            subscribers,
        }
    }

    /// Records one answered request.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        let labels = RequestLabels {
            route: route.to_string(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records a plan outcome.
    pub fn plan(&self, intent: &str, outcome: &str) {
        self.plans
            .get_or_create(&OutcomeLabels {
                intent: intent.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records an execution outcome.
    pub fn execution(&self, intent: &str, outcome: &str) {
        self.executions
            .get_or_create(&OutcomeLabels {
                intent: intent.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records a refused authentication.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Adjusts the live-subscriber gauge.
    pub fn subscribers(&self, delta: i64) {
        self.subscribers.inc_by(delta);
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
