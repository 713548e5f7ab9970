//! The Kafka realtime trigger end to end, against a real broker (tansu) and the real `swoop`
//! binary: every record becomes exactly one execution, also across a `kill -9` of swoop; a
//! record that is not valid JSON becomes one FAILED execution and the stream goes on.

#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::kafka::{Broker, produce};
use common::{Server, free_port, http, json};
use serde_json::Value;

fn flow(bootstrap: &str, topic: &str, group: &str) -> String {
    flow_with(bootstrap, topic, group, "", "")
}

/// Client settings for tests that restart or add a consumer: the group notices a member that
/// left within seconds instead of librdkafka's default 45 s.
const FAST_GROUP: &str = "      session.timeout.ms: 6000\n      heartbeat.interval.ms: 500\n";

/// The flow with more trigger properties (`trigger_extra`, YAML at the trigger's indentation)
/// and more client properties (`client_extra`, under `properties`).
fn flow_with(
    bootstrap: &str,
    topic: &str,
    group: &str,
    trigger_extra: &str,
    client_extra: &str,
) -> String {
    // Kestra's tutorial trigger block, verbatim but for the addresses.
    format!(
        r#"id: orders
namespace: kafka.test
tasks:
  - id: product
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.value | jq('.product_id') | first }}}}"
triggers:
  - id: daily
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: {topic}
    properties:
      bootstrap.servers: {bootstrap}
{client_extra}    serdeProperties:
      valueDeserializer: JSON
    groupId: {group}
{trigger_extra}"#
    )
}

fn order(i: usize) -> String {
    format!(
        r#"{{"order_id": "{i}", "customer_name": "Kelly Olsen", "product_id": "{}", "price": "166.89", "quantity": "1", "total": "166.89"}}"#,
        i % 50
    )
}

/// Every execution of the tests' namespace.
fn executions(port: u16) -> Vec<Value> {
    common::executions_in(port, "kafka.test")
}

fn total(port: u16) -> u64 {
    common::total_in(port, "kafka.test")
}

