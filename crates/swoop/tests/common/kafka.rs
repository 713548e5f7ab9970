//! A real Kafka-compatible broker for tests: `tansu` (installed by `scripts/install-tansu.sh`)
//! started on a free loopback port with its own SQLite data folder, plus a producer and topic
//! helpers on rdkafka.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::free_port;

/// Where the broker binary is: `$SWOOP_TANSU`, else the install script's cache folder, else PATH.
fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SWOOP_TANSU") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SWOOP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/swoop-ci")
        });
    let cached = cache.join("tansu-0.6.0/bin/tansu");
    if cached.exists() {
        return cached;
    }
    which("tansu").unwrap_or_else(|| {
        panic!("the test broker `tansu` is not installed: run scripts/install-tansu.sh (or set SWOOP_TANSU)")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("broker folder");
        let mut broker = Broker {
            child: None,
            port: free_port(),
            dir,
        };
        broker.launch();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Produces `values` to `topic`, keyed `k{i}`, round-robin over `partitions`; waits for every
/// delivery.
pub async fn produce(producer: &FutureProducer, topic: &str, partitions: i32, values: &[String]) {
    let mut pending = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(value)
            .partition(i as i32 % partitions);
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("cannot queue record {i}: {e}"));
        pending.push(delivery);
    }
    for (i, p) in pending.into_iter().enumerate() {
        match p.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("record {i} not delivered: {e}"),
            Err(_) => panic!("record {i}: delivery cancelled"),
        }
    }
}

/// A broker with a runtime of its own, for the blocking conformance fixtures of the sources
/// that read Kafka topics (topics of 2 partitions; payloads produced as text).
pub struct TopicServer {
    pub broker: Broker,
    rt: tokio::runtime::Runtime,
}

impl TopicServer {
    pub fn start() -> TopicServer {
        TopicServer {
            broker: Broker::start(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn create_topic(&self, topic: &str) {
        self.rt.block_on(self.broker.create_topic(topic, 2));
    }

    pub fn publish(&self, topic: &str, payloads: &[Vec<u8>]) {
        let values: Vec<String> = payloads
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        self.rt
            .block_on(produce(&self.broker.producer(), topic, 2, &values));
    }
}
