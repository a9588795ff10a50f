//! Prometheus metrics of the agent: model calls by model and outcome with their latency, tool
//! calls by kind and outcome, finished tasks by status, and money spent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Labels of a model call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Our model id.
    pub model: String,
    /// `ok` or the error code (`rate_limited`, `timeout`, …).
    pub outcome: String,
}

/// Labels of a tool call or a finished task.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `computer`, a function name, or a task status.
    pub kind: String,
    /// `ok` or `error` (empty for tasks).
    pub outcome: String,
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    model_calls: Family<ModelLabels, Counter>,
    model_latency: Family<ModelLabels, Histogram>,
    tool_calls: Family<KindLabels, Counter>,
    tasks: Family<KindLabels, Counter>,
    cost_micro_usd: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry under the `bytebot_agent` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bytebot_agent");
        let model_calls = Family::<ModelLabels, Counter>::default();
        // 1 ms to ~2 min.
        let model_latency = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        let tool_calls = Family::<KindLabels, Counter>::default();
        let tasks = Family::<KindLabels, Counter>::default();
        let cost_micro_usd = Counter::<u64, AtomicU64>::default();
        registry.register(
            "model_calls",
            "Model calls by model and outcome",
            model_calls.clone(),
        );
        registry.register(
            "model_call_seconds",
            "Model call latency, retries included",
            model_latency.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls by kind and outcome",
            tool_calls.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks that reached a status, by status",
            tasks.clone(),
        );
        registry.register(
            "cost_micro_usd",
            "Money spent on model calls, in millionths of a dollar",
            cost_micro_usd.clone(),
        );
        Metrics {
            registry,
            model_calls,
            model_latency,
            tool_calls,
            tasks,
            cost_micro_usd,
        }
    }

    /// Records one model call.
    pub fn model_call(&self, model: &str, outcome: &str, took: Duration, cost_usd: f64) {
        let labels = ModelLabels {
            model: model.to_string(),
            outcome: outcome.to_string(),
        };
        self.model_calls.get_or_create(&labels).inc();
        self.model_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if cost_usd.is_finite() && cost_usd > 0.0 {
            self.cost_micro_usd.inc_by((cost_usd * 1e6).round() as u64);
        }
    }

    /// Records one tool call.
    pub fn tool_call(&self, kind: &str, ok: bool) {
        self.tool_calls
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Records a task reaching `status`.
    pub fn task_finished(&self, status: &str) {
        self.tasks
            .get_or_create(&KindLabels {
                kind: status.to_string(),
                outcome: String::new(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
