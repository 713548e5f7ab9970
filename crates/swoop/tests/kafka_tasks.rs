//! Kafka beyond the realtime trigger, end to end against the test broker (tansu) and the real
//! `swoop` binary: the batch `Trigger` across a `kill -9` (every record in exactly one stored
//! batch), `Consume` then `Produce` in one flow, `Produce` chaining into another flow's realtime
//! trigger, a transactional `Produce` on a broker without transactions, and 100,000 rows from
//! an ION file with the process's memory flat. (Transactions themselves are tested against
//! librdkafka's mock cluster, in `swoop-plugins`: tansu has no EndTxn.)

#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::kafka::{Broker, produce};
use common::{Server, free_port, http, json};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::Value;

const NS: &str = "kafka.tasks";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn executions(port: u16) -> Vec<Value> {
    common::executions_in(port, NS)
}

/// Waits until `done` holds for the namespace's executions; returns them.
fn wait_until(
    port: u16,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let execs = executions(port);
        if done(&execs) {
            return execs;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {within:?}; executions: {}",
            execs
                .iter()
                .map(|e| format!("{} {}", e["flowId"], e["state"]["current"]))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ended(e: &Value) -> bool {
    ["SUCCESS", "FAILED", "KILLED", "WARNING"]
        .contains(&e["state"]["current"].as_str().unwrap_or(""))
}

/// Starts an execution of `flow_id` through the API; returns its id.
fn execute(port: u16, flow_id: &str) -> String {
    let (status, body) = http(
        port,
        "POST",
        &format!("/api/v1/executions/{NS}/{flow_id}"),
        Some(("application/json", "{}")),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    json(&body)["id"].as_str().unwrap().to_string()
}

fn wait_ended(port: u16, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http(port, "GET", &format!("/api/v1/executions/{id}"), None).unwrap();
        assert_eq!(status, 200, "{body}");
        let e = json(&body);
        if ended(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "execution {id} did not end: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows of an execution's ION file, through the API.
fn ion_rows(port: u16, execution: &str, uri: &str) -> Vec<Value> {
    let path = format!(
        "/api/v1/executions/{execution}/file?path={}",
        uri.replace(':', "%3A")
    );
    let (status, body) = http(port, "GET", &path, None).unwrap();
    assert_eq!(status, 200, "{body}");
    swoop_core::ion::from_text(&body).expect("valid ION")
}

/// Every value of `topic`, read from the start by a bare consumer until each partition's end.
fn read_topic(bootstrap: &str, topic: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("reader-{}", swoop_core::model::new_id()),
        )
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Read until `expected` values came, then a little longer to catch extra ones.
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        if out.len() >= expected && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    out
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}

fn write_flows(dir: &std::path::Path, flows: &[(&str, String)]) {
    for (name, text) in flows {
        std::fs::write(dir.join(format!("{name}.yml")), text).unwrap();
    }
}

#[test]
fn the_batch_trigger_stores_every_record_in_exactly_one_batch_across_a_kill_9() {
    const N: usize = 10_000;
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("events", 2));
    let values: Vec<String> = (0..N).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    rt.block_on(produce(&broker.producer(), "events", 2, &values));

    let flow = format!(
        r#"id: batches
namespace: {NS}
tasks:
  - id: count
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.messagesCount }}}}"
triggers:
  - id: every_second
    type: io.kestra.plugin.kafka.Trigger
    topic: events
    groupId: batches
    interval: PT0.5S
    maxRecords: 1500
    valueDeserializer: JSON
    properties:
      bootstrap.servers: {}
"#,
        broker.bootstrap()
    );
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write_flows(flows.path(), &[("batches", flow)]);
    let port = free_port();
    let mut server = Server::start(data.path(), Some(flows.path()), port);
    // Two batches stored, the third being read: kill the process outright.
    wait_until(port, Duration::from_secs(60), "two batches", |e| {
        e.len() >= 2
    });
    server.kill_9();
    let server = Server::start(data.path(), Some(flows.path()), port);
    let total = |execs: &[Value]| -> u64 {
        execs
            .iter()
            .map(|e| {
                e["trigger"]["variables"]["messagesCount"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    };
    let execs = wait_until(
        port,
        Duration::from_secs(120),
        "every record in a batch",
        |e| total(e) >= N as u64 && e.iter().all(ended),
    );
    let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
    for e in &execs {
        assert_eq!(e["state"]["current"], "SUCCESS", "{e}");
        let vars = &e["trigger"]["variables"];
        let uri = vars["uri"].as_str().expect("trigger.uri");
        let rows = ion_rows(port, e["id"].as_str().unwrap(), uri);
        assert_eq!(rows.len() as u64, vars["messagesCount"].as_u64().unwrap());
        assert!(rows.len() <= 1500);
        assert_eq!(
            e["taskRunList"][0]["outputs"]["value"],
            rows.len().to_string()
        );
        for r in &rows {
            assert_eq!(r["topic"], "events");
            assert!(r["value"]["n"].is_u64(), "{r}");
            *seen
                .entry((
                    r["partition"].as_i64().unwrap(),
                    r["offset"].as_i64().unwrap(),
                ))
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records in two batches: {twice:?}");
    assert_eq!(seen.len(), N, "records in no batch");
    drop(server);
}

#[test]
fn consume_then_produce_moves_records_to_another_topic_and_chains_a_realtime_flow() {
    let rt = runtime();
    let broker = Broker::start();
    for t in ["in", "out"] {
        rt.block_on(broker.create_topic(t, 2));
    }
    let values: Vec<String> = (0..500).map(|i| format!("record-{i}")).collect();
    rt.block_on(produce(&broker.producer(), "in", 2, &values));
    let bootstrap = broker.bootstrap();
    let copy = format!(
        r#"id: copy
namespace: {NS}
tasks:
  - id: consume
    type: io.kestra.plugin.kafka.Consume
    topic: in
    groupId: copier
    properties:
      bootstrap.servers: {bootstrap}
  - id: produce
    type: io.kestra.plugin.kafka.Produce
    from: "{{{{ outputs.consume.uri }}}}"
    topic: out
    transactional: false
    properties:
      bootstrap.servers: {bootstrap}
"#
    );
    // Every record produced to `out` starts an execution of this flow.
    let chained = format!(
        r#"id: chained
namespace: {NS}
tasks:
  - id: echo
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.value }}}}"
triggers:
  - id: from_out
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: out
    groupId: chained
    properties:
      bootstrap.servers: {bootstrap}
"#
    );
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write_flows(flows.path(), &[("copy", copy), ("chained", chained)]);
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    let id = execute(server.port, "copy");
    let e = wait_ended(server.port, &id, Duration::from_secs(60));
    assert_eq!(e["state"]["current"], "SUCCESS", "{e}");
    let outputs: HashMap<&str, &Value> = e["taskRunList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["taskId"].as_str().unwrap(), &t["outputs"]))
        .collect();
    assert_eq!(outputs["consume"]["messagesCount"], 500);
    assert_eq!(outputs["produce"]["messagesCount"], 500);
    let mut copied = read_topic(&bootstrap, "out", 500);
    copied.sort();
    let mut wanted = values.clone();
    wanted.sort();
    assert_eq!(copied, wanted);

    // The chained flow ran once per produced record.
    let execs = wait_until(
        server.port,
        Duration::from_secs(60),
        "500 chained executions",
        |e| {
            e.iter()
                .filter(|x| x["flowId"] == "chained" && ended(x))
                .count()
                >= 500
        },
    );
    let mut echoed: Vec<String> = execs
        .iter()
        .filter(|x| x["flowId"] == "chained")
        .map(|x| {
            x["taskRunList"][0]["outputs"]["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    echoed.sort();
    assert_eq!(echoed, wanted);

    // A second run consumes nothing: the group committed after the file was stored.
    let id = execute(server.port, "copy");
    let e = wait_ended(server.port, &id, Duration::from_secs(60));
    assert_eq!(e["taskRunList"][0]["outputs"]["messagesCount"], 0, "{e}");
}

#[test]
fn a_transactional_produce_on_a_broker_without_transactions_says_how_to_go_on() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("txn", 1));
    let flow = format!(
        r#"id: txn
namespace: {NS}
tasks:
  - id: produce
    type: io.kestra.plugin.kafka.Produce
    topic: txn
    from:
      - key: a
        value: one
    properties:
      bootstrap.servers: {}
"#,
        broker.bootstrap()
    );
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write_flows(flows.path(), &[("txn", flow)]);
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    let id = execute(server.port, "txn");
    let e = wait_ended(server.port, &id, Duration::from_secs(60));
    assert_eq!(e["state"]["current"], "FAILED", "{e}");
    let (_, logs) = http(server.port, "GET", &format!("/api/v1/logs/{id}"), None).unwrap();
    assert!(
        logs.contains("does not support transactions") && logs.contains("transactional: false"),
        "{logs}"
    );
    // Nothing was sent.
    assert!(read_topic(&broker.bootstrap(), "txn", 0).is_empty());
}

#[test]
fn a_hundred_thousand_rows_from_an_ion_file_keep_memory_flat() {
    const N: usize = 100_000;
    let rt = runtime();
    let broker = Broker::start();
    for t in ["big", "big-copy"] {
        rt.block_on(broker.create_topic(t, 1));
    }
    // 1 KiB per record: 100 MiB in all.
    let pad = "x".repeat(1000);
    let values: Vec<String> = (0..N).map(|i| format!("{i:08}{pad}")).collect();
    rt.block_on(produce(&broker.producer(), "big", 1, &values));
    drop(values);
    let bootstrap = broker.bootstrap();
    let flow = format!(
        r#"id: big
namespace: {NS}
tasks:
  - id: consume
    type: io.kestra.plugin.kafka.Consume
    topic: big
    properties:
      bootstrap.servers: {bootstrap}
  - id: produce
    type: io.kestra.plugin.kafka.Produce
    from: "{{{{ outputs.consume.uri }}}}"
    topic: big-copy
    transactional: false
    properties:
      bootstrap.servers: {bootstrap}
"#
    );
    // The batch trigger reads the same records into one batch file.
    let batch = format!(
        r#"id: big-batch
namespace: {NS}
disabled: true
tasks:
  - id: count
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.messagesCount }}}}"
triggers:
  - id: all
    type: io.kestra.plugin.kafka.Trigger
    topic: big
    groupId: big-batch
    interval: PT1S
    properties:
      bootstrap.servers: {bootstrap}
