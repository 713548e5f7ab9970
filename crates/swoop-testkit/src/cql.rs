//! A CQL (Cassandra native protocol v4) server for tests: this crate's `swoop-cql-test-server`
//! binary (the in-memory `kassandra` engine behind a shim of the system tables drivers read at
//! connect), started on a free loopback port and killed on drop. [`CqlServer::execute`] and
//! [`CqlServer::execute_script`] run setup CQL (CREATE KEYSPACE, CREATE TABLE, INSERT …) over a
//! minimal protocol client of their own, so a test needs no driver to load its data.
//!
//! Where the binary comes from: cargo does not build a dependency's binaries for a test, so
//! the first `start()` in a test process runs `cargo build -p swoop-testkit --features
//! cql-server --bin swoop-cql-test-server` into the test's own target directory (a no-op when
//! it is up to date; the first time it builds kassandra, about a minute) and uses the binary it
//! leaves next to the test executable's `deps/` folder. `SWOOP_CQL_TEST_SERVER=/path/to/binary`
//! skips the build.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{free_port, log_tail, wait_for_listener};

const BIN: &str = "swoop-cql-test-server";

pub struct CqlServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    credentials: Option<(String, String)>,
    /// The setup connection, opened on first use.
    conn: Mutex<Option<TcpStream>>,
}

impl CqlServer {
    /// A server without authentication.
    pub fn start() -> CqlServer {
        Self::launch(None)
    }

    /// A server that requires these credentials (PasswordAuthenticator).
    pub fn start_with_credentials(username: &str, password: &str) -> CqlServer {
        Self::launch(Some((username.to_owned(), password.to_owned())))
    }

    fn launch(credentials: Option<(String, String)>) -> CqlServer {
        let binary = server_binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("the server log file");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(port.to_string())
            .env("SWOOP_CQL_TRACE", "1");
        if let Some((user, pass)) = &credentials {
            command
                .arg("--username")
                .arg(user)
                .arg("--password")
                .arg(pass);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the server log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        wait_for_listener(&mut child, port, BIN, Duration::from_secs(20), || {
            log_tail(&log_path, 20)
        });
        CqlServer {
            child,
            port,
            dir,
            credentials,
            conn: Mutex::new(None),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's output so far (for failure messages).
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("server.log"), 50)
    }

    /// Runs one CQL statement; an error response comes back as `Err` with its code and message.
    pub fn execute(&self, cql: &str) -> Result<(), String> {
        self.execute_with(cql, &[])
    }

    /// How many requests (QUERY or PREPARE) carried exactly `cql` so far: a statement read in
    /// pages is one request per page. (The server logs each request.)
    pub fn requests_with(&self, cql: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.starts_with("request ") && l.split_once(": ").is_some_and(|(_, t)| t == cql)
            })
            .count()
    }

    /// Runs one CQL statement with `?` markers bound to `values` (for the types CQL text
    /// literals of the test server do not cover: booleans, blobs, floats, timestamps, lists …).
    pub fn execute_with(&self, cql: &str, values: &[Bind]) -> Result<(), String> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(connect(self.port, self.credentials.as_ref())?);
        }
        let stream = guard.as_mut().ok_or("no connection")?;
        let result = query(stream, cql, values);
        if matches!(&result, Err(e) if e.starts_with("io:")) {
            *guard = None;
        }
        result.map_err(|e| format!("{e} (statement: {cql})"))
    }

    /// Runs each `;`-separated statement of `script` in order (a `;` inside quotes does not
    /// split); stops at the first error.
    pub fn execute_script(&self, script: &str) -> Result<(), String> {
        for statement in split_statements(script) {
            self.execute(&statement)?;
        }
        Ok(())
    }
}

impl Drop for CqlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The statements of a script, trimmed, without their `;` and without empty ones.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in script.chars() {
        match (quote, c) {
            (None, ';') => {
                statements.push(std::mem::take(&mut current));
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        current.push(c);
    }
    statements.push(current);
    statements
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The server binary, built once per test process (see the module doc).
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SWOOP_CQL_TEST_SERVER") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        // <target>/<profile>/deps/<test> → <target>/<profile>/swoop-cql-test-server
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("a target directory");
        let binary = profile_dir.join(BIN);
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "swoop-testkit", "--features"])
            .args(["cql-server", "--bin", BIN, "--manifest-path"])
            .arg(&workspace)
            .env("CARGO_TARGET_DIR", target_dir);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        match build.status() {
            Ok(status) if status.success() => {}
            outcome if binary.exists() => eprintln!(
                "warning: building {BIN} failed ({outcome:?}); using the existing {}",
                binary.display()
            ),
            outcome => panic!(
                "cannot build {BIN} ({outcome:?}): run `cargo build -p swoop-testkit --features cql-server --bin {BIN}` or set SWOOP_CQL_TEST_SERVER"
            ),
        }
        binary
    })
}

// The setup client: just enough of protocol v4 for STARTUP, PLAIN auth and QUERY.

const OP_ERROR: u8 = 0x00;
const OP_STARTUP: u8 = 0x01;
const OP_READY: u8 = 0x02;
const OP_AUTHENTICATE: u8 = 0x03;
const OP_QUERY: u8 = 0x07;
const OP_RESULT: u8 = 0x08;
const OP_AUTH_RESPONSE: u8 = 0x0F;
const OP_AUTH_SUCCESS: u8 = 0x10;

