//! Several `swoop server --db postgres://…` nodes on one real PostgreSQL, for the cluster tests
//! and the cluster bench: start, kill, restart and freeze nodes, produce Kafka events at a pace,
//! and read counts from PostgreSQL itself (psql).

use std::process::Command;
use std::time::{Duration, Instant};

use super::kafka::Broker;
use super::{Server, free_port, http, json};
use swoop_testkit::postgres::Postgres;

pub const NS: &str = "cluster.test";
pub const TRIGGER: &str = "cluster.test/orders/kafka";
/// The liveness timeout the nodes run with.
pub const LIVENESS: &str = "PT2S";

/// Held by each test while its nodes run: three nodes at 1,000 events/s use both cores, and two
/// such tests at once would make heartbeats late for reasons the tests do not study.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn orders_flow(bootstrap: &str) -> String {
    format!(
        r#"id: orders
namespace: {NS}
triggers:
  - id: kafka
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: orders
    groupId: swoop-cluster
    properties:
      bootstrap.servers: {bootstrap}
      auto.offset.reset: earliest
tasks:
  - id: echo
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.value }}}}"
"#
    )
}

pub const SLOW_FLOW: &str = r#"id: slow
namespace: cluster.test
tasks:
  - id: wait
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT4S
  - id: done
    type: io.kestra.plugin.core.debug.Return
    format: "done {{ execution.id }}"
"#;

/// One node's process and what it needs to start again under its name.
pub struct NodeProc {
    pub name: String,
    pub port: u16,
    pub data: tempfile::TempDir,
    pub server: Option<Server>,
}

/// Fields drop in order: the nodes stop before the database does.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub pg: Postgres,
    pub url: String,
    pub flows: tempfile::TempDir,
}

impl Cluster {
    pub fn start(flows: &[(&str, String)], names: &[&str]) -> Cluster {
        let pg = Postgres::start();
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
        let dir = tempfile::tempdir().unwrap();
        for (file, source) in flows {
            std::fs::write(dir.path().join(file), source).unwrap();
        }
        let mut cluster = Cluster {
            pg,
            url,
            flows: dir,
            nodes: Vec::new(),
        };
        for name in names {
            cluster.add(name, &[]);
        }
        cluster
    }

    pub fn add(&mut self, name: &str, extra: &[&str]) {
        let mut node = NodeProc {
            name: name.to_string(),
            port: free_port(),
            data: tempfile::tempdir().unwrap(),
            server: None,
        };
        node.server = Some(self.launch(&node, extra));
        self.nodes.push(node);
    }

    pub fn launch(&self, node: &NodeProc, extra: &[&str]) -> Server {
        let mut args = vec![
            "--db",
            &self.url,
            "--node-name",
            &node.name,
            "--heartbeat-interval",
            "PT0.2S",
            "--liveness-timeout",
            LIVENESS,
            "--initial-delay",
            "PT0S",
            "--termination-grace-period",
            "PT5S",
        ];
        args.extend_from_slice(extra);
        Server::start_with_args(
            node.data.path(),
            Some(self.flows.path()),
            node.port,
            &[],
            &args,
        )
    }

