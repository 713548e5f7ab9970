//! The NATS JetStream realtime trigger through the shared realtime-source conformance suite,
//! against a real `nats-server -js` (CI installs it with apt), its JetStream state in a
//! temporary directory so a restart keeps the streams and consumers.
//!
//! Events carry their stream sequence as dedup key: no duplicates are allowed after a crash.
//! The trigger uses `serdeType: JSON`, so a payload that is not JSON makes one FAILED
//! execution holding the raw text in `trigger.data`.

#![cfg(feature = "nats")]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::conformance::SourceFixture;
use common::free_port;

/// A `nats-server` with JetStream on loopback, killed when dropped.
struct Nats {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    publishes: u32,
}

fn nats_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("nats-server")
    }
}

/// A stream name for a channel (`[A-Za-z0-9_-]` only).
fn stream_name(channel: &str) -> String {
    channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn nats() -> Nats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut n = Nats {
        dir: tempfile::tempdir().expect("nats dir"),
        port: free_port(),
        child: None,
        rt,
        publishes: 0,
    };
    n.start_server();
    n
}

impl Nats {
    fn start_server(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} did not accept connections within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_server(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: the server shuts down cleanly (its JetStream state is on disk).
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A JetStream context on a fresh client (retried while the server starts).
    async fn jetstream(url: &str) -> jetstream::Context {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match async_nats::connect(url).await {
                Ok(client) => return jetstream::new(client),
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot connect to {url}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl SourceFixture for Nats {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.nats.core.RealtimeTrigger\n    url: {}\n    subject: {channel}\n    serdeType: JSON\n{extra}",
            self.url()
        )
    }

    fn prepare(&mut self, channel: &str) {
        let url = self.url();
        let name = stream_name(channel);
        self.rt.block_on(async {
            let js = Nats::jetstream(&url).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let created = js
                    .get_or_create_stream(jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![channel.to_string()],
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(_) => return,
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "cannot create stream {name}: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        self.publishes += 1;
        let call = self.publishes;
        let url = self.url();
        self.rt.block_on(async {
            let js = Nats::jetstream(&url).await;
            // Each message has its id (`Nats-Msg-Id`), so a retried publish is stored once.
            let publish_one = |i: usize| {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{channel}-{call}-{i}").as_str());
                js.publish_with_headers(channel.to_string(), headers, payloads[i].clone().into())
            };
            for chunk_start in (0..payloads.len()).step_by(250) {
                let chunk_end = (chunk_start + 250).min(payloads.len());
                let mut pending = Vec::new();
                for i in chunk_start..chunk_end {
                    pending.push((i, publish_one(i).await));
                }
                for (i, sent) in pending {
                    let acked = match sent {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if acked {
                        continue;
                    }
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        if let Ok(ack) = publish_one(i).await
                            && ack.await.is_ok()
                        {
                            break;
                        }
                        assert!(Instant::now() < deadline, "cannot publish message {i}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    fn restart_server(&mut self) {
        self.stop_server();
        self.start_server();
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "data"
    }
}

conformance_tests!(nats());
