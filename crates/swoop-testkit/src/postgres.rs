//! A throw-away PostgreSQL server: `initdb` into a temporary directory (as the `postgres` user
//! when the tests run as root, because `initdb` refuses root), `pg_ctl start` on a free loopback
//! port with trust authentication and `fsync=off`, `pg_ctl stop -m immediate` on drop.
//!
//! The binaries come from the Debian `postgresql` package (`/usr/lib/postgresql/<version>/bin`,
//! or `SWOOP_PG_BIN`); `scripts/install-sql-servers.sh` installs it when `initdb` is missing.
//! Setup SQL runs through the `psql` client ([`Postgres::psql`]), so tests need no driver.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::{free_port, log_tail};

/// The superuser of the test cluster (trust authentication: no password).
pub const USER: &str = "postgres";

pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// The `postgres` OS user when running as root (initdb and pg_ctl refuse root).
    run_as: Option<&'static str>,
    /// The server settings `pg_ctl start` passes (`-o`), kept for [`Postgres::restart`].
    options: String,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, or `SWOOP_PG_BIN`.
fn find_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("SWOOP_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run scripts/install-sql-servers.sh, or set SWOOP_PG_BIN"
        ),
    }
}

impl Postgres {
    /// Creates a cluster and starts it; panics with the server's log when it cannot.
    pub fn start() -> Postgres {
        Postgres::start_with("")
    }

    /// Like [`Postgres::start`], with `wal_level = logical` and room for replication slots and
    /// WAL senders (for change data capture). Commits are synchronous (still without fsync):
    /// the WAL sender sends only flushed WAL, so asynchronous commits would add up to the WAL
    /// writer's 200 ms to every change's latency.
    pub fn start_logical() -> Postgres {
        Postgres::start_with(
            "-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 -c synchronous_commit=on",
        )
    }

    /// Creates a cluster and starts it with `extra` server settings (`-c name=value …`).
    pub fn start_with(extra: &str) -> Postgres {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("swoop-pg-")
            .tempdir()
            .expect("a temporary directory");
        let run_as = is_root().then_some(USER);
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown {user} {}", dir.path().display());
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            run_as,
            options: String::new(),
        };
        let data = pg.data_dir();
        let init_log = pg.dir.path().join("initdb.log");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            .output()
            .expect("run initdb");
        if !out.status.success() {
            let _ = std::fs::write(&init_log, [out.stdout, out.stderr].concat());
            panic!("initdb failed:\n{}", log_tail(&init_log, 30));
        }
        pg.options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 {extra}",
            pg.port,
            pg.dir.path().display()
        );
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl_start(&self) {
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "30", "-l"])
            .arg(self.log_file())
            .args(["-o", &self.options, "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            status.status.success(),
            "PostgreSQL on port {} did not start:\n{}",
            self.port,
            log_tail(&self.log_file(), 30)
        );
    }

    /// Stops the server (fast shutdown: connections are closed) and starts it again on the
    /// same port with the same data.
    pub fn restart(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "PostgreSQL on port {} did not stop: {}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        self.pg_ctl_start();
    }

    /// A command running `tool` from the PostgreSQL binaries, as the `postgres` user when root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        log_tail(&self.log_file(), 50)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the cluster (and the Unix socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JDBC URL of the `postgres` database: `jdbc:postgresql://127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The JDBC URL of `database`.
    pub fn url_for(&self, database: &str) -> String {
        format!("jdbc:postgresql://127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its JDBC URL.
    pub fn create_database(&self, database: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{database}\""));
        self.url_for(database)
    }

    /// Runs `sql` (one or more statements) in `database` with `psql`, stopping at the first
    /// error; returns the output rows, unaligned, `|`-separated. Panics on error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
