//! A throw-away Pulsar broker: pulsar-lite (PyPI; a Pulsar-compatible broker on RocksDB, a
//! binary inside the wheel) on a free loopback port, its data in a temporary directory, killed
//! on drop. [`PulsarLite::restart`] kills it (`kill -9`) and starts it again on the same port
//! and data.
//!
//! The binary comes from the virtualenv `scripts/install-pulsar-lite.sh` makes
//! (`${SWOOP_CACHE:-~/.cache/swoop-ci}/pulsar-lite-<version>`), or `SWOOP_PULSAR_LITE`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, log_tail, wait_for_listener};

/// The pulsar-lite version `scripts/install-pulsar-lite.sh` installs (keep both in step).
pub const PULSAR_LITE_VERSION: &str = "0.2.0";

pub struct PulsarLite {
    dir: TempDir,
    child: Child,
    port: u16,
}

/// `SWOOP_PULSAR_LITE`, or the binary in the install script's virtualenv.
fn find_binary() -> PathBuf {
    if let Ok(binary) = std::env::var("SWOOP_PULSAR_LITE") {
        return PathBuf::from(binary);
    }
    let venv = crate::cache_dir().join(format!("pulsar-lite-{PULSAR_LITE_VERSION}"));
    let found = std::fs::read_dir(venv.join("lib"))
        .ok()
        .and_then(|pythons| {
            pythons
                .flatten()
                .map(|p| p.path().join("site-packages/pulsar_lite/bin/pulsar-lite"))
                .find(|b| b.is_file())
        });
    found.unwrap_or_else(|| {
        panic!(
            "pulsar-lite {PULSAR_LITE_VERSION} is not installed in {}: run scripts/install-pulsar-lite.sh (or set SWOOP_PULSAR_LITE to its binary)",
            venv.display()
        )
    })
}

impl PulsarLite {
    /// Starts a broker and waits until it accepts connections; panics with its log when it
    /// cannot.
    pub fn start() -> PulsarLite {
        let dir = tempfile::Builder::new()
            .prefix("swoop-pulsar-")
            .tempdir()
            .expect("a temporary directory");
        let port = free_port();
        let child = spawn(&dir, port);
        let mut broker = PulsarLite { dir, child, port };
        broker.wait();
        broker
    }

    /// `kill -9`, then the broker again on the same port with the same data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.dir, self.port);
        self.wait();
    }

    fn wait(&mut self) {
        let log = self.log_file();
        wait_for_listener(
            &mut self.child,
            self.port,
            "pulsar-lite",
            Duration::from_secs(30),
            || log_tail(&log, 30),
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pulsar://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.port)
    }

    /// The broker's output (for failure messages).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("pulsar-lite.log")
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file(), 30)
    }
}

fn spawn(dir: &TempDir, port: u16) -> Child {
    let binary = find_binary();
    // Without `[metrics] enabled = false` it would bind a metrics port on 0.0.0.0:8080.
    let config = dir.path().join("pulsar-lite.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:{port}\"\ndb_path = \"{}\"\n\n[metrics]\nenabled = false\n",
            data.display()
        ),
    )
    .expect("write pulsar-lite.toml");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("pulsar-lite.log"))
        .expect("open the broker log");
    let err = out.try_clone().expect("clone the log handle");
    Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run scripts/install-pulsar-lite.sh)",
                binary.display()
            )
        })
}

impl Drop for PulsarLite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "pulsar-lite's last lines:\n{}",
                log_tail(&self.log_file(), 60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
