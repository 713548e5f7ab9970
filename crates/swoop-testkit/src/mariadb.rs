//! A throw-away MariaDB server: `mariadb-install-db` into a temporary directory, then `mariadbd`
//! as a child process on a free loopback port (root over TCP, no password), killed on drop.
//!
//! The binaries come from the Debian `mariadb-server` package (or `SWOOP_MARIADB_BIN`, a folder
//! holding `mariadbd`, `mariadb-install-db` and `mariadb`); `scripts/install-sql-servers.sh`
//! installs it. Setup SQL runs through the `mariadb` client ([`MariaDb::sql`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, log_tail, wait_for_listener};

/// The superuser (no password over TCP from 127.0.0.1).
pub const USER: &str = "root";

pub struct MariaDb {
    child: Child,
    dir: TempDir,
    port: u16,
    client: PathBuf,
}

/// `name` from `SWOOP_MARIADB_BIN`, else the first of `defaults` that exists.
fn find(name: &str, defaults: &[&str]) -> PathBuf {
    if let Ok(dir) = std::env::var("SWOOP_MARIADB_BIN") {
        return Path::new(&dir).join(name);
    }
    defaults
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "MariaDB is not installed (no {name} in {defaults:?}): run scripts/install-sql-servers.sh, or set SWOOP_MARIADB_BIN"
            )
        })
}

impl MariaDb {
    /// Creates a data directory and starts the server; panics with its log when it cannot.
    pub fn start() -> MariaDb {
        let server = find("mariadbd", &["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]);
        let install = find("mariadb-install-db", &["/usr/bin/mariadb-install-db"]);
        let client = find("mariadb", &["/usr/bin/mariadb"]);
        let dir = tempfile::Builder::new()
            .prefix("swoop-mariadb-")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().join("data");
        let log = dir.path().join("mariadb.log");
        // Its own tmpdir: parallel servers (and `mariadb-install-db` runs) would otherwise
        // clash over temporary table names in /tmp.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("create the server's tmpdir");
        let engine = [
            "--innodb-buffer-pool-size=32M".to_string(),
            "--innodb-log-file-size=16M".to_string(),
            "--innodb-flush-log-at-trx-commit=0".to_string(),
            format!("--tmpdir={}", tmp.display()),
        ];
        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .args(&engine)
            .output()
            .expect("run mariadb-install-db");
        if !out.status.success() {
            let _ = std::fs::write(&log, [out.stdout, out.stderr].concat());
            panic!("mariadb-install-db failed:\n{}", log_tail(&log, 30));
        }
        let port = free_port();
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut child = Command::new(&server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
            ])
            .arg(format!("--port={port}"))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .args(&engine)
            .args(["--max-connections=300", "--skip-log-bin"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start mariadbd");
        wait_for_listener(&mut child, port, "MariaDB", Duration::from_secs(30), || {
            log_tail(&log, 30)
        });
        MariaDb {
            child,
            dir,
            port,
            client,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the data (and the Unix socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("mariadb.log"), 50)
    }

    /// The JDBC URL of the server without a default database: `jdbc:mysql://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("jdbc:mysql://127.0.0.1:{}/", self.port)
    }

    /// The JDBC URL of `database`.
    pub fn url_for(&self, database: &str) -> String {
        format!("jdbc:mysql://127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its JDBC URL.
    pub fn create_database(&self, database: &str) -> String {
        self.sql(&format!("CREATE DATABASE `{database}`"));
        self.url_for(database)
    }

    /// Runs `sql` (one or more statements) with the `mariadb` client; returns the output rows,
    /// tab-separated, without column names. Panics on error.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(&self.client)
            .args(["--no-defaults", "-N", "-B", "-h", "127.0.0.1", "-u", USER])
            .arg(format!("-P{}", self.port))
            .args(["-e", sql])
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "mariadb failed on `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
