//! `swoop bench pages`: the executions pages' API calls with many executions stored.
//!
//! It fills a SQLite store (or reuses one given with `--data-dir`) with `--executions`
//! ended executions spread over 3 namespaces, 12 flows and two end states, each with a task run,
//! trigger variables and a log line, as a realtime trigger leaves them. Then it times, through
//! the whole router (`oneshot`: handler, store, JSON; no socket), the calls the web page makes:
//! - the first page, unfiltered;
//! - a filtered page (a namespace and a state);
//! - a time range (a tenth of the span, in the middle), a common label (one execution in 3), a rare label
//!   (one in 997) and a trigger id with a namespace: the filters of the executions page;
//! - page 5,000 by `page=` (the store skips rows) and by position (`after=`, keyset paging),
//!   the latter reached by walking the pages one after the other, every step timed;
//! - the execution page: the execution, its logs and its files.
//!
//! Each call is repeated `--repeat` times; it prints the median and the slowest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use swoop_core::model::{
    ExecutionTrigger, Label, LogEntry, LogLevel, StateHistory, StateInfo, TaskRun,
};
use swoop_core::{Execution, State};
use swoop_store::{ExecutionStore, LogStore, SqliteOptions, SqliteStore, Store, SyncMode};
use tower::ServiceExt;

#[derive(clap::Args)]
pub struct PagesArgs {
    /// Executions to store before timing.
    #[arg(long, default_value_t = 1_000_000)]
    executions: usize,
    /// Keep the store here (filled once: a second run with the same folder and count reuses
    /// it) instead of a scratch folder.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Times each call is made.
    #[arg(long, default_value_t = 20)]
    repeat: usize,
    /// The page reached by `page=` and by walking with `after=`.
    #[arg(long, default_value_t = 5_000)]
    deep_page: usize,
}

const NAMESPACES: [&str; 3] = ["company.sales", "company.ops", "company.iot"];
const FLOWS_PER_NAMESPACE: usize = 4;
const PAGE_SIZE: usize = 25;

