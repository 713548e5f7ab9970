//! The SQS realtime trigger through the shared realtime-source conformance suite, against a
//! real SQS-compatible server: moto's (`pip install 'moto[server]'`; `scripts/install-moto.sh`
//! puts it in a cache folder), one per test on a free loopback port.
//!
//! Every SQS message has a `MessageId`, so no duplicates are allowed after a crash. moto keeps
//! its queues in memory: after `restart_server` the fixture creates the queues again, and the
//! suite's restart check publishes its second half after the restart (the first half was
//! consumed before it).

#![cfg(feature = "sqs")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use common::conformance::SourceFixture;
use common::{Server, free_port, http, json, log_tail, total_in, wait_for_listener};

/// moto's default account id, part of its queue URLs.
const ACCOUNT: &str = "123456789012";

/// Where `moto_server` is: `$SWOOP_MOTO_SERVER`, else the install script's cache folder, else
/// PATH.
fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SWOOP_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SWOOP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/swoop-ci")
        });
    let cached = cache.join("moto-5.2.5/bin/moto_server");
    if cached.exists() {
        cached
    } else {
        PathBuf::from("moto_server")
    }
}

struct Moto {
    port: u16,
    dir: tempfile::TempDir,
    server: Child,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sqs::Client,
    queues: Vec<String>,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("moto.out")
}

fn start_server(port: u16, dir: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("moto log");
    let mut child = Command::new(moto_binary())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("moto log"))
        .stderr(out)
        .spawn()
        .expect("moto_server starts (run scripts/install-moto.sh, or set SWOOP_MOTO_SERVER)");
    wait_for_listener(
        &mut child,
        port,
        "moto_server",
        Duration::from_secs(60),
        || log_tail(&log_path(dir), 40),
    );
    child
}

fn moto() -> Moto {
    let port = free_port();
    let dir = tempfile::tempdir().expect("moto dir");
    let server = start_server(port, dir.path());
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "fixture"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    Moto {
        port,
        dir,
        server,
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
        client: aws_sdk_sqs::Client::from_conf(config),
        queues: Vec::new(),
    }
}

impl Moto {
    fn queue_url(&self, queue: &str) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}/{queue}", self.port)
    }

    fn create_queue(&self, queue: &str) {
        self.runtime
            .block_on(self.client.create_queue().queue_name(queue).send())
            .unwrap_or_else(|e| panic!("create the queue {queue}: {e:?}"));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl SourceFixture for Moto {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events
    type: io.kestra.plugin.aws.sqs.RealtimeTrigger
    queueUrl: {url}
    endpointOverride: http://127.0.0.1:{port}
    region: us-east-1
    accessKeyId: test
    secretKeyId: test
    serdeType: JSON
    maxNumberOfMessage: 10
    waitTime: PT5S
    visibilityTimeout: 10
{extra}",
            url = self.queue_url(channel),
            port = self.port,
        )
    }

    fn prepare(&mut self, channel: &str) {
        self.create_queue(channel);
        self.queues.push(channel.to_string());
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let url = self.queue_url(channel);
        self.runtime.block_on(async {
            for chunk in payloads.chunks(10) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, payload)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(String::from_utf8_lossy(payload))
                            .build()
                            .expect("a batch entry")
                    })
                    .collect::<Vec<_>>();
                let sent = self
                    .client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("send to {url}: {e:?}"));
                assert!(sent.failed().is_empty(), "refused: {:?}", sent.failed());
            }
        });
    }

    fn restart_server(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        self.server = start_server(self.port, self.dir.path());
        // moto keeps nothing across a restart.
        for queue in self.queues.clone() {
            self.create_queue(&queue);
        }
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "data"
    }
}

conformance_tests!(moto());

/// Credentials written as `{{ secret('…') }}` (Kestra's own example) are rendered when the
/// trigger connects; a secret that is not set fails the trigger with a message naming it.
#[test]
fn credentials_come_from_secrets() {
    let mut fixture = moto();
    fixture.prepare("conf-secrets");
    let trigger = |namespace: &str, key: &str| {
        format!(
            "id: secrets\nnamespace: {namespace}\ntriggers:\n  - id: events\n    type: io.kestra.plugin.aws.sqs.RealtimeTrigger\n    queueUrl: \"{{{{ secret('SQS_QUEUE_URL') }}}}\"\n    endpointOverride: http://127.0.0.1:{port}\n    region: us-east-1\n    accessKeyId: \"{{{{ secret('{key}') }}}}\"\n    secretKeyId: \"{{{{ secret('SQS_SECRET_KEY') }}}}\"\n    waitTime: PT1S\ntasks:\n  - id: n\n    type: io.kestra.plugin.core.debug.Return\n    format: \"{{{{ trigger.data }}}}\"\n",
            port = fixture.port
        )
    };
    let data = tempfile::tempdir().expect("data dir");
    let flows = tempfile::tempdir().expect("flows dir");
    std::fs::write(
        flows.path().join("ok.yml"),
        trigger("secrets.ok", "SQS_ACCESS_KEY"),
    )
    .unwrap();
    std::fs::write(
        flows.path().join("missing.yml"),
        trigger("secrets.missing", "SQS_NOT_SET"),
    )
    .unwrap();
    let queue_url = fixture.queue_url("conf-secrets");
    let server = Server::start_with_env(
        data.path(),
        Some(flows.path()),
        free_port(),
        &[
            ("SWOOP_SECRET_SQS_QUEUE_URL", queue_url.as_str()),
            ("SWOOP_SECRET_SQS_ACCESS_KEY", "test"),
            ("SWOOP_SECRET_SQS_SECRET_KEY", "test"),
        ],
    );
    let status = |namespace: &str| {
        let (_, body) = http(
            server.port,
            "GET",
            &format!("/api/v1/triggers/search?namespace={namespace}"),
            None,
        )
        .expect("triggers");
        json(&body)["results"][0].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("secrets.missing")["state"] != "FAILED" {
        assert!(Instant::now() < deadline, "{}", status("secrets.missing"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = status("secrets.missing")["lastError"].to_string();
    assert!(error.contains("SWOOP_SECRET_SQS_NOT_SET"), "{error}");

    fixture.publish("conf-secrets", &[b"one".to_vec(), b"two".to_vec()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_in(server.port, "secrets.ok") < 2 {
        assert!(Instant::now() < deadline, "{}", status("secrets.ok"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status("secrets.ok")["state"], "RUNNING");
}
