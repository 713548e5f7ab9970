//! The MQTT realtime trigger through the shared realtime-source conformance suite, against a
//! real mosquitto (CI installs it with apt): with MQTT 3.1.1 (the default), and MQTT 5 in
//! [`v5`].

#![cfg(feature = "mqtt")]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::conformance::SourceFixture;
use common::free_port;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// A mosquitto on loopback with persistence in a temporary directory, killed when dropped.
struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    publishes: u32,
    /// The trigger's `mqttVersion` line, if any.
    version_line: &'static str,
}

fn mosquitto_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("mosquitto")
    }
}

impl Mosquitto {
    fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    fn start_v5() -> Mosquitto {
        Mosquitto::start_with("    mqttVersion: V5\n")
    }

    fn start_with(version_line: &'static str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("mosquitto dir");
        let port = free_port();
        let config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             user root\n\
             persistence true\n\
             persistence_location {}/\n\
             max_queued_messages 100000\n\
             max_inflight_messages 100\n\
             log_dest file {}/mosquitto.log\n",
            dir.path().display(),
            dir.path().display(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("mosquitto.conf");
        let mut m = Mosquitto {
            dir,
            port,
            child: None,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            publishes: 0,
            version_line,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (install it: apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mosquitto exited: {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto does not accept connections: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// SIGTERM (mosquitto saves its persistence file), then waits for the exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl SourceFixture for Mosquitto {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.mqtt.RealtimeTrigger\n    server: tcp://127.0.0.1:{}\n    clientId: swoop-{channel}\n    topic: {channel}\n    qos: 1\n    serdeType: JSON\n{}{extra}",
            self.port, self.version_line
        )
    }

    /// QoS 1 publishes; returns once the broker acknowledged every one.
    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        self.publishes += 1;
        let mut options = MqttOptions::new(
            format!("fixture-{}-{}", std::process::id(), self.publishes),
            "127.0.0.1",
            self.port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let topic = channel.to_string();
        let payloads = payloads.to_vec();
        let n = payloads.len();
        self.rt.block_on(async move {
            let publisher = client.clone();
            let publishing = tokio::spawn(async move {
                for p in payloads {
                    publisher
                        .publish(&topic, QoS::AtLeastOnce, false, p)
                        .await
                        .expect("publish");
                }
            });
            let mut acked = 0;
            while acked < n {
                match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("publishing to mosquitto: {e}"),
                    Err(_) => panic!("mosquitto acknowledged {acked} of {n} publishes"),
                }
            }
            publishing.await.expect("publisher");
            client.disconnect().await.expect("disconnect");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(_)) => {}
                }
            }
        });
    }

    fn restart_server(&mut self) {
        self.stop();
        self.spawn();
    }

    fn gives_ids(&self) -> bool {
        false
    }

    fn payload_variable(&self) -> &'static str {
        "payload"
    }
}

conformance_tests!(Mosquitto::start());

/// The same suite with `mqttVersion: V5`.
mod v5 {
    use super::*;

    conformance_tests!(Mosquitto::start_v5());
}
