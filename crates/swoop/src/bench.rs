//! `swoop bench`: N executions of a one-Log-task flow through the engine on the SQLite store,
//! at most `--concurrency` in flight. Prints executions/s, latency percentiles from creation to
//! RUNNING and to the end (from the executions' own state histories), and peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use swoop_core::State;
use swoop_engine::NewExecution;
use swoop_store::{ExecutionQuery, SyncMode};
use tokio::sync::Semaphore;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Executions to run.
    #[arg(long, default_value_t = 20_000)]
    executions: usize,
    /// Executions in flight at most.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Store data here instead of a scratch folder.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Sync mode of the store: normal (process-crash safe) or full (power-loss safe).
    #[arg(long, default_value = "normal")]
    sync: String,
    /// The store: `sqlite` or a PostgreSQL URL (`postgres://…`; use an empty database).
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// With a PostgreSQL `--db`: run as a node of the cluster under this name (heartbeats,
    /// fenced writes, as `swoop server` does), with the flow in namespace
    /// `swoop.bench.<name>`, so that several bench processes measure several nodes at once.
    #[arg(long)]
    node_name: Option<String>,
}

const FLOW: &str = r#"
id: bench
namespace: NAMESPACE
tasks:
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: "execution {{ execution.id }}"
"#;

/// Peak resident memory of this process, in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The CPU time this process has used so far (every thread, user and system), from
/// `/proc/self/stat` (clock ticks of 10 ms).
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime: fields 14 and 15 of the line; `rest` starts at field 3.
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Every execution of a namespace, read from the store a page at a time.
pub async fn all_executions(
    store: &dyn swoop_store::Store,
    namespace: &str,
) -> anyhow::Result<Vec<swoop_core::Execution>> {
    let mut all = Vec::new();
    for page in 1.. {
        let batch = store
            .search_executions(&ExecutionQuery {
                namespace: Some(namespace.to_string()),
                page,
                size: 1000,
                ..Default::default()
            })
            .await?;
        if batch.results.is_empty() {
            break;
        }
        all.extend(batch.results);
    }
    Ok(all)
}

/// The value below which `p` of the sorted samples fall.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let sync = match args.sync.as_str() {
        "normal" => SyncMode::Normal,
        "full" => SyncMode::Full,
        other => anyhow::bail!("--sync {other}: use normal or full"),
    };
    let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let (namespace, node) = match &args.node_name {
        Some(name) => {
            anyhow::ensure!(
                crate::is_postgres(&args.db),
                "--node-name needs a PostgreSQL --db"
            );
            anyhow::ensure!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "--node-name {name}: use letters and digits (it names the bench's namespace)"
            );
            let settings =
                swoop_engine::NodeSettings::new(name.clone(), swoop_store::cluster::Roles::ALL);
            (format!("swoop.bench.{name}"), Some(settings))
        }
        None => ("swoop.bench".to_string(), None),
    };
    let engine = crate::start_node_on(&dir, &args.db, sync, node).await?;
    engine
        .put_flow(&FLOW.replace("NAMESPACE", &namespace))
        .await?;

    let slots = Arc::new(Semaphore::new(args.concurrency));
    let mut events = engine.subscribe();
    let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // One listener frees a slot for every execution that ends.
    let listener = {
        let slots = slots.clone();
        let ended = ended.clone();
        let total = args.executions;
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.state.is_terminal() => {
                        slots.add_permits(1);
                        if ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= total {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("warning: the bench's event listener lagged by {n} events");
                        slots.add_permits(args.concurrency);
                    }
                    Err(_) => return,
                }
            }
        })
    };

    eprintln!(
        "running {} executions of a one-Log-task flow, {} in flight, {} store",
        args.executions,
        args.concurrency,
        engine.store().backend()
    );
    let started = Instant::now();
    // Creations run concurrently (each waits for its group commit), as events from a source do.
    let mut creations = tokio::task::JoinSet::new();
    for _ in 0..args.executions {
        slots.acquire().await?.forget();
        let engine = engine.clone();
        let namespace = namespace.clone();
        creations.spawn(async move {
            engine
                .execute(NewExecution {
                    namespace,
                    flow_id: "bench".into(),
                    ..Default::default()
                })
                .await
        });
        while let Some(done) = creations.try_join_next() {
            done??;
        }
    }
    while let Some(done) = creations.join_next().await {
        done??;
    }
    tokio::time::timeout(std::time::Duration::from_secs(600), listener)
        .await
        .context("executions did not all end within 10 minutes")??;
    while engine.running_count() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    engine.store().flush().await?;

    // Latencies from each execution's own history.
    let mut to_running = Vec::with_capacity(args.executions);
    let mut to_end = Vec::with_capacity(args.executions);
    let mut states = std::collections::BTreeMap::<State, usize>::new();
    for e in &all_executions(engine.store().as_ref(), &namespace).await? {
        *states.entry(e.state.current).or_default() += 1;
        let created = e.state.histories[0].date;
        let at = |s: State| {
            e.state
                .histories
                .iter()
                .find(|h| h.state == s)
                .map(|h| h.date)
        };
        if let Some(r) = at(State::Running) {
            to_running.push((r - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        if let Some(end) = e.state.end_date() {
            to_end.push((end - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    to_running.sort_by(f64::total_cmp);
    to_end.sort_by(f64::total_cmp);
    let rate = args.executions as f64 / elapsed.as_secs_f64();
    println!("executions:        {}", args.executions);
    println!("in flight (max):   {}", args.concurrency);
    println!("final states:      {states:?}");
    println!("wall time:         {:.2} s", elapsed.as_secs_f64());
    println!("throughput:        {rate:.0} executions/s");
    println!(
        "created->RUNNING:  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        percentile(&to_running, 50.0),
        percentile(&to_running, 99.0),
        percentile(&to_running, 99.9)
    );
    println!(
        "created->end:      p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        percentile(&to_end, 50.0),
        percentile(&to_end, 99.0),
        percentile(&to_end, 99.9)
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS:          {rss:.0} MiB");
    }
    engine.shutdown().await;
    Ok(())
}
