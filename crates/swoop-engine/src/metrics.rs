//! The engine's Prometheus metrics, counted where they happen: executions created and ended
//! (by flow, and by end state), and each realtime trigger's event → RUNNING latency. The
//! server's `/metrics` registers these handles; what a trigger's status already counts (events
//! in, in flight, lag) it reads from the statuses at scrape time instead.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use swoop_core::State;

/// A metric's labels, in order.
pub type Labels = Vec<(&'static str, String)>;

/// A family of histograms sharing one set of buckets.
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Event → RUNNING buckets: 250 µs … ~8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// `namespace`, `flow`.
    pub executions_created: Family<Labels, Counter>,
    /// `namespace`, `flow`, `state` (the end state).
    pub executions_ended: Family<Labels, Counter>,
    /// `namespace`, `flow`, `trigger`: from an event's arrival in its realtime trigger to its
    /// execution stored and handed to the executor (which turns it RUNNING at once, unless a
    /// concurrency limit holds it).
    pub event_to_running: HistogramFamily,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            executions_created: Family::default(),
            executions_ended: Family::default(),
            event_to_running: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl EngineMetrics {
    pub(crate) fn created(&self, namespace: &str, flow: &str) {
        self.executions_created
            .get_or_create(&flow_labels(namespace, flow))
            .inc();
    }

    pub(crate) fn ended(&self, namespace: &str, flow: &str, state: State) {
        let mut labels = flow_labels(namespace, flow);
        labels.push(("state", state.to_string()));
        self.executions_ended.get_or_create(&labels).inc();
    }

    /// The latency histogram of one trigger (a handle: keep it, observe without a lookup).
    pub(crate) fn event_to_running_of(
        &self,
        namespace: &str,
        flow: &str,
        trigger: &str,
    ) -> Histogram {
        let mut labels = flow_labels(namespace, flow);
        labels.push(("trigger", trigger.to_string()));
        self.event_to_running.get_or_create(&labels).clone()
    }
}

pub fn flow_labels(namespace: &str, flow: &str) -> Labels {
    vec![
        ("namespace", namespace.to_string()),
        ("flow", flow.to_string()),
    ]
}