"#
    );
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write_flows(flows.path(), &[("big", flow), ("big-batch", batch.clone())]);
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    let before = peak_rss_mib(server.child.id());
    let id = execute(server.port, "big");
    let e = wait_ended(server.port, &id, Duration::from_secs(300));
    assert_eq!(e["state"]["current"], "SUCCESS", "{e}");
    assert_eq!(e["taskRunList"][0]["outputs"]["messagesCount"], N);
    assert_eq!(e["taskRunList"][1]["outputs"]["messagesCount"], N);
    let (status, body) = http(
        server.port,
        "PUT",
        &format!("/api/v1/flows/{NS}/big-batch"),
        Some(("application/x-yaml", &batch.replace("disabled: true\n", ""))),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let execs = wait_until(server.port, Duration::from_secs(300), "the batch", |e| {
        e.iter().any(|x| x["flowId"] == "big-batch" && ended(x))
    });
    let b = execs.iter().find(|x| x["flowId"] == "big-batch").unwrap();
    assert_eq!(b["trigger"]["variables"]["messagesCount"], N, "{b}");
    let peak = peak_rss_mib(server.child.id());
    eprintln!(
        "peak RSS: {before} MiB before, {peak} MiB after moving {N} records of 1 KiB and reading them into one batch"
    );
    // Holding the file (100 MiB of values, more as rows) would show; bounded buffers do not.
    assert!(
        peak < before + 64,
        "peak RSS grew from {before} to {peak} MiB"
    );
}

