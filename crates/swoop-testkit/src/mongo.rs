//! A throw-away MongoDB-compatible server: secantusdb (a MongoDB wire-protocol server from PyPI,
//! run as `python -m secantus`) on a free loopback port, its data in a temporary directory,
//! killed on drop.
//!
//! The Python comes from the virtualenv `scripts/install-secantus.sh` makes
//! (`${SWOOP_CACHE:-~/.cache/swoop-ci}/secantus-<version>/bin/python`), or `SWOOP_SECANTUS_PYTHON`.
//! Clients connect with `directConnection=true` (secantusdb is a single node; see [`Mongo::uri`]).
//!
//! With the `mongo-client` feature, [`Mongo`] also reads and writes collections through the
//! `mongodb` driver (`count`, `find`, `insert`, `create_unique_index`) so that tests can check
//! what tasks wrote without a task of their own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, log_tail, wait_for_listener};

/// The secantusdb version `scripts/install-secantus.sh` installs (keep both in step).
pub const SECANTUS_VERSION: &str = "0.7.0b3";

pub struct Mongo {
    dir: TempDir,
    child: Child,
    port: u16,
}

/// `SWOOP_SECANTUS_PYTHON`, or the install script's virtualenv.
fn find_python() -> PathBuf {
    if let Ok(python) = std::env::var("SWOOP_SECANTUS_PYTHON") {
        return PathBuf::from(python);
    }
    let cache = std::env::var_os("SWOOP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/swoop-ci")))
        .unwrap_or_else(|| PathBuf::from(".cache/swoop-ci"));
    let venv = cache.join(format!("secantus-{SECANTUS_VERSION}"));
    if !venv.join(".installed").exists() {
        panic!(
            "secantusdb {SECANTUS_VERSION} is not installed in {}: run scripts/install-secantus.sh (or set SWOOP_SECANTUS_PYTHON to a python that has secantusdb)",
            venv.display()
        );
    }
    venv.join("bin/python")
}

impl Mongo {
    /// Starts a server and waits until it accepts connections; panics with its log when it
    /// cannot.
    pub fn start() -> Mongo {
        let python = find_python();
        let dir = tempfile::Builder::new()
            .prefix("swoop-mongo-")
            .tempdir()
            .expect("a temporary directory");
        // An empty config file: no `secantusd.toml` found elsewhere changes the server.
        let config = dir.path().join("secantusd.toml");
        std::fs::write(&config, "").expect("write secantusd.toml");
        let log = dir.path().join("secantus.log");
        let out = std::fs::File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let port = free_port();
        let child = Command::new(&python)
            .args(["-m", "secantus", "--config"])
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} -m secantus: {e} (run scripts/install-secantus.sh)",
                    python.display()
                )
            });
        let mut mongo = Mongo { dir, child, port };
        let log_path = mongo.log_file();
        wait_for_listener(
            &mut mongo.child,
            port,
            "secantusdb",
            Duration::from_secs(30),
            || log_tail(&log_path, 30),
        );
        mongo
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// The server's output (for failure messages).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("secantus.log")
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file(), 30)
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "mongo-client")]
mod client {
    use bson::Document;
    use mongodb::Client;
    use serde_json::Value;

    use super::Mongo;

    fn document(filter: Value) -> Document {
        match bson::Bson::try_from(filter) {
            Ok(bson::Bson::Document(d)) => d,
            other => panic!("expected a JSON object as a filter or document, got {other:?}"),
        }
    }

    impl Mongo {
        /// A new client for this server (one per call: tests run on runtimes of their own).
        pub async fn client(&self) -> Client {
            Client::with_uri_str(self.uri())
                .await
                .expect("a client for the test server")
        }

        /// How many documents of `database.collection` match `filter` (extended JSON).
        pub async fn count(&self, database: &str, collection: &str, filter: Value) -> u64 {
            self.client()
                .await
                .database(database)
                .collection::<Document>(collection)
                .count_documents(document(filter))
                .await
                .unwrap_or_else(|e| panic!("count {database}.{collection}: {e}"))
        }

        /// The documents of `database.collection` that match `filter`, in natural order, as
        /// relaxed extended JSON (`{"_id": {"$oid": "…"}, …}`).
        pub async fn find(&self, database: &str, collection: &str, filter: Value) -> Vec<Value> {
            let mut cursor = self
                .client()
                .await
                .database(database)
                .collection::<Document>(collection)
                .find(document(filter))
                .await
                .unwrap_or_else(|e| panic!("find in {database}.{collection}: {e}"));
            let mut out = Vec::new();
            // `advance` and `deserialize_current`: the driver's stream-free cursor API.
            while cursor.advance().await.expect("read the cursor") {
                let doc: Document = cursor.deserialize_current().expect("a document");
                out.push(bson::Bson::Document(doc).into_relaxed_extjson());
            }
            out
        }

        /// Inserts `documents` (extended JSON objects) into `database.collection`.
        pub async fn insert(&self, database: &str, collection: &str, documents: Vec<Value>) {
            let docs: Vec<Document> = documents.into_iter().map(document).collect();
            self.client()
                .await
                .database(database)
                .collection::<Document>(collection)
                .insert_many(docs)
                .await
                .unwrap_or_else(|e| panic!("insert into {database}.{collection}: {e}"));
        }

        /// Creates a unique ascending index on `field` of `database.collection`.
        pub async fn create_unique_index(&self, database: &str, collection: &str, field: &str) {
            let index = mongodb::IndexModel::builder()
                .keys(bson::doc! { field: 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build();
            self.client()
                .await
                .database(database)
                .collection::<Document>(collection)
                .create_index(index)
                .await
                .unwrap_or_else(|e| panic!("create a unique index on {field}: {e}"));
        }
    }
}