fn connect(port: u16, credentials: Option<&(String, String)>) -> Result<TcpStream, String> {
    let io = |e: std::io::Error| format!("io: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(io)?;
    let mut startup = Vec::new();
    startup.extend_from_slice(&1u16.to_be_bytes());
    put_string(&mut startup, "CQL_VERSION");
    put_string(&mut startup, "3.0.0");
    let (opcode, body) = round_trip(&mut stream, OP_STARTUP, &startup)?;
    match opcode {
        OP_READY => Ok(stream),
        OP_AUTHENTICATE => {
            let (user, pass) = credentials.ok_or("the server asks for credentials")?;
            let token = format!("\0{user}\0{pass}");
            let mut auth = Vec::new();
            auth.extend_from_slice(&(token.len() as i32).to_be_bytes());
            auth.extend_from_slice(token.as_bytes());
            let (opcode, body) = round_trip(&mut stream, OP_AUTH_RESPONSE, &auth)?;
            match opcode {
                OP_AUTH_SUCCESS => Ok(stream),
                _ => Err(error_text(opcode, &body)),
            }
        }
        _ => Err(error_text(opcode, &body)),
    }
}

/// A value bound to a `?` marker, in its CQL v4 encoding.
#[derive(Debug, Clone)]
pub enum Bind {
    Null,
    Int(i32),
    BigInt(i64),
    Text(String),
    Bool(bool),
    Blob(Vec<u8>),
    Float(f32),
    Double(f64),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Days since the Unix epoch.
    Date(i32),
    Inet(std::net::IpAddr),
    Uuid(u128),
    /// A list or a set.
    List(Vec<Bind>),
    Map(Vec<(Bind, Bind)>),
    Tuple(Vec<Bind>),
}

impl Bind {
    /// The value as `[bytes]`: its length (-1 for null), then its bytes.
    fn write(&self, out: &mut Vec<u8>) {
        let mut bytes = Vec::new();
        match self {
            Bind::Null => {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                return;
            }
            Bind::Int(v) => bytes.extend_from_slice(&v.to_be_bytes()),
            Bind::BigInt(v) | Bind::Timestamp(v) => bytes.extend_from_slice(&v.to_be_bytes()),
            Bind::Text(s) => bytes.extend_from_slice(s.as_bytes()),
            Bind::Bool(b) => bytes.push(u8::from(*b)),
            Bind::Blob(b) => bytes.extend_from_slice(b),
            Bind::Float(f) => bytes.extend_from_slice(&f.to_be_bytes()),
            Bind::Double(f) => bytes.extend_from_slice(&f.to_be_bytes()),
            Bind::Date(days) => {
                let raw = (i64::from(*days) + (1 << 31)) as u32;
                bytes.extend_from_slice(&raw.to_be_bytes());
            }
            Bind::Inet(std::net::IpAddr::V4(ip)) => bytes.extend_from_slice(&ip.octets()),
            Bind::Inet(std::net::IpAddr::V6(ip)) => bytes.extend_from_slice(&ip.octets()),
            Bind::Uuid(u) => bytes.extend_from_slice(&u.to_be_bytes()),
            Bind::List(items) => {
                bytes.extend_from_slice(&(items.len() as i32).to_be_bytes());
                items.iter().for_each(|i| i.write(&mut bytes));
            }
            Bind::Map(entries) => {
                bytes.extend_from_slice(&(entries.len() as i32).to_be_bytes());
                for (k, v) in entries {
                    k.write(&mut bytes);
                    v.write(&mut bytes);
                }
            }
            Bind::Tuple(items) => items.iter().for_each(|i| i.write(&mut bytes)),
        }
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
}

fn query(stream: &mut TcpStream, cql: &str, values: &[Bind]) -> Result<(), String> {
    let mut body = Vec::new();
    body.extend_from_slice(&(cql.len() as u32).to_be_bytes());
    body.extend_from_slice(cql.as_bytes());
    body.extend_from_slice(&1u16.to_be_bytes()); // consistency ONE
    if values.is_empty() {
        body.push(0); // no flags
    } else {
        body.push(0x01); // VALUES
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        values.iter().for_each(|v| v.write(&mut body));
    }
    let (opcode, body) = round_trip(stream, OP_QUERY, &body)?;
    match opcode {
        OP_RESULT => Ok(()),
        _ => Err(error_text(opcode, &body)),
    }
}

fn round_trip(stream: &mut TcpStream, opcode: u8, body: &[u8]) -> Result<(u8, Vec<u8>), String> {
    let io = |e: std::io::Error| format!("io: {e}");
    let mut frame = vec![0x04, 0, 0, 1, opcode];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).map_err(io)?;
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).map_err(io)?;
    let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    let mut response = vec![0u8; len];
    stream.read_exact(&mut response).map_err(io)?;
    Ok((header[4], response))
}

fn error_text(opcode: u8, body: &[u8]) -> String {
    if opcode != OP_ERROR || body.len() < 6 {
        return format!("unexpected response opcode 0x{opcode:02x}");
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let len = u16::from_be_bytes([body[4], body[5]]) as usize;
    let message = String::from_utf8_lossy(body.get(6..6 + len).unwrap_or_default());
    format!("CQL error 0x{code:04x}: {message}")
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_split_outside_quotes_only() {
        let script = "CREATE KEYSPACE k;\n INSERT INTO k.t (a) VALUES ('x;y');;";
        assert_eq!(
            split_statements(script),
            vec!["CREATE KEYSPACE k", "INSERT INTO k.t (a) VALUES ('x;y')"]
        );
    }
}