fn wait_for_total(port: u16, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let t = total(port);
        if t >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {t} of {n} executions after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (partition, offset) → how many executions: every record exactly once.
fn assert_exactly_once(execs: &[Value], expected: usize) {
    let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
    for e in execs {
        let v = &e["trigger"]["variables"];
        *seen
            .entry((
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            ))
            .or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicate executions: {dups:?}");
    assert_eq!(seen.len(), expected, "records without an execution");
    assert_eq!(execs.len(), expected);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn thousand_records_make_exactly_thousand_executions() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("orders", 3));
    let values: Vec<String> = (0..1000).map(order).collect();
    rt.block_on(produce(&broker.producer(), "orders", 3, &values));

    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("orders.yml"),
        flow(&broker.bootstrap(), "orders", "g1"),
    )
    .unwrap();
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    wait_for_total(server.port, 1000, Duration::from_secs(60));
    // Let in-flight executions end, then check every one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let execs = loop {
        let execs = executions(server.port);
        if execs.iter().all(|e| e["state"]["current"] == "SUCCESS") {
            break execs;
        }
        assert!(Instant::now() < deadline, "executions did not all succeed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_exactly_once(&execs, 1000);
    for e in &execs {
        let vars = &e["trigger"]["variables"];
        assert_eq!(vars["topic"], "orders");
        assert_eq!(
            e["trigger"]["type"],
            "io.kestra.plugin.kafka.RealtimeTrigger"
        );
        let value = &vars["value"];
        assert_eq!(value["customer_name"], "Kelly Olsen");
        let product = value["product_id"].as_str().unwrap();
        assert_eq!(e["taskRunList"][0]["outputs"]["value"], product);
        assert!(vars["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(vars["key"].as_str().unwrap().starts_with('k'));
    }
    // The trigger shows as running with its counters.
    let (_, body) = http(
        server.port,
        "GET",
        "/api/v1/triggers/search?namespace=kafka.test",
        None,
    )
    .unwrap();
    let t = json(&body);
    assert_eq!(t["results"][0]["state"], "RUNNING", "{t}");
    assert_eq!(t["results"][0]["executionsCreated"], 1000, "{t}");
}

#[test]
fn a_record_that_is_not_json_fails_alone_and_the_stream_goes_on() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("poison", 1));
    let mut values: Vec<String> = (0..10).map(order).collect();
    values[4] = "this is { not json".to_string();
    rt.block_on(produce(&broker.producer(), "poison", 1, &values));

    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("orders.yml"),
        flow(&broker.bootstrap(), "poison", "g2"),
    )
    .unwrap();
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    wait_for_total(server.port, 10, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    let execs = loop {
        let execs = executions(server.port);
        if execs
            .iter()
            .all(|e| ["SUCCESS", "FAILED"].contains(&e["state"]["current"].as_str().unwrap()))
        {
            break execs;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_exactly_once(&execs, 10);
    let failed: Vec<_> = execs
        .iter()
        .filter(|e| e["state"]["current"] == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "one FAILED execution expected");
    let bad = failed[0];
    assert_eq!(bad["trigger"]["variables"]["offset"], 4);
    assert_eq!(bad["trigger"]["variables"]["value"], "this is { not json");
    assert!(bad["error"].as_str().unwrap().contains("decode"), "{bad}");
    // Records after the bad one were processed.
    assert!(execs.iter().any(|e| e["trigger"]["variables"]["offset"] == 9 && e["state"]["current"] == "SUCCESS"));
}

#[test]
fn kill_9_mid_stream_then_restart_every_record_has_exactly_one_execution() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("crash", 3));
    let values: Vec<String> = (0..3000).map(order).collect();
    rt.block_on(produce(&broker.producer(), "crash", 3, &values));

    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("orders.yml"),
        flow_with(&broker.bootstrap(), "crash", "g3", "", FAST_GROUP),
    )
    .unwrap();
    let port = free_port();
    let mut server = Server::start(data.path(), Some(flows.path()), port);
    // Kill it while it is consuming.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = total(port);
        if t >= 300 {
            assert!(
                t < 3000,
                "consumed everything before the kill ({t}): produce more records"
            );
            break;
        }
        assert!(Instant::now() < deadline, "consumption never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill_9();
    let server = Server::start(data.path(), Some(flows.path()), port);
    wait_for_total(server.port, 3000, Duration::from_secs(90));
    assert_exactly_once(&executions(server.port), 3000);
}

/// Trigger status of the test flow's trigger, from the API.
fn trigger_state(port: u16) -> Value {
    let (_, body) = http(
        port,
        "GET",
        "/api/v1/triggers/search?namespace=kafka.test",
        None,
    )
    .unwrap();
    json(&body)["results"][0].clone()
}

fn wait_for_state(port: u16, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let t = trigger_state(port);
        if t["state"] == state {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "trigger never reached {state}: {t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn broker_outage_shows_reconnecting_then_running_and_loses_nothing() {
    let rt = runtime();
    let mut broker = Broker::start();
    rt.block_on(broker.create_topic("outage", 2));
    let before: Vec<String> = (0..300).map(order).collect();
    rt.block_on(produce(&broker.producer(), "outage", 2, &before));

    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("orders.yml"),
        flow_with(&broker.bootstrap(), "outage", "g4", "", ""),
    )
    .unwrap();
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    wait_for_total(server.port, 300, Duration::from_secs(60));

    // The broker goes away for 10 s.
    let down_at = Instant::now();
    broker.stop();
    let status = wait_for_state(server.port, "RECONNECTING", Duration::from_secs(30));
    assert!(status["attempt"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        !status["lastError"].as_str().unwrap_or_default().is_empty(),
        "{status}"
    );
    if let Some(rest) = Duration::from_secs(10).checked_sub(down_at.elapsed()) {
        std::thread::sleep(rest); // the outage's length is the scenario, not a synchronisation
    }
    broker.restart();

    let after: Vec<String> = (300..600).map(order).collect();
    rt.block_on(produce(&broker.producer(), "outage", 2, &after));
    let deadline = Instant::now() + Duration::from_secs(90);
    while total(server.port) < 600 {
        assert!(
            Instant::now() < deadline,
            "only {} of 600 executions; trigger: {}",
            total(server.port),
            trigger_state(server.port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_state(server.port, "RUNNING", Duration::from_secs(30));
    assert_exactly_once(&executions(server.port), 600);
}

#[test]
fn two_processes_in_one_group_share_the_partitions_without_loss_or_duplicates() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("shared", 4));
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("orders.yml"),
        flow_with(&broker.bootstrap(), "shared", "g5", "", FAST_GROUP),
    )
    .unwrap();
    // Two processes, each with its own store; the group splits the partitions between them.
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(data_a.path(), Some(flows.path()), free_port());
    let first: Vec<String> = (0..1000).map(order).collect();
    rt.block_on(produce(&broker.producer(), "shared", 4, &first));
    // B joins while A is consuming: a rebalance moves partitions from A to B. Keep producing
    // until B has made executions (so the partitions really moved), then 1000 more.
    let b = Server::start(data_b.path(), Some(flows.path()), free_port());
    let producer = broker.producer();
    let mut produced = 1000;
    let deadline = Instant::now() + Duration::from_secs(60);
    while total(b.port) == 0 {
        assert!(
            Instant::now() < deadline,
            "the second process never got a partition"
        );
        let batch: Vec<String> = (produced..produced + 50).map(order).collect();
        rt.block_on(produce(&producer, "shared", 4, &batch));
        produced += 50;
        std::thread::sleep(Duration::from_millis(100));
    }
    let last: Vec<String> = (produced..produced + 1000).map(order).collect();
    rt.block_on(produce(&producer, "shared", 4, &last));
    let expected = produced + 1000;

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = total(a.port) + total(b.port);
        if n >= expected as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {expected} executions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut all = executions(a.port);
    let from_b = executions(b.port);
    assert!(
        !all.is_empty() && !from_b.is_empty(),
        "both processes consume"
    );
    all.extend(from_b);
    assert_exactly_once(&all, expected);
}

#[test]
fn a_backlog_of_100k_records_with_max_in_flight_100_keeps_memory_flat() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("backlog", 4));
    const N: usize = 100_000;
    let values: Vec<String> = (0..N).map(order).collect();
    rt.block_on(produce(&broker.producer(), "backlog", 4, &values));

    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("orders.yml"),
        flow_with(
            &broker.bootstrap(),
            "backlog",
            "g6",
            "    maxInFlight: 100\n",
            "",
        ),
    )
    .unwrap();
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    let pid = server.child.id();
    let rss = |field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    // Sample the resident memory while the backlog drains.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut samples = Vec::new();
    loop {
        let t = total(server.port);
        samples.push((t, rss("VmRSS:")));
        if t >= N as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {t} of {N} executions after 300 s"
        );
        let status = trigger_state(server.port);
        assert!(status["inFlight"].as_u64().unwrap_or(0) <= 100, "{status}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let peak_kib = rss("VmHWM:");
    let mid = samples
        .iter()
        .find(|(t, _)| *t >= N as u64 / 10)
        .map(|(_, r)| *r)
        .unwrap_or(0);
    let end = samples.last().map(|(_, r)| *r).unwrap_or(0);
    println!(
        "100k backlog, maxInFlight 100: peak RSS {} MiB; RSS at 10% {} MiB, at 100% {} MiB",
        peak_kib / 1024,
        mid / 1024,
        end / 1024
    );
    // Flat: draining the last 90% of the backlog grew memory by less than 64 MiB, and the peak
    // stays far below what holding the backlog would take.
    assert!(
        end < mid + 64 * 1024,
        "memory grew from {mid} KiB to {end} KiB"
    );
    assert!(peak_kib < 512 * 1024, "peak RSS {peak_kib} KiB");
}
