//! The conformance suite every realtime source passes against its real server, with the real
//! `swoop` binary (like Vector's component compliance harness). A source provides a
//! [`SourceFixture`]: its server on loopback, a way to publish, and its trigger block. The
//! suite checks the runtime's contracts through it:
//!
//! - N events → N executions with the payload in the trigger variables;
//! - `kill -9` of swoop mid-stream, restart → nothing lost (and no duplicate where the source
//!   gives message ids);
//! - the server restarted mid-stream → the trigger reconnects by itself, nothing lost;
//! - a payload that does not decode → one FAILED execution holding it, later events processed;
//! - an event whose execution can never start (a required input no event gives) → one FAILED
//!   execution holding it, acknowledged; the stream goes on;
//! - `maxInFlight` bounds the executions in flight.
//!
//! Adding a source = its folder in `swoop-plugins` + a fixture + `conformance_tests!(fixture)`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use super::wait_until;
use std::time::{Duration, Instant};

use serde_json::Value;
use swoop_core::realtime::{Event, EventSink, Outcome, SourceContext, Stopped};

use super::{Server, free_port, http, json};

/// A realtime source's server and client, for the suite.
pub trait SourceFixture {
    /// The trigger's YAML (a list item under `triggers:`, indented by 2 spaces, starting with
    /// `  - id: events`), consuming `channel` (a topic, queue, subject or key unique to one
    /// check), with the given extra lines (`maxInFlight`, …) at the trigger's indentation.
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String;
    /// Prepares `channel` before anything consumes it (create a queue, a stream …).
    fn prepare(&mut self, _channel: &str) {}
    /// Publishes `payloads` to `channel`, in order, and returns once the server has them.
    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]);
    /// Stops the server and starts it again (same address, same data).
    fn restart_server(&mut self);
    /// Called once swoop was killed with `kill -9`, before it starts again: for a server that
    /// needs help to forget the dead consumer (none should; see the Pulsar fixture).
    fn after_consumer_killed(&mut self) {}
    /// Whether events carry ids that make a redelivery recognisable (then no duplicates are
    /// allowed across a crash).
    fn gives_ids(&self) -> bool;
    /// The trigger variable that holds the payload (`value`, `payload`, `data` …).
    fn payload_variable(&self) -> &'static str;
}

fn flow(fixture: &dyn SourceFixture, channel: &str, extra: &str, task_extra: &str) -> String {
    format!(
        r#"id: conformance
namespace: conformance.test
triggers:
{trigger}
tasks:
  - id: n
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.{var} | jq('.n') | first }}}}"
{task_extra}"#,
        trigger = fixture.trigger_yaml(channel, extra),
        var = fixture.payload_variable(),
    )
}