#[test]
fn consume_without_a_group_starts_at_since() {
    let rt = runtime();
    let broker = Broker::start();
    rt.block_on(broker.create_topic("dated", 2));
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    rt.block_on(produce(&broker.producer(), "dated", 2, &values));
    let flow = |since: &str| {
        format!(
            r#"id: dated
namespace: {NS}
tasks:
  - id: consume
    type: io.kestra.plugin.kafka.Consume
    topic: dated
    since: "{since}"
    properties:
      bootstrap.servers: {}
"#,
            broker.bootstrap()
        )
    };
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write_flows(flows.path(), &[("dated", flow("2000-01-01T00:00:00Z"))]);
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    let id = execute(server.port, "dated");
    let e = wait_ended(server.port, &id, Duration::from_secs(60));
    assert_eq!(e["taskRunList"][0]["outputs"]["messagesCount"], 20, "{e}");
    // A `since` after every record: nothing, and no wait for more.
    let (status, body) = http(
        server.port,
        "PUT",
        &format!("/api/v1/flows/{NS}/dated"),
        Some(("application/x-yaml", &flow("2999-01-01T00:00:00Z"))),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let id = execute(server.port, "dated");
    let e = wait_ended(server.port, &id, Duration::from_secs(60));
    assert_eq!(e["taskRunList"][0]["outputs"]["messagesCount"], 0, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
