//! The Pub/Sub realtime trigger through the shared realtime-source conformance suite, against
//! Google's Pub/Sub emulator (part of the Google Cloud SDK, preinstalled on these machines;
//! `$SWOOP_PUBSUB_EMULATOR` points elsewhere), one per test on a free loopback port.
//!
//! Every Pub/Sub message has a `messageId`, so no duplicates are allowed after a crash. The
//! emulator keeps its topics and subscriptions in memory: after `restart_server` the fixture
//! creates them again, and the suite's restart check publishes its second half after the
//! restart (the first half was consumed before it).

#![cfg(feature = "pubsub")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::conformance::SourceFixture;
use common::{free_port, log_tail, wait_for_listener};
use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;

const PROJECT: &str = "swoop-test";

/// Where the emulator is: `$SWOOP_PUBSUB_EMULATOR`, else the Google Cloud SDK's place.
fn emulator_binary() -> PathBuf {
    std::env::var("SWOOP_PUBSUB_EMULATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(
                "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
            )
        })
}

struct Emulator {
    port: u16,
    dir: tempfile::TempDir,
    server: Child,
    runtime: tokio::runtime::Runtime,
    channels: Vec<String>,
    publishers: HashMap<String, Publisher>,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("emulator.out")
}

fn start_server(port: u16, dir: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("emulator log");
    let binary = emulator_binary();
    let mut child = Command::new(&binary)
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("emulator log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the Pub/Sub emulator {} does not start ({e}); it comes with the Google Cloud SDK (set SWOOP_PUBSUB_EMULATOR)",
                binary.display()
            )
        });
    wait_for_listener(
        &mut child,
        port,
        "the Pub/Sub emulator",
        Duration::from_secs(120),
        || log_tail(&log_path(dir), 40),
    );
    child
}

fn emulator() -> Emulator {
    let port = free_port();
    let dir = tempfile::tempdir().expect("emulator dir");
    let server = start_server(port, dir.path());
    Emulator {
        port,
        dir,
        server,
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
        channels: Vec::new(),
        publishers: HashMap::new(),
    }
}

fn credentials() -> Credentials {
    anonymous::Builder::new().build()
}

fn topic(channel: &str) -> String {
    format!("projects/{PROJECT}/topics/{channel}")
}

fn subscription(channel: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{channel}-swoop")
}

impl Emulator {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates the channel's topic and the trigger's subscription (the trigger would create
    /// the subscription too, but only messages published after that reach it).
    fn create(&self, channel: &str) {
        let endpoint = self.endpoint();
        self.runtime.block_on(async {
            let topics = TopicAdmin::builder()
                .with_endpoint(endpoint.clone())
                .with_credentials(credentials())
                .build()
                .await
                .expect("topic admin");
            topics
                .create_topic()
                .set_name(topic(channel))
                .send()
                .await
                .unwrap_or_else(|e| panic!("create the topic {channel}: {e}"));
            let subscriptions = SubscriptionAdmin::builder()
                .with_endpoint(endpoint)
                .with_credentials(credentials())
                .build()
                .await
                .expect("subscription admin");
            let created = subscriptions
                .create_subscription()
                .set_name(subscription(channel))
                .set_topic(topic(channel))
                .send()
                .await;
            match created {
                Ok(_) => {}
                // The trigger, reconnecting, may have created it first.
                Err(e) if e.status().map(|s| s.code) == Some(Code::AlreadyExists) => {}
                Err(e) => panic!("create the subscription of {channel}: {e}"),
            }
        });
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl SourceFixture for Emulator {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events
    type: io.kestra.plugin.gcp.pubsub.RealtimeTrigger
    projectId: {PROJECT}
    topic: {channel}
    subscription: {channel}-swoop
    emulatorHost: 127.0.0.1:{port}
    serdeType: JSON
{extra}",
            port = self.port,
        )
    }

    fn prepare(&mut self, channel: &str) {
        self.create(channel);
        self.channels.push(channel.to_string());
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let endpoint = self.endpoint();
        let publishers = &mut self.publishers;
        self.runtime.block_on(async {
            if !publishers.contains_key(channel) {
                let publisher = Publisher::builder(topic(channel))
                    .with_endpoint(endpoint)
                    .with_credentials(credentials())
                    .build()
                    .await
                    .expect("publisher");
                publishers.insert(channel.to_string(), publisher);
            }
            let publisher = &publishers[channel];
            let sent: Vec<_> = payloads
                .iter()
                .map(|p| publisher.publish(Message::new().set_data(p.clone())))
                .collect();
            for message in sent {
                message
                    .await
                    .unwrap_or_else(|e| panic!("publish to {channel}: {e}"));
            }
        });
    }

    fn restart_server(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        self.publishers.clear();
        self.server = start_server(self.port, self.dir.path());
        // The emulator keeps nothing across a restart.
        for channel in self.channels.clone() {
            self.create(&channel);
        }
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "data"
    }
}

conformance_tests!(emulator());