    pub fn node(&mut self, name: &str) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a node of this name")
    }

    /// A node that is up, other than `not`.
    pub fn live_port(&self, not: Option<&str>) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.server.is_some() && Some(n.name.as_str()) != not)
            .expect("a live node")
            .port
    }

    /// The nodes as `GET /api/v1/cluster/nodes` shows them, asked of a live node.
    pub fn nodes_view(&self, not: Option<&str>) -> Vec<serde_json::Value> {
        let (status, body) = http(self.live_port(not), "GET", "/api/v1/cluster/nodes", None)
            .expect("the nodes API answers");
        assert_eq!(status, 200, "{body}");
        json(&body)["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The name of the RUNNING node that runs `trigger`, waiting for one (bounded).
    pub fn owner_of(&self, trigger: &str, not: Option<&str>, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let owner = self.nodes_view(not).into_iter().find(|n| {
                n["state"] == "RUNNING"
                    && Some(n["name"].as_str().unwrap_or_default()) != not
                    && n["triggers"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == trigger))
            });
            if let Some(n) = owner {
                return n["name"].as_str().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no live node runs {trigger} within {within:?}: {:?}",
                self.nodes_view(not)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql("postgres", sql)
    }

    /// (executions, distinct event values, ended ones) of the orders flow.
    pub fn counts(&self) -> (u64, u64, u64) {
        let out = self.sql(
            "SELECT count(*), count(DISTINCT doc::json #>> '{trigger,variables,value}'), \
             count(*) FILTER (WHERE finished) FROM executions WHERE flow_id = 'orders'",
        );
        let parts: Vec<u64> = out
            .trim()
            .split('|')
            .map(|p| p.parse().expect("a count"))
            .collect();
        (parts[0], parts[1], parts[2])
    }

    /// Waits until `expected` events each have one ended execution (bounded); panics on a
    /// duplicate.
    pub fn wait_all_ended(&self, expected: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (all, distinct, ended) = self.counts();
            assert_eq!(
                all, distinct,
                "duplicate executions: {all} for {distinct} events"
            );
            if all == expected && ended == expected {
                let bad = self.sql(
                    "SELECT count(*) FROM executions WHERE flow_id = 'orders' AND state <> 'SUCCESS'",
                );
                assert_eq!(bad.trim(), "0", "executions that did not succeed");
                return;
            }
            assert!(all <= expected, "{all} executions for {expected} events");
            assert!(
                Instant::now() < deadline,
                "after {within:?}: {all} executions ({ended} ended) for {expected} events"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Cluster {
    /// Waits until the orders flow has at least `n` executions (bounded).
    pub fn wait_executions(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.counts().0 < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} executions after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of a node: no shutdown code runs.
    pub fn kill_9(&mut self, name: &str) {
        let node = self.node(name);
        if let Some(mut server) = node.server.take() {
            server.kill_9();
        }
    }
}

/// Three nodes with the orders flow, its owner, and `events` events being produced at 1,000/s,
/// the first 2,000 of them already executions: the stream is mid-way.
pub fn mid_stream(events: usize) -> (Broker, Cluster, String, std::thread::JoinHandle<()>) {
    let (broker, cluster) = start_kafka_cluster();
    let owner = cluster.owner_of(TRIGGER, None, Duration::from_secs(30));
    let producing = produce_paced(&broker, events, 1_000);
    cluster.wait_executions(2_000.min(events as u64), Duration::from_secs(60));
    (broker, cluster, owner, producing)
}

pub fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig}");
}

/// Produces `count` events to `orders` at about `rate` per second on a thread of its own; each
/// value is `e<i>:<µs since the epoch when sent>`.
pub fn produce_paced(broker: &Broker, count: usize, rate: usize) -> std::thread::JoinHandle<()> {
    let bootstrap = broker.bootstrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "2")
                .set("message.timeout.ms", "60000")
                .create()
                .expect("producer");
            let per_tick = (rate / 100).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0;
            while sent < count {
                tick.tick().await;
                let n = per_tick.min(count - sent);
                // `e<i>:<µs since the epoch when sent>`: unique, and timed for the bench.
                let now = chrono::Utc::now().timestamp_micros();
                let values: Vec<String> = (sent..sent + n).map(|i| format!("e{i}:{now}")).collect();
                super::kafka::produce(&producer, "orders", 2, &values).await;
                sent += n;
            }
        });
    })
}

impl Cluster {
    /// Starts a stopped node again under its name, port and data folder.
    pub fn relaunch(&mut self, name: &str) {
        let i = self.nodes.iter().position(|n| n.name == name).unwrap();
        let server = self.launch(&self.nodes[i], &[]);
        self.nodes[i].server = Some(server);
    }
}

pub fn start_kafka_cluster() -> (Broker, Cluster) {
    let broker = Broker::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(broker.create_topic("orders", 2));
    let cluster = Cluster::start(
        &[("orders.yml", orders_flow(&broker.bootstrap()))],
        &["n1", "n2", "n3"],
    );
    (broker, cluster)
}
