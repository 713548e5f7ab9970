//! Test-only fixtures: each module starts one kind of real server as a child process of the
//! test, on a free loopback port, in a temporary directory, and stops it when dropped.
//! `.ci/run` (through `scripts/install-test-deps.sh`) installs what they need.
//!
//! - [`postgres`] — PostgreSQL (`initdb` as the `postgres` user when run as root).
//! - [`mariadb`] — MariaDB.
//! - [`mongo`] — secantusdb, a MongoDB wire-protocol server from PyPI.
//! - [`pulsar`] — pulsar-lite, a Pulsar-compatible broker from PyPI.
//! - [`cql`] — a CQL (Cassandra) server: the `swoop-cql-test-server` binary of this crate.

pub mod cql;
pub mod mariadb;
pub mod mongo;
pub mod postgres;
pub mod pulsar;

use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The cache folder the install scripts install into: `$SWOOP_CACHE`, default
/// `~/.cache/swoop-ci`.
pub fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("SWOOP_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/swoop-ci"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from(".cache/swoop-ci"))
}

/// The last `lines` lines of a server's output file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `child` accepts connections on `port`; panics with `what` and `log()` if it
/// exits first or takes longer than `within`.
pub fn wait_for_listener(
    child: &mut Child,
    port: u16,
    what: &str,
    within: Duration,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} on port {port} exited ({status}):\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} on port {port} did not accept connections within {within:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