fn payloads(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range
        .map(|n| format!(r#"{{"n": {n}}}"#).into_bytes())
        .collect()
}

/// Every execution of the tests' namespace.
pub fn executions(port: u16) -> Vec<Value> {
    super::executions_in(port, "conformance.test")
}

fn total(port: u16) -> u64 {
    super::total_in(port, "conformance.test")
}

fn trigger_status(port: u16) -> Value {
    let (_, body) = http(
        port,
        "GET",
        "/api/v1/triggers/search?namespace=conformance.test",
        None,
    )
    .expect("triggers");
    json(&body)["results"][0].clone()
}

/// The `n` of every execution that ended SUCCESS, with how many executions each has.
fn counts_by_n(execs: &[Value]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for e in execs.iter().filter(|e| e["state"]["current"] == "SUCCESS") {
        let n = e["taskRunList"][0]["outputs"]["value"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("an execution without its event's n: {e}"));
        *counts.entry(n).or_default() += 1;
    }
    counts
}

fn start(
    fixture: &mut dyn SourceFixture,
    channel: &str,
    flow_yaml: &str,
) -> (Server, tempfile::TempDir, tempfile::TempDir) {
    fixture.prepare(channel);
    let data = tempfile::tempdir().expect("data dir");
    let flows = tempfile::tempdir().expect("flows dir");
    std::fs::write(flows.path().join("conformance.yml"), flow_yaml).expect("flow file");
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    (server, data, flows)
}

/// N events → N executions, each with its payload.
pub fn events_become_executions(fixture: &mut dyn SourceFixture) {
    let channel = "conf-basic";
    let flow_yaml = flow(fixture, channel, "", "");
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    fixture.publish(channel, &payloads(0..200));
    wait_until("200 executions", Duration::from_secs(60), || {
        total(server.port) >= 200
    });
    wait_until("all executions end", Duration::from_secs(30), || {
        executions(server.port)
            .iter()
            .all(|e| e["state"]["current"] == "SUCCESS")
    });
    let execs = executions(server.port);
    assert_eq!(execs.len(), 200);
    let counts = counts_by_n(&execs);
    assert_eq!(counts.len(), 200, "every event has its execution");
    assert!(
        counts.values().all(|c| *c == 1),
        "no event has two executions"
    );
    // What `/metrics` says of the trigger (its latency is observed just after the creation).
    let ns = r#"namespace="conformance.test""#;
    wait_until("200 latencies observed", Duration::from_secs(10), || {
        super::metric(
            server.port,
            "swoop_trigger_event_to_running_seconds_count",
            &[ns],
        ) >= 200.0
    });
    let metric = |name: &str, labels: &[&str]| super::metric(server.port, name, labels);
    assert_eq!(
        metric("swoop_trigger_event_to_running_seconds_count", &[ns]),
        200.0
    );
    assert_eq!(
        metric("swoop_trigger_executions_created_total", &[ns]),
        200.0
    );
    // Events in counts deliveries: a broker that delivers at least once (SQS, pulsar-lite)
    // may give a message again, which the dedup key makes a duplicate. Every delivery is
    // accounted for once it has settled.
    wait_until(
        "events in = created + duplicates",
        Duration::from_secs(10),
        || {
            metric("swoop_trigger_events_total", &[ns])
                == 200.0 + metric("swoop_trigger_duplicates_total", &[ns])
        },
    );
    assert_eq!(metric("swoop_trigger_rejected_total", &[ns]), 0.0);
    assert_eq!(metric("swoop_executions_created_total", &[ns]), 200.0);
    assert_eq!(
        metric("swoop_executions_ended_total", &[ns, r#"state="SUCCESS""#]),
        200.0
    );
    assert_eq!(
        metric("swoop_trigger_state", &[ns, r#"state="RUNNING""#]),
        1.0
    );
}

/// `kill -9` mid-stream, restart: nothing lost, and no duplicate where the source gives ids.
pub fn kill_9_loses_nothing(fixture: &mut dyn SourceFixture) {
    let channel = "conf-crash";
    let flow_yaml = flow(fixture, channel, "", "");
    let (mut server, data, flows) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    let port = server.port;
    fixture.publish(channel, &payloads(0..2000));
    wait_until("consumption starts", Duration::from_secs(60), || {
        total(port) >= 100
    });
    server.kill_9();
    fixture.after_consumer_killed();
    let server = Server::start(data.path(), Some(flows.path()), port);
    wait_until(
        "every event has an execution after the restart",
        Duration::from_secs(120),
        || counts_by_n(&executions(server.port)).len() >= 2000,
    );
    let counts = counts_by_n(&executions(server.port));
    assert_eq!(counts.len(), 2000, "lost events");
    if fixture.gives_ids() {
        let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "duplicate executions: {dups:?}");
    }
}

/// The server restarts mid-stream: the trigger reconnects by itself and nothing is lost.
pub fn server_restart_reconnects(fixture: &mut dyn SourceFixture) {
    let channel = "conf-restart";
    let flow_yaml = flow(fixture, channel, "", "");
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    fixture.publish(channel, &payloads(0..100));
    wait_until("the first 100", Duration::from_secs(60), || {
        total(server.port) >= 100
    });
    fixture.restart_server();
    fixture.publish(channel, &payloads(100..200));
    wait_until(
        "the next 100 after the restart",
        Duration::from_secs(90),
        || counts_by_n(&executions(server.port)).len() >= 200,
    );
    wait_until("the trigger runs again", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
}

/// A payload that does not decode: one FAILED execution with the raw payload; the stream goes on.
pub fn poison_event_fails_alone(fixture: &mut dyn SourceFixture) {
    let channel = "conf-poison";
    let flow_yaml = flow(fixture, channel, "", "");
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    let mut events = payloads(0..10);
    events[4] = b"this is { not json".to_vec();
    fixture.publish(channel, &events);
    wait_until("10 executions", Duration::from_secs(60), || {
        total(server.port) >= 10
    });
    wait_until("all end", Duration::from_secs(30), || {
        executions(server.port).iter().all(|e| {
            ["SUCCESS", "FAILED"].contains(&e["state"]["current"].as_str().unwrap_or_default())
        })
    });
    let execs = executions(server.port);
    let failed: Vec<_> = execs
        .iter()
        .filter(|e| e["state"]["current"] == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "one FAILED execution");
    let raw = &failed[0]["trigger"]["variables"][fixture.payload_variable()];
    assert_eq!(
        raw, "this is { not json",
        "the raw payload is kept: {}",
        failed[0]
    );
    assert_eq!(
        counts_by_n(&execs).len(),
        9,
        "the other events were processed"
    );
}

/// A flow whose executions can never start (a required input no event gives): every event
/// becomes one FAILED execution holding it, is acknowledged, and the stream goes on past
/// `maxInFlight` such events.
pub fn rejected_events_fail_alone(fixture: &mut dyn SourceFixture) {
    let channel = "conf-rejected";
    let flow_yaml = flow(fixture, channel, "    maxInFlight: 5\n", "").replacen(
        "\ntasks:\n",
        "\ninputs:\n  - id: customer\n    type: STRING\n    required: true\ntasks:\n",
        1,
    );
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    fixture.publish(channel, &payloads(0..20));
    wait_until("20 executions", Duration::from_secs(60), || {
        total(server.port) >= 20
    });
    let execs = executions(server.port);
    assert_eq!(execs.len(), 20, "one execution per event");
    for e in &execs {
        assert_eq!(e["state"]["current"], "FAILED", "{e}");
        assert!(
            e["error"].as_str().is_some_and(|m| m.contains("customer")),
            "the reason names the input: {e}"
        );
        assert!(
            e["trigger"]["variables"][fixture.payload_variable()] != Value::Null,
            "the raw event is kept: {e}"
        );
    }
    wait_until("the trigger counts them", Duration::from_secs(10), || {
        trigger_status(server.port)["rejected"] == 20
    });
    let status = trigger_status(server.port);
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["inFlight"], 0, "{status}");
}

/// `maxInFlight: 5` with slow executions: never more than 5 in flight.
pub fn max_in_flight_bounds_executions(fixture: &mut dyn SourceFixture) {
    let channel = "conf-backpressure";
    let slow = "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT0.05S\n";
    let flow_yaml = flow(fixture, channel, "    maxInFlight: 5\n", slow);
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    fixture.publish(channel, &payloads(0..100));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = trigger_status(server.port);
        assert!(status["inFlight"].as_u64().unwrap_or(0) <= 5, "{status}");
        if counts_by_n(&executions(server.port)).len() >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The benchmarks' load, from the environment: `RATE` events/s (1000) for `SECONDS` s (10),
/// then a burst of `BURST` events (20000).
struct Load {
    rate: usize,
    seconds: usize,
    burst: usize,
}

impl Load {
    fn from_env() -> Load {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(default)
        };
        Load {
            rate: var("RATE", 1000),
            seconds: var("SECONDS", 10),
            burst: var("BURST", 20_000),
        }
    }

    fn paced_events(&self) -> usize {
        self.rate * self.seconds
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Publishes the paced part of `load` (in 10 ms batches), each event carrying its send time.
fn publish_paced(fixture: &mut dyn SourceFixture, channel: &str, load: &Load) {
    let per_batch = (load.rate / 100).max(1);
    let total_events = load.paced_events();
    let started = Instant::now();
    let mut sent = 0;
    let mut batch_no = 0u32;
    while sent < total_events {
        let due = started + Duration::from_millis(10) * batch_no;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // pacing the load generator, not synchronisation
        }
        let t = now_us();
        let batch: Vec<Vec<u8>> = (sent..(sent + per_batch).min(total_events))
            .map(|n| format!(r#"{{"n": {n}, "sent_us": {t}}}"#).into_bytes())
            .collect();
        sent += batch.len();
        fixture.publish(channel, &batch);
        batch_no += 1;
    }
}

/// An event's payload as JSON (sources with `serdeType: STRING` hand it over as text).
fn payload_json(payload: &Value) -> Value {
    match payload {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

/// `p50 … ms, p99 … ms, p99.9 … ms` of latencies in milliseconds.
fn percentiles(latencies: &mut [f64]) -> String {
    assert!(!latencies.is_empty(), "no latency was measured");
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((p / 100.0) * (latencies.len() - 1) as f64).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        pct(50.0),
        pct(99.0),
        pct(99.9)
    )
}

/// Not a check but a benchmark, run by hand (`cargo test --release -p swoop --test
/// <source>_conformance bench_fixed_rate -- --ignored --nocapture`): publishes the paced load
/// (see [`Load`]), then the burst in one go; prints the send→RUNNING latency percentiles of
/// the paced events (from the executions' histories) and the executions/s sustained over the
/// burst.
pub fn bench_fixed_rate(fixture: &mut dyn SourceFixture) {
    let load = Load::from_env();
    let channel = "conf-bench";
    let flow_yaml = flow(fixture, channel, "", "");
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    publish_paced(fixture, channel, &load);
    let paced = load.paced_events();
    let burst_events: Vec<Vec<u8>> = (paced..paced + load.burst)
        .map(|n| format!(r#"{{"n": {n}, "burst": true}}"#).into_bytes())
        .collect();
    let publishing = Instant::now();
    fixture.publish(channel, &burst_events);
    let published_in = publishing.elapsed();
    let total_events = paced + load.burst;
    wait_until(
        "every event has an execution",
        Duration::from_secs(300),
        || total(server.port) >= total_events as u64,
    );
    wait_until("all end", Duration::from_secs(120), || {
        executions(server.port)
            .iter()
            .all(|e| e["state"]["current"] == "SUCCESS")
    });
    let execs = executions(server.port);
    let date_us = |v: &Value| {
        v.as_str()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.timestamp_micros())
    };
    let mut latencies = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for e in &execs {
        let payload = payload_json(&e["trigger"]["variables"][fixture.payload_variable()]);
        let histories = e["state"]["histories"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let at = |state: &str| {
            histories
                .iter()
                .find(|h| h["state"] == state)
                .and_then(|h| date_us(&h["date"]))
        };
        if let (Some(sent), Some(running)) = (payload["sent_us"].as_i64(), at("RUNNING")) {
            latencies.push((running - sent) as f64 / 1000.0);
        }
        if payload["burst"] == true {
            if let Some(c) = at("CREATED") {
                first = first.min(c);
            }
            if let Some(end) = at("SUCCESS") {
                last = last.max(end);
            }
        }
    }
    println!(
        "{} events at {}/s: send→RUNNING {}; a burst of {} (published in {:.2} s): {:.0} executions/s sustained",
        latencies.len(),
        load.rate,
        percentiles(&mut latencies),
        load.burst,
        published_in.as_secs_f64(),
        load.burst as f64 / ((last - first) as f64 / 1e6)
    );
}

/// Not a check but the floor under [`bench_fixed_rate`], run by hand the same way
/// (`bench_source_alone`): the same paced load read by the trigger's source alone — built
/// from the same trigger YAML, each event acknowledged as soon as it arrives, no engine and no
/// store. Prints the send→received latency percentiles: the server's and the client's own
/// latency, which swoop's figures include.
pub fn bench_source_alone(fixture: &mut dyn SourceFixture) {
    use swoop_core::flow::TriggerKind;
    let load = Load::from_env();
    let channel = "conf-bench-alone";
    fixture.prepare(channel);
    let flow_yaml = flow(fixture, channel, "", "");
    let parsed = swoop_core::Flow::parse(&flow_yaml, &swoop_plugins::registry())
        .unwrap_or_else(|d| panic!("the benchmark's flow parses: {d:?}"));
    let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
        panic!("a realtime trigger");
    };
    let source = trigger.source.clone();
    let variable = fixture.payload_variable();
    let expected = load.paced_events();
    let within = Duration::from_secs(load.seconds as u64 + 120);
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    let consumer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let sink = Arc::new(AloneSink {
                tx,
                connected: std::sync::Mutex::new(Some(connected_tx)),
            });
            let stop = tokio_util::sync::CancellationToken::new();
            let ctx = SourceContext::new("conformance.test/bench/source-alone", sink, stop.clone());
            let running = tokio::spawn(async move { source.run(ctx).await });
            let deadline = tokio::time::Instant::now() + within;
            let mut latencies = Vec::with_capacity(expected);
            while latencies.len() < expected {
                let event = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("only {} events within {within:?}", latencies.len()))
                    .unwrap_or_else(|| panic!("the source stopped"));
                let received = now_us();
                let payload = payload_json(event.variables.get(variable).unwrap_or(&Value::Null));
                if let Some(sent) = payload["sent_us"].as_i64() {
                    latencies.push((received - sent) as f64 / 1000.0);
                }
                event.ack.settle(Outcome::Created);
            }
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
            latencies
        })
    });
    connected_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the source connects within 60 s");
    publish_paced(fixture, channel, &load);
    let mut latencies = consumer.join().expect("the consumer thread");
    println!(
        "{} events at {}/s read by the source alone: send→received {}",
        latencies.len(),
        load.rate,
        percentiles(&mut latencies)
    );
}

/// The runtime's side for `bench_source_alone`: events go to a channel, `connected` is told.
struct AloneSink {
    tx: tokio::sync::mpsc::Sender<Event>,
    connected: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

#[async_trait::async_trait]
impl EventSink for AloneSink {
    async fn emit(&self, event: Event) -> Result<(), Stopped> {
        self.tx.send(event).await.map_err(|_| Stopped)
    }

    fn connected(&self) {
        if let Some(tx) = self.connected.lock().ok().and_then(|mut c| c.take()) {
            let _ = tx.send(());
        }
    }
}

/// One `#[test]` per check of the suite for a fixture constructor.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        #[test]
        fn events_become_executions() {
            common::conformance::events_become_executions(&mut $make);
        }
        #[test]
        fn kill_9_loses_nothing() {
            common::conformance::kill_9_loses_nothing(&mut $make);
        }
        #[test]
        fn server_restart_reconnects() {
            common::conformance::server_restart_reconnects(&mut $make);
        }
        #[test]
        fn poison_event_fails_alone() {
            common::conformance::poison_event_fails_alone(&mut $make);
        }
        #[test]
        fn rejected_events_fail_alone() {
            common::conformance::rejected_events_fail_alone(&mut $make);
        }
        #[test]
        fn max_in_flight_bounds_executions() {
            common::conformance::max_in_flight_bounds_executions(&mut $make);
        }
        #[test]
        #[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS, BURST)"]
        fn bench_fixed_rate() {
            common::conformance::bench_fixed_rate(&mut $make);
        }
        #[test]
        #[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS)"]
        fn bench_source_alone() {
            common::conformance::bench_source_alone(&mut $make);
        }
    };
}
