//! The PostgreSQL CDC realtime trigger through the shared realtime-source conformance suite,
//! against a real PostgreSQL (`wal_level = logical`) started by swoop-testkit.
//!
//! A channel is a table (`n`, `sent_us`, `burst` columns); publishing inserts the payloads'
//! fields as rows, so `trigger.data` holds them (`trigger.data | jq('.n')`). Row changes carry
//! their LSN and row index: no duplicates are allowed across a crash.
//!
//! `poison_event_fails_alone` does not apply and is not run: a row change always decodes (its
//! values arrive as PostgreSQL's text forms, and a payload that is not JSON cannot be
//! inserted as a row to begin with). The other checks are the suite's, listed by hand.

#![cfg(feature = "postgres-cdc")]

mod common;

use common::conformance::{self, SourceFixture};
use swoop_testkit::postgres::Postgres;

struct CdcFixture {
    pg: Postgres,
    runtime: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
}

fn cdc() -> CdcFixture {
    let pg = Postgres::start_logical();
    pg.create_database("conformance");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the publishing client");
    CdcFixture {
        pg,
        runtime,
        client: None,
    }
}

/// A channel's table name (`conf-basic` → `conf_basic`).
fn table(channel: &str) -> String {
    channel.replace('-', "_")
}

impl CdcFixture {
    fn connect(&mut self) {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let url = format!(
                "host=127.0.0.1 port={} user=postgres dbname=conformance",
                self.pg.port()
            );
            let (client, connection) = self
                .runtime
                .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
                .expect("the publishing client connects");
            self.runtime.spawn(connection);
            self.client = Some(client);
        }
    }
}

impl SourceFixture for CdcFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        let t = table(channel);
        format!(
            "  - id: events\n    type: io.kestra.plugin.debezium.postgres.RealtimeTrigger\n    hostname: 127.0.0.1\n    port: {}\n    username: postgres\n    database: conformance\n    slotName: {t}\n    publicationName: {t}\n    includedTables: public.{t}\n{extra}",
            self.pg.port()
        )
    }

    fn prepare(&mut self, channel: &str) {
        self.pg.psql(
            "conformance",
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, n bigint, sent_us bigint, burst boolean)",
                table(channel)
            ),
        );
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let sql = format!(
            "INSERT INTO {t} (n, sent_us, burst) SELECT n, sent_us, burst FROM json_populate_recordset(NULL::{t}, $1::text::json)",
            t = table(channel)
        );
        for chunk in payloads.chunks(5000) {
            let rows: Vec<&str> = chunk
                .iter()
                .map(|p| std::str::from_utf8(p).expect("JSON payloads"))
                .collect();
            let json = format!("[{}]", rows.join(","));
            self.connect();
            let client = self.client.as_ref().expect("connected");
            let inserted = self.runtime.block_on(client.execute(&sql, &[&json]));
            assert_eq!(inserted.expect("the rows are inserted"), chunk.len() as u64);
        }
    }

    fn restart_server(&mut self) {
        self.client = None;
        self.pg.restart();
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
    conformance::events_become_executions(&mut cdc());
}

#[test]
fn kill_9_loses_nothing() {
    conformance::kill_9_loses_nothing(&mut cdc());
}

#[test]
fn server_restart_reconnects() {
    conformance::server_restart_reconnects(&mut cdc());
}

#[test]
fn rejected_events_fail_alone() {
    conformance::rejected_events_fail_alone(&mut cdc());
}

#[test]
fn max_in_flight_bounds_executions() {
    conformance::max_in_flight_bounds_executions(&mut cdc());
}

#[test]
#[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS, BURST)"]
fn bench_fixed_rate() {
    conformance::bench_fixed_rate(&mut cdc());
}

#[test]
#[ignore = "a benchmark, run by hand with --ignored --nocapture (RATE, SECONDS)"]
fn bench_source_alone() {
    conformance::bench_source_alone(&mut cdc());
}
