//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format, encoded by
//! `prometheus-client`.
//!
//! Three kinds of sources:
//! - handles on live metrics, registered once: the engine's ([`swoop_engine::metrics`]:
//!   executions created and ended, event → RUNNING latency per trigger), the store writer's
//!   (commit latency, batch size) and this module's HTTP request latency;
//! - what the realtime triggers' statuses already count (events in, in flight, `maxInFlight`,
//!   consumer lag, state), read at each scrape by [`TriggerCollector`], so nothing is counted
//!   twice;
//! - executions running on this node, read at each scrape.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use swoop_engine::metrics::{HistogramFamily, Labels, flow_labels};
use swoop_engine::{Engine, TriggerStatus};

/// Every metric `/metrics` shows.
pub(crate) struct Metrics {
    registry: Registry,
    http: HistogramFamily,
}

/// HTTP latency buckets: 100 µs … ~3.3 s.
fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new(engine: &Arc<Engine>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let m = engine.metrics();
        registry.register(
            "swoop_executions_created",
            "Executions created, by flow",
            m.executions_created.clone(),
        );
        registry.register(
            "swoop_executions_ended",
            "Executions ended, by flow and end state",
            m.executions_ended.clone(),
        );
        registry.register_with_unit(
            "swoop_trigger_event_to_running",
            "From an event's arrival in its realtime trigger to its execution stored and started",
            Unit::Seconds,
            m.event_to_running.clone(),
        );
        if let Some(store) = engine.store().writer_metrics() {
            registry.register_with_unit(
                "swoop_store_commit",
                "Time to write and commit one batch of the store's writer",
                Unit::Seconds,
                store.commit_seconds,
            );
            registry.register(
                "swoop_store_batch_size",
                "Write messages per committed batch of the store's writer",
                store.batch_size,
            );
        }
        let http: HistogramFamily = Family::new_with_constructor(http_histogram);
        registry.register_with_unit(
            "swoop_http_request_duration",
            "HTTP requests, by method, route and status",
            Unit::Seconds,
            http.clone(),
        );
        registry.register_collector(Box::new(TriggerCollector {
            engine: engine.clone(),
        }));
        Arc::new(Metrics { registry, http })
    }

    fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`.
pub(crate) async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => crate::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
        .into_response(),
    }
}

/// The middleware timing every request, labelled by its route's pattern (not its path, which
/// would make one series per execution id).
pub(crate) async fn time_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    let labels: Labels = vec![
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics
        .http
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A series read from each trigger's status: its name, help and value.
type Series<T> = (&'static str, &'static str, fn(&TriggerStatus) -> T);

/// What the triggers' statuses count, and the executions running, read at each scrape.
struct TriggerCollector {
    engine: Arc<Engine>,
}

impl fmt::Debug for TriggerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TriggerCollector")
    }
}

impl Collector for TriggerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let statuses = self.engine.trigger_statuses();
        let labels: Vec<Labels> = statuses
            .iter()
            .map(|s| {
                let mut l = flow_labels(&s.namespace, &s.flow_id);
                l.push(("trigger", s.trigger_id.clone()));
                l
            })
            .collect();
        let counters: [Series<u64>; 4] = [
            (
                "swoop_trigger_events",
                "Events the realtime trigger took in",
                |s| s.events,
            ),
            (
                "swoop_trigger_duplicates",
                "Redelivered events that created nothing",
                |s| s.duplicates,
            ),
            (
                "swoop_trigger_rejected",
                "Events that could never become a running execution (kept FAILED)",
                |s| s.rejected,
            ),
            (
                "swoop_trigger_executions_created",
                "Executions the realtime trigger created",
                |s| s.executions_created,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (status, labels) in statuses.iter().zip(&labels) {
                family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, u64, f64>(&value(status), None)?;
            }
        }
        let gauges: [Series<Option<u64>>; 3] = [
            (
                "swoop_trigger_in_flight",
                "Events taken whose execution has not ended",
                |s| Some(s.in_flight as u64),
            ),
            (
                "swoop_trigger_max_in_flight",
                "The trigger's maxInFlight",
                |s| Some(s.max_in_flight as u64),
            ),
            (
                "swoop_trigger_lag",
                "Events waiting in the source (consumer lag), where the source can tell",
                |s| s.lag,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (status, labels) in statuses.iter().zip(&labels) {
                if let Some(v) = value(status) {
                    family.encode_family(labels)?.encode_gauge(&v)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "swoop_trigger_state",
            "1 for the state the realtime trigger is in (STARTING, RUNNING, STALLED, RECONNECTING, STOPPED, FAILED)",
            None,
            MetricType::Gauge,
        )?;
        for (status, labels) in statuses.iter().zip(&labels) {
            let mut labels = labels.clone();
            labels.push(("state", status.state.as_str().to_string()));
            family.encode_family(&labels)?.encode_gauge(&1u64)?;
        }
        let running = self.engine.running_count() as u64;
        encoder
            .encode_descriptor(
                "swoop_executions_running",
                "Executions running on this node",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&running)
    }
}
