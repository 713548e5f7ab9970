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
    server: PathBuf,
    /// The server's arguments, for [`MariaDb::restart`].
    args: Vec<String>,
}

/// The options of a server whose row-based binary log names its columns (what change data
/// capture reads).
pub const BINLOG_OPTIONS: &[&str] = &[
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--server-id=1",
];

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
    /// Creates a data directory and starts the server (no binary log); panics with its log
    /// when it cannot.
    pub fn start() -> MariaDb {
        Self::start_with(&["--skip-log-bin"])
    }

    /// As [`MariaDb::start`], with the row-based binary log on (`--log-bin` and
    /// [`BINLOG_OPTIONS`]).
    pub fn start_with_binlog() -> MariaDb {
        let mut options = vec!["--log-bin=binlog"];
        options.extend_from_slice(BINLOG_OPTIONS);
        Self::start_with(&options)
    }

    /// Creates a data directory and starts the server with these extra options.
    pub fn start_with(options: &[&str]) -> MariaDb {
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
        let mut args: Vec<String> = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            "--user=root".to_string(),
            "--bind-address=127.0.0.1".to_string(),
            "--skip-name-resolve".to_string(),
            format!("--port={port}"),
            format!("--socket={}", dir.path().join("mysqld.sock").display()),
            format!("--pid-file={}", dir.path().join("mysqld.pid").display()),
            "--max-connections=300".to_string(),
        ];
        args.extend(engine);
        args.extend(options.iter().map(|o| o.to_string()));
        let child = spawn(&server, &args, dir.path(), port);
        MariaDb {
            child,
            dir,
            port,
            client,
            server,
            args,
        }
    }

    /// Stops the server cleanly (SIGTERM; SIGKILL after 30 s) and starts it again on the same
    /// port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.server, &self.args, self.dir.path(), self.port);
    }

    /// Stops the server cleanly (SIGTERM, then SIGKILL after 30 s); [`MariaDb::restart`]
    /// starts it again.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Starts `mariadbd` with `args` (appending to `dir/mariadb.log`) and waits until it listens.
fn spawn(server: &Path, args: &[String], dir: &Path, port: u16) -> Child {
    let log = dir.join("mariadb.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("open the server log");
    let mut child = Command::new(server)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log handle"))
        .stderr(log_file)
        .spawn()
        .expect("start mariadbd");
    wait_for_listener(&mut child, port, "MariaDB", Duration::from_secs(30), || {
        log_tail(&log, 30)
    });
    child
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
