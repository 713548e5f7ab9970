//! Shared helpers for the binary's tests: run `swoop`, start `swoop server local` on a free
//! loopback port, and a minimal blocking HTTP client (enough for JSON requests).

#![allow(dead_code)]

#[cfg(feature = "kafka")]
pub mod cluster;
pub mod conformance;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod redis;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test; `$SWOOP_BIN` overrides it (a bench built in the dev profile then
/// measures the release binary: `SWOOP_BIN=target/release/swoop`).
pub fn swoop() -> Command {
    match std::env::var_os("SWOOP_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_swoop")),
    }
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("swoop runs")
}

#[allow(unused_imports)] // each test binary uses some of them
pub use swoop_testkit::{free_port, log_tail, wait_for_listener};

/// A `swoop server local` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(data_dir: &Path, flows: Option<&Path>, port: u16) -> Server {
        Server::start_with_env(data_dir, flows, port, &[])
    }

    /// [`Server::start`] with extra environment variables (secrets …).
    pub fn start_with_env(
        data_dir: &Path,
        flows: Option<&Path>,
        port: u16,
        env: &[(&str, &str)],
    ) -> Server {
        Server::start_with_args(data_dir, flows, port, env, &[])
    }

    /// [`Server::start_with_env`] with more command-line arguments (`--db …`).
    pub fn start_with_args(
        data_dir: &Path,
        flows: Option<&Path>,
        port: u16,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let mut cmd = swoop();
        cmd.args(["server", "local", "--port", &port.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env("SWOOP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(f) = flows {
            cmd.arg("--flows").arg(f);
        }
        let child = cmd.spawn().expect("server starts");
        let server = Server { child, port };
        server.wait_healthy(Duration::from_secs(30));
        server
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http(self.port, "GET", "/health", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server on port {} not healthy within {within:?}", self.port);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of metric `name` (the exact sample name, e.g. `…_total`) whose labels
/// contain every one of `labels` (`key="value"` pairs), from `GET /metrics`.
pub fn metric(port: u16, name: &str, labels: &[&str]) -> f64 {
    let (status, text) = http(port, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics: {text}");
    text.lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample, rest) = series.split_once('{').unwrap_or((series, ""));
            (sample == name && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (content_type, payload) = body.unwrap_or(("application/json", ""));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Every execution of a namespace, through the API (all pages).
pub fn executions_in(port: u16, namespace: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for page in 1.. {
        let path = format!("/api/v1/executions/search?namespace={namespace}&size=1000&page={page}");
        let (status, body) = http(port, "GET", &path, None).expect("search");
        assert_eq!(status, 200, "{body}");
        let results = json(&body)["results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if results.is_empty() {
            break;
        }
        all.extend(results);
    }
    all
}

/// How many executions a namespace has, through the API.
pub fn total_in(port: u16, namespace: &str) -> u64 {
    let path = format!("/api/v1/executions/search?namespace={namespace}&size=1");
    let (_, body) = http(port, "GET", &path, None).expect("search");
    json(&body)["total"].as_u64().unwrap_or(0)
}

/// Polls `done` every 50 ms until it holds; fails the test, saying `what`, after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}