/// One stored execution as a realtime trigger's leaves it: created, RUNNING, ended, with its task
/// run, trigger variables and a log line.
fn execution(i: usize, created: chrono::DateTime<chrono::Utc>) -> (Execution, LogEntry) {
    let namespace = NAMESPACES[i % NAMESPACES.len()];
    let flow = format!("flow-{}", (i / NAMESPACES.len()) % FLOWS_PER_NAMESPACE);
    let end = if i.is_multiple_of(10) {
        State::Failed
    } else {
        State::Success
    };
    let mut e = Execution::new(namespace, &flow, 1);
    let at = |ms: i64| created + chrono::Duration::milliseconds(ms);
    let state = |end_ms: i64| StateInfo {
        current: end,
        histories: vec![
            StateHistory {
                state: State::Created,
                date: created,
            },
            StateHistory {
                state: State::Running,
                date: at(2),
            },
            StateHistory {
                state: end,
                date: at(end_ms),
            },
        ],
    };
    e.state = state(9);
    e.labels = vec![
        Label {
            key: "team".into(),
            value: format!("t-{}", i % 3),
        },
        Label {
            key: "customer".into(),
            value: format!("c-{}", i % 997),
        },
    ];
    e.trigger = Some(ExecutionTrigger {
        id: "orders".into(),
        type_name: "io.kestra.plugin.kafka.RealtimeTrigger".into(),
        variables: json!({
            "topic": "orders", "partition": i % 3, "offset": i,
            "key": format!("customer-{}", i % 997),
            "value": {"order": i, "customer": format!("c-{}", i % 997), "amount": (i % 500) as f64 / 10.0},
            "headers": [], "timestamp": created.timestamp_millis(),
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into(),
    });
    e.task_run_list.push(TaskRun {
        id: swoop_core::model::new_id(),
        execution_id: e.id.clone(),
        namespace: namespace.into(),
        flow_id: flow.clone(),
        task_id: "log".into(),
        parent_task_run_id: None,
        value: None,
        iteration: None,
        attempts: Vec::new(),
        outputs: Default::default(),
        state: state(8),
        error_branch: false,
    });
    let log = LogEntry {
        namespace: namespace.into(),
        flow_id: flow,
        execution_id: e.id.clone(),
        task_id: Some("log".into()),
        task_run_id: Some(e.task_run_list[0].id.clone()),
        attempt_number: 1,
        timestamp: at(5),
        level: LogLevel::Info,
        message: format!("order {i} received"),
    };
    (e, log)
}

/// Stores `count` executions (and their log lines), 256 writes in flight.
async fn fill(store: &Arc<SqliteStore>, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let base = chrono::Utc::now() - chrono::Duration::milliseconds(count as i64 * 3);
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 256;
    for w in 0..workers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut i = w;
            while i < count {
                let (e, log) = execution(i, base + chrono::Duration::milliseconds(i as i64 * 3));
                store.create_execution(&e, None).await?;
                store.append_logs(vec![log]);
                i += workers;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a filling task")??;
    }
    store.flush().await?;
    eprintln!(
        "stored {count} executions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn get(router: &Router, uri: &str) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty())?)
        .await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let took = started.elapsed();
    anyhow::ensure!(status == StatusCode::OK, "GET {uri}: {status}");
    Ok((took, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Median and slowest, in ms.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:>7.2} ms, slowest {:>7.2} ms ({} calls)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    )
}

async fn timed(router: &Router, repeat: usize, uri: &str) -> anyhow::Result<(String, Value)> {
    let mut times = Vec::with_capacity(repeat);
    let mut body = Value::Null;
    for _ in 0..repeat.max(1) {
        let (took, b) = get(router, uri).await?;
        times.push(took);
        body = b;
    }
    Ok((summary(times), body))
}

pub async fn run(args: PagesArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().into());
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(SqliteOptions {
        path: dir.join("swoop.db"),
        sync: SyncMode::Normal,
        ..Default::default()
    })?;
    let stored = store
        .search_executions(&swoop_store::ExecutionQuery {
            size: 1,
            ..Default::default()
        })
        .await?
        .total as usize;
    if stored < args.executions {
        fill(&store, args.executions - stored).await?;
    }
    let engine = swoop_engine::Engine::start(
        store.clone() as Arc<dyn Store>,
        Arc::new(swoop_plugins::registry()),
    )
    .await?;
    let router = swoop_server::app(engine.clone());
    let (_, all) = get(&router, "/api/v1/executions/search?size=1").await?;
    println!(
        "swoop bench pages: {} executions stored (SQLite), pages of {PAGE_SIZE}, through the router",
        all["total"]
    );
    let search = "/api/v1/executions/search";
    let (first, body) = timed(&router, args.repeat, &format!("{search}?size={PAGE_SIZE}")).await?;
    println!("  first page:                              {first}");
    let (filtered, _) = timed(
        &router,
        args.repeat,
        &format!("{search}?namespace=company.ops&state=FAILED&size={PAGE_SIZE}"),
    )
    .await?;
    println!("  namespace + state filter, first page:    {filtered}");
    let (_, oldest) = get(&router, &format!("{search}?size=1&page={}", all["total"])).await?;
    // The executions span `total` × 3 ms; a range of a tenth of it, in the middle.
    let span_ms = all["total"].as_i64().unwrap_or(0) * 3;
    let middle = oldest["results"][0]["state"]["histories"][0]["date"]
        .as_str()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&chrono::Utc) + chrono::Duration::milliseconds(span_ms * 45 / 100))
        .context("the oldest execution has no creation date")?;
    let date =
        |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let filters = [
        (
            "a tenth of the time span, first page:    ",
            format!(
                "startDate={}&endDate={}",
                date(middle),
                date(middle + chrono::Duration::milliseconds(span_ms / 10))
            ),
        ),
        (
            "common label (1 in 3), first page:       ",
            "labels=team:t-1".to_string(),
        ),
        (
            "rare label (1 in 997), first page:       ",
            "labels=customer:c-42".to_string(),
        ),
        (
            "namespace + trigger id, first page:      ",
            "namespace=company.iot&triggerId=orders".to_string(),
        ),
    ];
    for (what, filter) in filters {
        let (took, page) = timed(
            &router,
            args.repeat,
            &format!("{search}?{filter}&size={PAGE_SIZE}"),
        )
        .await?;
        let lower = if page["totalIsLowerBound"] == true {
            "≥ "
        } else {
            ""
        };
        println!("  {what}{took}, total {lower}{}", page["total"]);
    }
    let (deep, _) = timed(
        &router,
        args.repeat,
        &format!("{search}?page={}&size={PAGE_SIZE}", args.deep_page),
    )
    .await?;
    println!(
        "  page {} by page=:                     {deep}",
        args.deep_page
    );
    // Walk with positions to the deep page, timing every step.
    let mut next = body["next"].as_str().map(str::to_string);
    let mut steps = Vec::with_capacity(args.deep_page);
    for _ in 1..args.deep_page {
        let Some(after) = next else { break };
        let (took, page) =
            get(&router, &format!("{search}?size={PAGE_SIZE}&after={after}")).await?;
        steps.push(took);
        next = page["next"].as_str().map(str::to_string);
    }
    if !steps.is_empty() {
        println!(
            "  pages 2..{} by after= (walked):        {}",
            steps.len() + 1,
            summary(steps)
        );
    }
    let id = body["results"][0]["id"]
        .as_str()
        .context("no execution on the first page")?
        .to_string();
    let mut times = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let started = Instant::now();
        get(&router, &format!("/api/v1/executions/{id}")).await?;
        get(&router, &format!("/api/v1/logs/{id}")).await?;
        get(&router, &format!("/api/v1/executions/{id}/file/metas")).await?;
        times.push(started.elapsed());
    }
    println!(
        "  execution page (execution, logs, files):  {}",
        summary(times)
    );
    engine.shutdown().await;
    Ok(())
}
