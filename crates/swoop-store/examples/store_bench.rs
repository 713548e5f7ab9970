//! Group-commit throughput of the SQLite store.
//!
//! `cargo run -p swoop-store --release --example store_bench -- [N] [full]`: creates N executions
//! (default 100,000) from 64 concurrent tasks, each create with a dedup key and `Wait` durability
//! and followed by two `Background` saves (RUNNING, then SUCCESS), then flushes and prints
//! creates/s, commits and the average batch size. `full` switches to `synchronous=FULL`.

use std::sync::Arc;
use std::time::Instant;

use swoop_core::{Execution, State};
use swoop_store::{
    Created, DedupKey, Durability, ExecutionStore, SqliteOptions, SqliteStore, Store, SyncMode,
};

const TASKS: usize = 64;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| {
            a.replace(['_', ','], "")
                .parse()
                .expect("N must be a number")
        })
        .unwrap_or(100_000);
    let sync = match args.next().as_deref() {
        Some("full") => SyncMode::Full,
        _ => SyncMode::Normal,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(SqliteOptions {
        path: dir.path().join("swoop.db"),
        sync,
        ..SqliteOptions::default()
    })
    .expect("open the store");

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let count = n / TASKS + usize::from(t < n % TASKS);
        tasks.spawn(async move {
            for i in 0..count {
                let mut e = Execution::new("bench.team", "flow", 1);
                let key = DedupKey {
                    trigger: "bench.team/flow/trigger".into(),
                    key: format!("{t}/{i}"),
                };
                let created = store.create_execution(&e, Some(key)).await.expect("create");
                assert_eq!(created, Created::Created);
                e.state.transition(State::Running);
                store
                    .save_execution(&e, Durability::Background)
                    .await
                    .expect("save");
                e.state.transition(State::Success);
                store
                    .save_execution(&e, Durability::Background)
                    .await
                    .expect("save");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a bench task panicked");
    }
    let created_in = started.elapsed();
    store.flush().await.expect("flush");
    let total = started.elapsed();

    let stats = store.stats();
    let secs = created_in.as_secs_f64();
    println!("sync mode:          {sync:?}");
    println!("executions:         {n} from {TASKS} tasks (+2 background saves each)");
    println!(
        "creates:            {:.0}/s ({:.2} s; {:.2} s with the final flush)",
        n as f64 / secs,
        secs,
        total.as_secs_f64()
    );
    println!("commits:            {}", stats.commits);
    println!(
        "writes:             {} ({} saves coalesced)",
        stats.writes, stats.coalesced
    );
    println!(
        "average batch size: {:.1} writes/commit",
        stats.writes as f64 / stats.commits.max(1) as f64
    );
}
