//! The MySQL CDC realtime trigger through the shared realtime-source conformance suite, against
//! a real MariaDB with the row-based binlog on (swoop-testkit's `MariaDb::start_with_binlog`).
//! Publishing a payload is inserting a row whose columns carry its fields (`n`, `sent_us`,
//! `burst`, a BIT(1), which shows as a boolean) into the check's table; the payload variable
//! is `trigger.data` (INLINE).
//!
//! Rows carry ids (GTID and row index): no duplicates are allowed across a crash.
//!
//! Not run here: `poison_event_fails_alone`. A row change always decodes — the binlog is typed
//! and the table map names every column — so there is no undecodable payload to publish; a
//! value the reader cannot decode (a compressed or partial-JSON row event) stops the trigger
//! with a fatal error naming the server setting instead, since skipping it would lose a change.

#![cfg(feature = "mysql-cdc")]

mod common;

use common::conformance::SourceFixture;
use serde_json::Value;
use swoop_testkit::mariadb::MariaDb;

struct MysqlFixture {
    db: MariaDb,
}

fn mariadb() -> MysqlFixture {
    let db = MariaDb::start_with_binlog();
    db.sql("CREATE DATABASE conf");
    MysqlFixture { db }
}

fn table(channel: &str) -> String {
    channel.replace('-', "_")
}

impl SourceFixture for MysqlFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.debezium.mysql.RealtimeTrigger\n    hostname: 127.0.0.1\n    port: \"{}\"\n    username: root\n    serverId: \"5400\"\n    includedTables: conf\\.{}\n{extra}",
            self.db.port(),
            table(channel)
        )
    }

    fn prepare(&mut self, channel: &str) {
        self.db.sql(&format!(
            "CREATE TABLE IF NOT EXISTS conf.{} (id BIGINT AUTO_INCREMENT PRIMARY KEY, n BIGINT, sent_us BIGINT, burst BIT(1))",
            table(channel)
        ));
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        for chunk in payloads.chunks(5000) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|p| {
                    let v: Value =
                        serde_json::from_slice(p).expect("the suite's payloads are JSON");
                    let col = |k: &str| match &v[k] {
                        Value::Null => "NULL".to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => other.to_string(),
                    };
                    format!("({}, {}, {})", col("n"), col("sent_us"), col("burst"))
                })
                .collect();
            self.db.sql(&format!(
                "INSERT INTO conf.{} (n, sent_us, burst) VALUES {}",
                table(channel),
                rows.join(",")
            ));
        }
    }

    fn restart_server(&mut self) {
        self.db.restart();
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "data"
    }
}

#[test]
fn events_become_executions() {
    common::conformance::events_become_executions(&mut mariadb());
}

#[test]
fn kill_9_loses_nothing() {
    common::conformance::kill_9_loses_nothing(&mut mariadb());
}

#[test]
fn server_restart_reconnects() {
    common::conformance::server_restart_reconnects(&mut mariadb());
}

#[test]
fn rejected_events_fail_alone() {
    common::conformance::rejected_events_fail_alone(&mut mariadb());
}

#[test]
fn max_in_flight_bounds_executions() {
    common::conformance::max_in_flight_bounds_executions(&mut mariadb());
}

#[test]
#[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS, BURST)"]
fn bench_fixed_rate() {
    common::conformance::bench_fixed_rate(&mut mariadb());
}

#[test]
#[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS)"]
fn bench_source_alone() {
    common::conformance::bench_source_alone(&mut mariadb());
}
