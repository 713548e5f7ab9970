//! The Redis list realtime trigger through the shared realtime-source conformance suite,
//! against a real `redis-server` (append-only, so a restart keeps the lists).
//!
//! Redis list elements have no ids: duplicates are allowed after a crash, losses are not.

#![cfg(feature = "redis")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::conformance::SourceFixture;
use common::free_port;

struct RedisFixture {
    port: u16,
    dir: tempfile::TempDir,
    server: Child,
}

fn start_server(port: u16, dir: &Path) -> Child {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "yes", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server starts (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(reply) = command(port, &[b"PING"])
            && reply == "+PONG"
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server on port {port} did not answer PING within 30 s");
}

/// Sends one command (RESP) and returns the first line of the reply.
fn command(port: u16, args: &[&[u8]]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

fn redis() -> RedisFixture {
    let port = free_port();
    let dir = tempfile::tempdir().expect("redis dir");
    let server = start_server(port, dir.path());
    RedisFixture { port, dir, server }
}

impl RedisFixture {
    fn stop(&mut self) {
        // SIGTERM: redis flushes its append-only file and exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for RedisFixture {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl SourceFixture for RedisFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.redis.list.RealtimeTrigger\n    url: redis://127.0.0.1:{}/0\n    key: {channel}\n    serdeType: JSON\n{extra}",
            self.port
        )
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let mut args: Vec<&[u8]> = vec![b"RPUSH", channel.as_bytes()];
        args.extend(payloads.iter().map(Vec::as_slice));
        let reply = command(self.port, &args).expect("RPUSH");
        assert!(reply.starts_with(':'), "RPUSH: {reply}");
    }

    fn restart_server(&mut self) {
        self.stop();
        self.server = start_server(self.port, self.dir.path());
    }

    fn gives_ids(&self) -> bool {
        false
    }

    fn payload_variable(&self) -> &'static str {
        "value"
    }
}

conformance_tests!(redis());
