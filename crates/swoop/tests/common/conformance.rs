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
//! - `maxInFlight` bounds the executions in flight.
//!
//! Adding a source = its folder in `swoop-plugins` + a fixture + `conformance_tests!(fixture)`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

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

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Not a check but a benchmark, run by hand (`cargo test --release -p swoop --test
/// <source>_conformance bench_fixed_rate -- --ignored --nocapture`): publishes `RATE` events/s
/// for `SECONDS` s (in 10 ms batches), each carrying its send time, then a burst of `BURST`
/// events in one go; prints the send→RUNNING latency percentiles of the paced events (from the
/// executions' histories) and the executions/s sustained over the burst.
pub fn bench_fixed_rate(fixture: &mut dyn SourceFixture) {
    let rate: usize = std::env::var("RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let seconds: usize = std::env::var("SECONDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let channel = "conf-bench";
    let flow_yaml = flow(fixture, channel, "", "");
    let (server, _d, _f) = start(fixture, channel, &flow_yaml);
    wait_until("the trigger runs", Duration::from_secs(30), || {
        trigger_status(server.port)["state"] == "RUNNING"
    });
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    };
    let per_batch = (rate / 100).max(1);
    let total_events = rate * seconds;
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
    // Then a burst, published in one go, for the sustained rate.
    let burst: usize = std::env::var("BURST")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    let burst_events: Vec<Vec<u8>> = (total_events..total_events + burst)
        .map(|n| format!(r#"{{"n": {n}, "burst": true}}"#).into_bytes())
        .collect();
    fixture.publish(channel, &burst_events);
    let total_events = total_events + burst;
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
        let payload = &e["trigger"]["variables"][fixture.payload_variable()];
        let payload = match payload {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
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
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((p / 100.0) * (latencies.len() - 1) as f64).round() as usize];
    println!(
        "{} events at {rate}/s: send→RUNNING p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; \
         a burst of {burst}: {:.0} executions/s sustained",
        latencies.len(),
        pct(50.0),
        pct(99.0),
        pct(99.9),
        burst as f64 / ((last - first) as f64 / 1e6)
    );
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
        fn max_in_flight_bounds_executions() {
            common::conformance::max_in_flight_bounds_executions(&mut $make);
        }
        #[test]
        #[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS)"]
        fn bench_fixed_rate() {
            common::conformance::bench_fixed_rate(&mut $make);
        }
    };
}
