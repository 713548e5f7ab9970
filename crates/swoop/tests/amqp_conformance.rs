//! The AMQP realtime trigger through the shared realtime-source conformance suite, against a
//! real RabbitMQ (`apt-get install rabbitmq-server`), one node per test on free loopback
//! ports, with its data, logs and Erlang cookie in a temporary directory.
//!
//! The fixture publishes persistent messages to durable queues, publisher-confirmed, each with
//! a unique `message_id`: redeliveries are recognisable, so no duplicates are allowed.

#![cfg(feature = "amqp")]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::conformance::SourceFixture;
use common::free_port;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// How long a node may take to boot (several seconds on an idle machine; tests run in
/// parallel).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

struct RabbitFixture {
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    server: Child,
    runtime: tokio::runtime::Runtime,
    published: u64,
}

/// The server script itself: `/usr/sbin/rabbitmq-server` (Debian) switches to the `rabbitmq`
/// user when run as root, losing the environment that points the node at the test's directory.
fn server_command() -> Command {
    let direct = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if direct.exists() {
        Command::new(direct)
    } else {
        Command::new("rabbitmq-server")
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("server.out")
}

fn start_server(port: u16, dist_port: u16, dir: &Path) -> Child {
    std::fs::create_dir_all(dir.join("mnesia")).expect("mnesia dir");
    std::fs::create_dir_all(dir.join("log")).expect("log dir");
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!("listeners.tcp.default = 127.0.0.1:{port}\ndisk_free_limit.absolute = 1MB\n"),
    )
    .expect("rabbitmq.conf");
    std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("server log");
    let mut child = server_command()
        .current_dir(dir)
        .env("HOME", dir)
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODENAME", format!("swoop{port}@localhost"))
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_PLUGINS_EXPAND_DIR", dir.join("plugins-expand"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
        .env_remove("RABBITMQ_ALLOW_INPUT")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("server log"))
        .stderr(out)
        .spawn()
        .expect("rabbitmq-server starts (apt-get install rabbitmq-server)");
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "rabbitmq-server on port {port} exited ({status}) while booting:\n{}",
                server_log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server_log(dir);
    stop_server(&mut child, dir);
    panic!("rabbitmq-server on port {port} did not listen within {BOOT_TIMEOUT:?}:\n{log}");
}

/// The end of the node's output and logs, for failures.
fn server_log(dir: &Path) -> String {
    let mut text = std::fs::read_to_string(log_path(dir)).unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(dir.join("log")) {
        for entry in entries.flatten() {
            text.push_str(&format!("\n--- {}\n", entry.path().display()));
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// SIGTERM (the script stops the node cleanly), then SIGKILL of the node and the script if it
/// takes too long.
fn stop_server(child: &mut Child, dir: &Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(pid) = std::fs::read_to_string(dir.join("rabbitmq.pid")) {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn rabbitmq() -> RabbitFixture {
    let port = free_port();
    let mut dist_port = free_port();
    while dist_port == port {
        dist_port = free_port();
    }
    let dir = tempfile::tempdir().expect("rabbitmq dir");
    let server = start_server(port, dist_port, dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    RabbitFixture {
        port,
        dist_port,
        dir,
        server,
        runtime,
        published: 0,
    }
}

impl RabbitFixture {
    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Connects (retrying while the node finishes booting).
    async fn connect(url: &str) -> Connection {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("amqp fixture: connect: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot connect to {url}: {e}"),
            }
        }
    }
}

impl Drop for RabbitFixture {
    fn drop(&mut self) {
        stop_server(&mut self.server, self.dir.path());
    }
}

impl SourceFixture for RabbitFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.amqp.RealtimeTrigger\n    url: {}\n    queue: {channel}\n    serdeType: JSON\n{extra}",
            self.url()
        )
    }

    fn prepare(&mut self, channel: &str) {
        let url = self.url();
        self.runtime.block_on(async {
            let connection = Self::connect(&url).await;
            let ch = connection.create_channel().await.expect("channel");
            ch.queue_declare(
                channel.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("queue.declare");
            let _ = connection.close(200, "bye".into()).await;
        });
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let url = self.url();
        let first = self.published;
        self.published += payloads.len() as u64;
        self.runtime.block_on(async {
            let connection = Self::connect(&url).await;
            let ch = connection.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm.select");
            let mut confirms = Vec::with_capacity(payloads.len());
            for (i, payload) in payloads.iter().enumerate() {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(format!("{channel}-{}", first + i as u64).into());
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        channel.into(),
                        BasicPublishOptions::default(),
                        payload,
                        properties,
                    )
                    .await
                    .expect("basic.publish");
                confirms.push(confirm);
            }
            for confirm in confirms {
                let confirmation = confirm.await.expect("publisher confirm");
                assert!(confirmation.is_ack(), "the broker refused a message");
            }
            let _ = connection.close(200, "bye".into()).await;
        });
    }

    fn restart_server(&mut self) {
        stop_server(&mut self.server, self.dir.path());
        self.server = start_server(self.port, self.dist_port, self.dir.path());
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "data"
    }
}

conformance_tests!(rabbitmq());

/// The nack path, on the source alone (no engine): a released event (the trigger stopped
/// before recording it) is given back with `basic.nack` and requeue, so RabbitMQ delivers it
/// again at once, flagged redelivered, while the connection stays open (without the nack it
/// would come back only when the connection closes, or after the broker's 30-minute consumer
/// timeout); a recorded one is acknowledged and never comes back.
#[test]
fn released_events_are_redelivered_at_once() {
    use swoop_core::realtime::{Event, Outcome, RealtimeSource, SourceContext};
    use swoop_plugins::amqp::{AmqpSource, AmqpTriggerConfig};

    let mut fixture = rabbitmq();
    let queue = "conf-nack";
    fixture.prepare(queue);
    fixture.publish(queue, &[br#"{"n": 0}"#.to_vec(), br#"{"n": 1}"#.to_vec()]);
    let config = AmqpTriggerConfig::from_json(&serde_json::json!({
        "url": fixture.url(),
        "queue": queue,
        "serdeType": "JSON",
    }))
    .expect("a valid trigger");
    let url = fixture.url();
    fixture.runtime.block_on(async {
        let source = AmqpSource::new(config);
        let (ctx, mut events, stop) = SourceContext::channel("conformance/nack/events", 16);
        let run = tokio::spawn(async move { source.run(ctx).await });
        async fn next(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
            tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("an event within 5 s")
                .expect("the source runs")
        }
        let n = |e: &Event| e.variables["data"]["n"].as_u64();
        let recorded = next(&mut events).await;
        let released = next(&mut events).await;
        assert_eq!((n(&recorded), n(&released)), (Some(0), Some(1)));
        assert_eq!(released.variables["redelivered"], false);
        let released_id = released.variables["messageId"].clone();
        recorded.ack.settle(Outcome::Created);
        drop(released);

        let again = next(&mut events).await;
        assert_eq!(n(&again), Some(1), "the released event comes back first");
        assert_eq!(again.variables["redelivered"], true);
        assert_eq!(again.variables["messageId"], released_id);
        again.ack.settle(Outcome::Duplicate);

        // The run sends the last acknowledgements and closes before it returns: what it did
        // not acknowledge would be back in the queue now.
        stop.cancel();
        drop(events);
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the run stops within 30 s")
            .expect("joins")
            .expect("a clean stop");
        let connection = RabbitFixture::connect(&url).await;
        let ch = connection.create_channel().await.expect("channel");
        let declared = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue.declare");
        assert_eq!(declared.message_count(), 0, "both messages acknowledged");
        let _ = connection.close(200, "bye".into()).await;
    });
}
