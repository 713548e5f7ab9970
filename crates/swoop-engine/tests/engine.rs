//! End-to-end tests of the engine: real flows (Kestra syntax) run with the core plugins on a
//! SQLite store in a temporary directory. Every wait is bounded; timing properties (overlap,
//! durations) are checked on the state histories the engine records, not on the test's clock.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use swoop_core::model::{Attempt, LogEntry, StateInfo, new_id};
use swoop_core::{Execution, State, TaskRun};
use swoop_engine::flows_dir::FlowsDir;
use swoop_engine::{Engine, EngineError, NewExecution};
use swoop_store::{
    Created, DedupKey, ExecutionQuery, ExecutionStore, FlowStore, LogStore, SqliteStore, Store,
};
use tempfile::TempDir;

use common::{max_overlap, running_interval};

const NS: &str = "test.engine";
/// How long any execution of these tests may take.
const WAIT: Duration = Duration::from_secs(10);
/// Pause between two looks when polling for something no event announces.
const POLL: Duration = Duration::from_millis(10);

// ------------------------------------------------------------------------------------ harness

/// An engine on a fresh SQLite store in a temporary directory.
struct Harness {
    engine: Arc<Engine>,
    store: Arc<SqliteStore>,
    _dir: TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open_in(dir.path()).expect("the store opens");
        let engine = start_engine(&store).await;
        Harness {
            engine,
            store,
            _dir: dir,
        }
    }

    /// Stores a flow (creates it or adds a revision).
    async fn flow(&self, yaml: &str) {
        if let Err(e) = self.engine.put_flow(yaml).await {
            panic!("the flow is refused: {e}\n{yaml}");
        }
    }

    async fn start(&self, flow_id: &str, inputs: Value) -> Execution {
        self.engine
            .execute(request(flow_id, inputs))
            .await
            .unwrap_or_else(|e| panic!("cannot execute `{flow_id}`: {e}"))
    }

    /// Waits for the execution's end (at most [`WAIT`]).
    async fn wait(&self, id: &str) -> Execution {
        wait_end(&self.engine, id, WAIT).await
    }

    /// Runs a flow to its end.
    async fn run(&self, flow_id: &str, inputs: Value) -> Execution {
        let started = self.start(flow_id, inputs).await;
        self.wait(&started.id).await
    }

    /// The execution's logs, once every queued line is written.
    async fn logs(&self, id: &str) -> Vec<LogEntry> {
        self.store.flush().await.expect("flush");
        self.store
            .logs_for_execution(id)
            .await
            .expect("logs are readable")
    }

    /// The execution as the store holds it, once every queued write is in.
    async fn stored(&self, id: &str) -> Execution {
        self.store.flush().await.expect("flush");
        self.store
            .get_execution(id)
            .await
            .expect("read")
            .expect("stored")
    }

    /// Every execution of a flow in the store.
    async fn executions_of(&self, flow_id: &str) -> Vec<Execution> {
        let page = self
            .store
            .search_executions(&ExecutionQuery {
                namespace: Some(NS.to_string()),
                flow_id: Some(flow_id.to_string()),
                page: 1,
                size: 1000,
                ..ExecutionQuery::default()
            })
            .await
            .expect("search");
        assert_eq!(
            page.total as usize,
            page.results.len(),
            "one page holds all"
        );
        page.results
    }

    /// Polls the execution until `done` holds for it (at most [`WAIT`]).
    async fn poll_until(&self, id: &str, what: &str, done: impl Fn(&Execution) -> bool) {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let e = self.engine.get_execution(id).await.expect("execution");
                if done(&e) {
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        if found.is_err() {
            let e = self.engine.get_execution(id).await.expect("execution");
            panic!("{what}: not seen within {WAIT:?}; {}", describe(&e));
        }
    }
}

async fn start_engine(store: &Arc<SqliteStore>) -> Arc<Engine> {
    let store: Arc<dyn Store> = store.clone();
    Engine::start(store, Arc::new(swoop_plugins::registry()))
        .await
        .expect("the engine starts")
}

fn request(flow_id: &str, inputs: Value) -> NewExecution {
    NewExecution {
        namespace: NS.to_string(),
        flow_id: flow_id.to_string(),
        inputs: match inputs {
            Value::Null => Map::new(),
            Value::Object(m) => m,
            other => panic!("inputs must be an object, got {other}"),
        },
        ..NewExecution::default()
    }
}

async fn wait_end(engine: &Engine, id: &str, limit: Duration) -> Execution {
    let e = tokio::time::timeout(
        limit + Duration::from_secs(1),
        engine.wait_for_end(id, Some(limit)),
    )
    .await
    .unwrap_or_else(|_| panic!("wait_for_end({id}) did not return"))
    .unwrap_or_else(|e| panic!("wait_for_end({id}): {e}"));
    assert!(
        e.state.current.is_terminal(),
        "execution did not end within {limit:?}: {}",
        describe(&e)
    );
    e
}

/// The execution in one line or so, for assertion messages.
fn describe(e: &Execution) -> String {
    let runs: Vec<String> = e
        .task_run_list
        .iter()
        .map(|r| {
            format!(
                "{}{}={} (attempts {:?})",
                r.task_id,
                r.value
                    .as_deref()
                    .map(|v| format!("[{v}]"))
                    .unwrap_or_default(),
                r.state.current,
                attempt_states(r)
            )
        })
        .collect();
    format!(
        "execution {} of `{}.{}` is {} (error: {:?}); task runs: {}",
        e.id,
        e.namespace,
        e.flow_id,
        e.state.current,
        e.error,
        runs.join(", ")
    )
}

/// Every run of a task.
fn runs<'a>(e: &'a Execution, task_id: &str) -> Vec<&'a TaskRun> {
    e.task_run_list
        .iter()
        .filter(|r| r.task_id == task_id)
        .collect()
}

/// The one run of a task.
fn the_run<'a>(e: &'a Execution, task_id: &str) -> &'a TaskRun {
    let found = runs(e, task_id);
    assert_eq!(
        found.len(),
        1,
        "expected one run of `{task_id}`; {}",
        describe(e)
    );
    found[0]
}

fn attempt_states(run: &TaskRun) -> Vec<State> {
    run.attempts.iter().map(|a| a.state.current).collect()
}

fn history(state: &StateInfo) -> Vec<State> {
    state.histories.iter().map(|h| h.state).collect()
}

fn output(run: &TaskRun, key: &str) -> Value {
    run.outputs.get(key).cloned().unwrap_or(Value::Null)
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_invalid(result: Result<Execution, EngineError>, mentions: &[&str]) {
    match result {
        Err(EngineError::Invalid { message, .. }) => {
            for m in mentions {
                assert!(message.contains(m), "`{message}` should mention `{m}`");
            }
        }
        Err(other) => panic!("expected EngineError::Invalid, got {other:?}"),
        Ok(e) => panic!("expected EngineError::Invalid, got {}", describe(&e)),
    }
}

// -------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_order_example_runs_every_core_feature() {
    let h = Harness::new().await;
    h.flow(&example("invoice.yml")).await;
    h.flow(&example("enrich-order.yml")).await;
    let execution = h.engine.execute(NewExecution {
        namespace: "company.shop".into(),
        flow_id: "enrich-order".into(),
        ..NewExecution::default()
    });
    let e = h.wait(&execution.await.expect("execute").id).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));

    assert_eq!(output(the_run(&e, "first_price"), "value"), json!("10.5"));

    let route = the_run(&e, "route");
    assert_eq!(output(route, "value"), json!("FR"));
    assert_eq!(output(route, "defaults"), json!(false));
    assert_eq!(
        the_run(&e, "eu").parent_task_run_id.as_ref(),
        Some(&route.id)
    );
    assert!(runs(&e, "world").is_empty(), "the default branch ran");

    let each = the_run(&e, "each_item");
    let mut items: Vec<(String, Value)> = runs(&e, "item")
        .into_iter()
        .map(|r| {
            assert_eq!(r.parent_task_run_id.as_ref(), Some(&each.id));
            assert_eq!(r.state.current, State::Success);
            (r.value.clone().unwrap_or_default(), output(r, "value"))
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        items,
        [
            ("A-1".to_string(), json!("sku A-1")),
            ("B-2".to_string(), json!("sku B-2"))
        ]
    );

    let flaky = the_run(&e, "flaky");
    assert_eq!(
        attempt_states(flaky),
        [State::Failed, State::Failed, State::Success]
    );
    assert_eq!(flaky.state.current, State::Success);

    let invoice = the_run(&e, "invoice");
    assert_eq!(invoice.outputs["outputs"]["number"], json!("INV-1"));
    let child_id = invoice.outputs["executionId"]
        .as_str()
        .expect("the Subflow task outputs the child's execution id");
    let child = h
        .store
        .get_execution(child_id)
        .await
        .expect("read")
        .expect("the child execution is stored");
    assert_eq!(child.flow_id, "invoice");
    assert_eq!(child.parent_execution_id.as_deref(), Some(e.id.as_str()));
    assert_eq!(child.state.current, State::Success);

    assert_eq!(
        e.outputs.get("warehouse"),
        Some(&json!("EU warehouse for swoop-demo"))
    );
    assert!(runs(&e, "alert").is_empty(), "the errors branch ran");

    let logs = h.logs(&e.id).await;
    assert!(
        logs.iter()
            .any(|l| l.task_id.as_deref() == Some("done")
                && l.message == "order 1 → FR, invoice INV-1"),
        "logs: {logs:#?}"
    );
}

const FOREACH_SLEEPS: &str = r#"
id: foreach-LIMIT
namespace: test.engine
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: ["a", "b", "c", "d"]
    concurrencyLimit: LIMIT
    tasks:
      - id: nap
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.2S
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreach_concurrency_limit_bounds_overlapping_iterations() {
    let h = Harness::new().await;
    for (limit, expected) in [(2, 2), (0, 4)] {
        h.flow(&FOREACH_SLEEPS.replace("LIMIT", &limit.to_string()))
            .await;
        let e = h.run(&format!("foreach-{limit}"), Value::Null).await;
        assert_eq!(e.state.current, State::Success, "{}", describe(&e));
        let naps = runs(&e, "nap");
        let mut values: Vec<_> = naps.iter().filter_map(|r| r.value.clone()).collect();
        values.sort();
        assert_eq!(values, ["a", "b", "c", "d"]);
        let intervals: Vec<_> = naps.iter().map(|r| running_interval(&r.state)).collect();
        assert_eq!(
            max_overlap(&intervals),
            expected,
            "concurrencyLimit {limit}: {intervals:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_errors_branch_runs_when_a_task_fails() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: flow-errors
namespace: test.engine
tasks:
  - id: before
    type: io.kestra.plugin.core.debug.Return
    format: ok
  - id: boom
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: boom on purpose
  - id: after
    type: io.kestra.plugin.core.log.Log
    message: after the failure
errors:
  - id: alert
    type: io.kestra.plugin.core.log.Log
    message: "errors branch ran for {{ flow.id }}"
"#,
    )
    .await;
    let e = h.run("flow-errors", Value::Null).await;
    assert_eq!(e.state.current, State::Failed, "{}", describe(&e));
    assert!(
        e.error.as_deref().unwrap_or("").contains("boom on purpose"),
        "{:?}",
        e.error
    );
    assert_eq!(the_run(&e, "before").state.current, State::Success);
    assert_eq!(the_run(&e, "boom").state.current, State::Failed);
    assert!(runs(&e, "after").is_empty(), "{}", describe(&e));
    let alert = the_run(&e, "alert");
    assert!(
        alert.error_branch,
        "the errors task run is marked errorBranch"
    );
    assert_eq!(alert.state.current, State::Success);
    assert!(!the_run(&e, "boom").error_branch);

    let logs = h.logs(&e.id).await;
    assert!(
        logs.iter().any(|l| l.task_id.as_deref() == Some("alert")
            && l.message == "errors branch ran for flow-errors"),
        "logs: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flowable_errors_branch_runs_when_a_child_fails() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: sequential-errors
namespace: test.engine
tasks:
  - id: seq
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - id: boom
        type: io.kestra.plugin.core.execution.Fail
        errorMessage: child fails
      - id: next_child
        type: io.kestra.plugin.core.log.Log
        message: not reached
    errors:
      - id: handler
        type: io.kestra.plugin.core.log.Log
        message: sequential errors branch ran
  - id: after
    type: io.kestra.plugin.core.log.Log
    message: not reached either
"#,
    )
    .await;
    let e = h.run("sequential-errors", Value::Null).await;
    // As in Kestra, an errors branch handles the failure but does not undo it.
    assert_eq!(e.state.current, State::Failed, "{}", describe(&e));
    let seq = the_run(&e, "seq");
    assert_eq!(seq.state.current, State::Failed);
    let handler = the_run(&e, "handler");
    assert!(handler.error_branch);
    assert_eq!(handler.parent_task_run_id.as_ref(), Some(&seq.id));
    assert_eq!(handler.state.current, State::Success);
    assert!(runs(&e, "next_child").is_empty(), "{}", describe(&e));
    assert!(runs(&e, "after").is_empty(), "{}", describe(&e));
    let logs = h.logs(&e.id).await;
    assert!(
        logs.iter().any(|l| l.task_id.as_deref() == Some("handler")
            && l.message == "sequential errors branch ran"),
        "logs: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_failure_ends_in_warning_and_goes_on() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: allowed
namespace: test.engine
tasks:
  - id: shaky
    type: io.kestra.plugin.core.execution.Fail
    allowFailure: true
    errorMessage: tolerated failure
  - id: next
    type: io.kestra.plugin.core.debug.Return
    format: ran anyway
"#,
    )
    .await;
    let e = h.run("allowed", Value::Null).await;
    assert_eq!(e.state.current, State::Warning, "{}", describe(&e));
    assert_eq!(attempt_states(the_run(&e, "shaky")), [State::Failed]);
    let next = the_run(&e, "next");
    assert_eq!(next.state.current, State::Success);
    assert_eq!(output(next, "value"), json!("ran anyway"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_a_task_that_runs_too_long() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: too-slow
namespace: test.engine
tasks:
  - id: slow
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT5S
    timeout: PT0.2S
"#,
    )
    .await;
    let e = h.run("too-slow", Value::Null).await;
    assert_eq!(e.state.current, State::Failed, "{}", describe(&e));
    let slow = the_run(&e, "slow");
    assert_eq!(slow.state.current, State::Failed);
    assert_eq!(attempt_states(slow), [State::Failed]);
    assert!(
        e.error.as_deref().unwrap_or("").contains("timed out"),
        "{:?}",
        e.error
    );
    let (start, end) = running_interval(&slow.state);
    let took = (end - start).to_std().unwrap_or_default();
    assert!(took < Duration::from_secs(2), "the task ran {took:?}");
    let logs = h.logs(&e.id).await;
    assert!(
        logs.iter()
            .any(|l| l.task_id.as_deref() == Some("slow") && l.message.contains("timed out")),
        "logs: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_attempts_then_fails_or_warns() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: always-fails
namespace: test.engine
tasks:
  - id: always
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: "attempt {{ taskrun.attemptsCount }} fails"
    retry:
      type: constant
      interval: PT0.05S
      maxAttempts: 3
"#,
    )
    .await;
    h.flow(
        r#"
id: fails-once
namespace: test.engine
tasks:
  - id: once
    type: io.kestra.plugin.core.execution.Fail
    condition: "{{ taskrun.attemptsCount < 2 }}"
    retry:
      type: constant
      interval: PT0.05S
      maxAttempts: 3
      warningOnRetry: true
"#,
    )
    .await;

    let e = h.run("always-fails", Value::Null).await;
    assert_eq!(e.state.current, State::Failed, "{}", describe(&e));
    let always = the_run(&e, "always");
    assert_eq!(
        attempt_states(always),
        [State::Failed, State::Failed, State::Failed]
    );
    assert_eq!(always.state.current, State::Failed);
    assert!(history(&always.state).contains(&State::Retrying));
    assert!(
        e.error.as_deref().unwrap_or("").contains("attempt 3 fails"),
        "{:?}",
        e.error
    );

    let e = h.run("fails-once", Value::Null).await;
    assert_eq!(e.state.current, State::Warning, "{}", describe(&e));
    let once = the_run(&e, "once");
    assert_eq!(attempt_states(once), [State::Failed, State::Success]);
    assert_eq!(once.state.current, State::Warning);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_a_running_execution() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: long-nap
namespace: test.engine
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
  - id: after
    type: io.kestra.plugin.core.log.Log
    message: not reached
"#,
    )
    .await;
    let started = h.start("long-nap", Value::Null).await;
    h.poll_until(&started.id, "the Sleep attempt RUNNING", |e| {
        e.task_run_list.iter().any(|r| {
            r.task_id == "nap" && r.attempts.last().map(|a| a.state.current) == Some(State::Running)
        })
    })
    .await;
    h.engine.kill(&started.id).await.expect("kill");
    let e = wait_end(&h.engine, &started.id, Duration::from_secs(2)).await;
    assert_eq!(e.state.current, State::Killed, "{}", describe(&e));
    let nap = the_run(&e, "nap");
    assert_eq!(nap.state.current, State::Killed);
    assert_eq!(attempt_states(nap), [State::Killed]);
    assert!(runs(&e, "after").is_empty(), "{}", describe(&e));
    assert!(history(&e.state).contains(&State::Killing));

    // The end is durable, and a second kill is refused.
    let stored = h.stored(&e.id).await;
    assert_eq!(stored.state.current, State::Killed);
    assert!(matches!(
        h.engine.kill(&e.id).await,
        Err(EngineError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reruns_only_the_failed_tasks() {
    let h = Harness::new().await;
    // `check` fails on its first attempt only: the attempt count is what changes between the
    // first run and the restart (the restart adds an attempt to the failed task run).
    h.flow(
        r#"
id: restartable
namespace: test.engine
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "first ran"
  - id: check
    type: io.kestra.plugin.core.execution.Fail
    condition: "{{ taskrun.attemptsCount < 2 }}"
    errorMessage: not yet
  - id: last
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.first.value }}, then last"
errors:
  - id: alert
    type: io.kestra.plugin.core.log.Log
    message: failed once
"#,
    )
    .await;
    let failed = h.run("restartable", Value::Null).await;
    assert_eq!(failed.state.current, State::Failed, "{}", describe(&failed));
    assert!(runs(&failed, "last").is_empty());
    assert_eq!(the_run(&failed, "alert").state.current, State::Success);
    let first_id = the_run(&failed, "first").id.clone();

    // Only FAILED or KILLED executions restart.
    let restarted = h.engine.restart(&failed.id).await.expect("restart");
    assert_eq!(restarted.state.current, State::Restarted);
    let e = h.wait(&failed.id).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    assert!(
        history(&e.state).contains(&State::Restarted),
        "{:?}",
        history(&e.state)
    );
    assert_eq!(e.error, None);

    let first = the_run(&e, "first");
    assert_eq!(first.id, first_id);
    assert_eq!(attempt_states(first), [State::Success], "first ran again");
    let check = the_run(&e, "check");
    assert_eq!(attempt_states(check), [State::Failed, State::Success]);
    assert!(history(&check.state).contains(&State::Restarted));
    assert_eq!(check.state.current, State::Success);
    assert_eq!(
        output(the_run(&e, "last"), "value"),
        json!("first ran, then last")
    );
    assert!(runs(&e, "alert").is_empty(), "the old errors branch stays");

    assert!(matches!(
        h.engine.restart(&e.id).await,
        Err(EngineError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_execution_resumes_after_a_crash() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open_in(dir.path()).expect("the store opens");
    let source = r#"
id: resumable
namespace: test.engine
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "computed before the crash"
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.5S
  - id: last
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.first.value }}, reused"
"#;
    let record = store
        .put_flow(NS, "resumable", source)
        .await
        .expect("put flow");

    // What a process that crashed while `nap` ran leaves in the store.
    let mut execution = Execution::new(NS, "resumable", record.revision);
    execution.state.transition(State::Running);
    let task_run = |task_id: &str, state: State| {
        let mut info = StateInfo::new(State::Created);
        info.transition(State::Running);
        info.transition(state);
        let mut attempt = StateInfo::new(State::Running);
        attempt.transition(state);
        TaskRun {
            id: new_id(),
            execution_id: execution.id.clone(),
            namespace: NS.to_string(),
            flow_id: "resumable".to_string(),
            task_id: task_id.to_string(),
            parent_task_run_id: None,
            value: None,
            iteration: None,
            attempts: vec![Attempt { state: attempt }],
            outputs: Map::new(),
            state: info,
            error_branch: false,
        }
    };
    let mut first = task_run("first", State::Success);
    first
        .outputs
        .insert("value".into(), json!("computed before the crash"));
    let nap = task_run("nap", State::Running);
    let (first_id, nap_id) = (first.id.clone(), nap.id.clone());
    let first_history = first.state.histories.clone();
    execution.task_run_list = vec![first, nap];
    assert_eq!(
        store
            .create_execution(&execution, None)
            .await
            .expect("create"),
        Created::Created
    );

    let engine = start_engine(&store).await;
    let e = wait_end(&engine, &execution.id, WAIT).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));

    let first = the_run(&e, "first");
    assert_eq!(first.id, first_id);
    assert_eq!(attempt_states(first), [State::Success], "first ran again");
    assert_eq!(first.state.histories, first_history);
    let nap = the_run(&e, "nap");
    assert_eq!(nap.id, nap_id);
    assert_eq!(attempt_states(nap), [State::Killed, State::Success]);
    assert_eq!(nap.state.current, State::Success);
    assert_eq!(
        output(the_run(&e, "last"), "value"),
        json!("computed before the crash, reused")
    );

    store.flush().await.expect("flush");
    let stored = store
        .get_execution(&e.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.state.current, State::Success);
    assert!(
        store
            .unfinished_executions()
            .await
            .expect("read")
            .is_empty(),
        "nothing is left to resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_saved_in_the_background() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: napping
namespace: test.engine
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT2S
"#,
    )
    .await;
    let started = h.start("napping", Value::Null).await;
    // Nothing announces a background save: look at the store until it shows the running task
    // (the saver writes it some milliseconds after the attempt began).
    let deadline = tokio::time::Instant::now() + WAIT;
    let stored = loop {
        let stored = h.stored(&started.id).await;
        let attempt_running = stored.task_run_list.iter().any(|run| {
            run.task_id == "nap"
                && run
                    .attempts
                    .last()
                    .is_some_and(|a| a.state.current == State::Running)
        });
        if attempt_running {
            break stored;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never showed the running task: {}",
            describe(&stored)
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(
        stored.state.current,
        State::Running,
        "{}",
        describe(&stored)
    );
    let ended = h.wait(&started.id).await;
    assert_eq!(ended.state.current, State::Success, "{}", describe(&ended));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_background_save_lands_after_an_execution_ended() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: quick
namespace: test.engine
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "one"
  - id: second
    type: io.kestra.plugin.core.debug.Return
    format: "two"
"#,
    )
    .await;
    // Many short executions at once: their background saves race their end saves.
    let mut started = Vec::new();
    for _ in 0..300 {
        started.push(h.start("quick", Value::Null).await.id);
    }
    for id in &started {
        h.wait(id).await;
    }
    // The shutdown hands every pending background save to the store and flushes it.
    h.engine.shutdown().await;
    for id in &started {
        let stored = h.stored(id).await;
        assert_eq!(
            stored.state.current,
            State::Success,
            "a background save overwrote the end: {}",
            describe(&stored)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_key_makes_execute_idempotent() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: dedup
namespace: test.engine
tasks:
  - id: only
    type: io.kestra.plugin.core.debug.Return
    format: once
"#,
    )
    .await;
    let keyed = |key: &str| NewExecution {
        dedup: Some(DedupKey {
            trigger: "test.engine/dedup/source".into(),
            key: key.into(),
        }),
        ..request("dedup", Value::Null)
    };
    let a = h.engine.execute(keyed("offset-7")).await.expect("first");
    let b = h.engine.execute(keyed("offset-7")).await.expect("second");
    assert_eq!(a.id, b.id);
    assert_eq!(h.executions_of("dedup").await.len(), 1);

    let c = h.engine.execute(keyed("offset-8")).await.expect("third");
    assert_ne!(c.id, a.id);
    assert_eq!(h.executions_of("dedup").await.len(), 2);
    for id in [&a.id, &c.id] {
        assert_eq!(h.wait(id).await.state.current, State::Success);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_concurrency_limit_queues_or_cancels() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: one-at-a-time
namespace: test.engine
concurrency:
  limit: 1
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
"#,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(h.start("one-at-a-time", Value::Null).await.id);
    }
    let mut intervals = Vec::new();
    for id in &ids {
        let e = h.wait(id).await;
        assert_eq!(e.state.current, State::Success, "{}", describe(&e));
        intervals.push(running_interval(&e.state));
    }
    assert_eq!(max_overlap(&intervals), 1, "{intervals:#?}");

    h.flow(
        r#"
id: cancel-extra
namespace: test.engine
concurrency:
  limit: 1
  behavior: CANCEL
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
"#,
    )
    .await;
    let first = h.start("cancel-extra", Value::Null).await;
    h.poll_until(&first.id, "the first execution RUNNING", |e| {
        e.state.current == State::Running
    })
    .await;
    let second = h.run("cancel-extra", Value::Null).await;
    assert_eq!(
        second.state.current,
        State::Cancelled,
        "{}",
        describe(&second)
    );
    assert!(second.task_run_list.is_empty(), "{}", describe(&second));
    let first = h.wait(&first.id).await;
    assert_eq!(first.state.current, State::Success, "{}", describe(&first));
    // The slot is free again once the first ended.
    let third = h.run("cancel-extra", Value::Null).await;
    assert_eq!(third.state.current, State::Success, "{}", describe(&third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_typed_and_checked() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: typed-inputs
namespace: test.engine
inputs:
  - id: count
    type: INT
  - id: order
    type: JSON
  - id: note
    type: STRING
    required: false
tasks:
  - id: summary
    type: io.kestra.plugin.core.debug.Return
    format: "{{ inputs.order.country }} x{{ inputs.count + 1 }}"
"#,
    )
    .await;
    assert_invalid(
        h.engine
            .execute(request("typed-inputs", json!({"order": {"country": "FR"}})))
            .await,
        &["`count`", "required"],
    );
    assert_invalid(
        h.engine
            .execute(request(
                "typed-inputs",
                json!({"count": 1, "order": "{}", "colour": "red"}),
            ))
            .await,
        &["`colour`", "not declared"],
    );
    assert_invalid(
        h.engine
            .execute(request(
                "typed-inputs",
                json!({"count": "many", "order": "{}"}),
            ))
            .await,
        &["`count`", "INT"],
    );
    assert!(
        h.executions_of("typed-inputs").await.is_empty(),
        "a refused request creates nothing"
    );

    let e = h
        .run(
            "typed-inputs",
            json!({"count": "42", "order": "{\"country\": \"FR\", \"id\": 7}"}),
        )
        .await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    assert_eq!(e.inputs["count"], json!(42));
    assert_eq!(e.inputs["order"], json!({"country": "FR", "id": 7}));
    assert_eq!(e.inputs["note"], Value::Null);
    assert_eq!(output(the_run(&e, "summary"), "value"), json!("FR x43"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_trigger_fires_until_the_flow_is_deleted() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: every-second
namespace: test.engine
triggers:
  - id: tick
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "* * * * * *"
tasks:
  - id: when
    type: io.kestra.plugin.core.debug.Return
    format: "{{ trigger.date }}"
"#,
    )
    .await;
    let fired = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some(e) = h.executions_of("every-second").await.pop() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the schedule fires within 3 s");
    let trigger = fired.trigger.clone().expect("trigger variables");
    assert_eq!(trigger.id, "tick");
    let date = trigger.variables["date"].as_str().expect("trigger.date");
    DateTime::parse_from_rfc3339(date).expect("trigger.date is an ISO date");
    assert!(trigger.variables.contains_key("next"));
    let e = h.wait(&fired.id).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    assert_eq!(output(the_run(&e, "when"), "value"), json!(date));

    h.engine
        .delete_flow(NS, "every-second")
        .await
        .expect("delete");
    let deleted_at = Utc::now();
    assert!(h.engine.flow(NS, "every-second").is_none());
    assert!(
        h.store
            .get_flow(NS, "every-second")
            .await
            .expect("read")
            .is_none()
    );
    // Nothing announces that a schedule did not fire: look again after two occurrences.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let late: Vec<String> = h
        .executions_of("every-second")
        .await
        .into_iter()
        .filter(|e| {
            e.state
                .start_date()
                .is_some_and(|d| d > deleted_at + chrono::Duration::milliseconds(500))
        })
        .map(|e| describe(&e))
        .collect();
    assert!(late.is_empty(), "fired after the delete: {late:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_starts_an_execution_with_its_key_only() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: hook
namespace: test.engine
triggers:
  - id: incoming
    type: io.kestra.plugin.core.trigger.Webhook
    key: test-key-123
tasks:
  - id: echo
    type: io.kestra.plugin.core.debug.Return
    format: "hello {{ trigger.body.name }}"
"#,
    )
    .await;
    let mut variables = Map::new();
    variables.insert("body".into(), json!({"name": "swoop"}));
    let started = h
        .engine
        .webhook(NS, "hook", "test-key-123", variables)
        .await
        .expect("webhook");
    let trigger = started.trigger.clone().expect("trigger");
    assert_eq!(trigger.id, "incoming");
    assert_eq!(trigger.variables["body"], json!({"name": "swoop"}));
    let e = h.wait(&started.id).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    assert_eq!(output(the_run(&e, "echo"), "value"), json!("hello swoop"));

    let wrong = h.engine.webhook(NS, "hook", "wrong-key", Map::new()).await;
    assert!(matches!(wrong, Err(EngineError::NotFound(_))), "{wrong:?}");
    let missing = h
        .engine
        .webhook(NS, "no-such-flow", "test-key-123", Map::new())
        .await;
    assert!(
        matches!(missing, Err(EngineError::NotFound(_))),
        "{missing:?}"
    );
    assert_eq!(h.executions_of("hook").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subflow_transmits_failure_or_runs_detached() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: failing-child
namespace: test.engine
tasks:
  - id: boom
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: the child fails
"#,
    )
    .await;
    h.flow(
        r#"
id: slow-child
namespace: test.engine
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT1S
"#,
    )
    .await;
    let parent = |id: &str, child: &str, wait: bool, transmit: bool| {
        format!(
            r#"
id: {id}
namespace: test.engine
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: test.engine
    flowId: {child}
    wait: {wait}
    transmitFailed: {transmit}
"#
        )
    };
    h.flow(&parent("transmits", "failing-child", true, true))
        .await;
    h.flow(&parent("tolerates", "failing-child", true, false))
        .await;
    h.flow(&parent("detached", "slow-child", false, true)).await;

    let e = h.run("transmits", Value::Null).await;
    assert_eq!(e.state.current, State::Failed, "{}", describe(&e));
    let call = the_run(&e, "call");
    assert_eq!(call.state.current, State::Failed);
    assert_eq!(output(call, "state"), json!("FAILED"));
    let child_id = output(call, "executionId");
    let child_id = child_id.as_str().expect("executionId");
    assert!(
        e.error.as_deref().unwrap_or("").contains(child_id),
        "{:?}",
        e.error
    );
    let child = h.wait(child_id).await;
    assert_eq!(child.state.current, State::Failed);
    assert_eq!(child.parent_execution_id.as_deref(), Some(e.id.as_str()));

    let e = h.run("tolerates", Value::Null).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    assert_eq!(output(the_run(&e, "call"), "state"), json!("FAILED"));

    let e = h.run("detached", Value::Null).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    let call = the_run(&e, "call");
    let child_id = output(call, "executionId");
    let child_id = child_id.as_str().expect("executionId");
    let child = h.wait(child_id).await;
    assert_eq!(child.state.current, State::Success, "{}", describe(&child));
    assert_eq!(child.parent_execution_id.as_deref(), Some(e.id.as_str()));
    let parent_end = e.state.end_date().expect("ended");
    let child_end = child.state.end_date().expect("ended");
    assert!(
        parent_end < child_end,
        "the parent ({parent_end}) did not wait for the child ({child_end})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_errors_name_flow_task_property_and_expression() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: bad-template
namespace: test.engine
tasks:
  - id: say
    type: io.kestra.plugin.core.log.Log
    message: "{{ nope.x }}"
"#,
    )
    .await;
    let e = h.run("bad-template", Value::Null).await;
    assert_eq!(e.state.current, State::Failed, "{}", describe(&e));
    let expected = [
        "test.engine.bad-template",
        "task `say`",
        "property `message`",
        "{{ nope.x }}",
    ];
    let error = e.error.clone().unwrap_or_default();
    for part in expected {
        assert!(error.contains(part), "`{error}` should mention `{part}`");
    }
    let logs = h.logs(&e.id).await;
    let logged = logs
        .iter()
        .find(|l| l.task_id.as_deref() == Some("say"))
        .unwrap_or_else(|| panic!("no log of `say`: {logs:#?}"));
    for part in expected {
        assert!(
            logged.message.contains(part),
            "`{}` should mention `{part}`",
            logged.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_children_run_together() {
    let h = Harness::new().await;
    h.flow(
        r#"
id: fan-out
namespace: test.engine
tasks:
  - id: fan
    type: io.kestra.plugin.core.flow.Parallel
    concurrent: 0
    tasks:
      - id: a
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.3S
      - id: b
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.3S
      - id: c
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.3S
"#,
    )
    .await;
    let e = h.run("fan-out", Value::Null).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    let fan = the_run(&e, "fan");
    let children: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            let run = the_run(&e, id);
            assert_eq!(run.parent_task_run_id.as_ref(), Some(&fan.id));
            running_interval(&run.state)
        })
        .collect();
    assert_eq!(max_overlap(&children), 3, "{children:#?}");
    let (start, end) = running_interval(&fan.state);
    let took = (end - start).to_std().unwrap_or_default();
    assert!(took < Duration::from_millis(800), "Parallel took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_dir_follows_the_folder() {
    let h = Harness::new().await;
    let folder = tempfile::tempdir().expect("a temporary directory");
    let flow = |id: &str, message: &str| {
        format!(
            "id: {id}\nnamespace: test.engine\ntasks:\n  - id: say\n    type: io.kestra.plugin.core.log.Log\n    message: {message}\n"
        )
    };
    let a = folder.path().join("a.yml");
    let b = folder.path().join("nested").join("b.yaml");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::write(&a, flow("file-a", "one")).unwrap();
    std::fs::write(&b, flow("file-b", "one")).unwrap();
    std::fs::write(folder.path().join("notes.txt"), "not a flow").unwrap();

    let revision = |id: &str| h.engine.flow(NS, id).map(|f| f.revision);
    let mut dir = FlowsDir::default();
    assert_eq!(dir.sync(&h.engine, folder.path()).await, 2);
    assert_eq!(revision("file-a"), Some(1));
    assert_eq!(revision("file-b"), Some(1));

    // Nothing changed: nothing stored.
    assert_eq!(dir.sync(&h.engine, folder.path()).await, 0);

    std::fs::write(&a, flow("file-a", "two")).unwrap();
    assert_eq!(dir.sync(&h.engine, folder.path()).await, 1);
    assert_eq!(revision("file-a"), Some(2));
    assert_eq!(revision("file-b"), Some(1));

    std::fs::remove_file(&b).unwrap();
    dir.sync(&h.engine, folder.path()).await;
    assert_eq!(revision("file-b"), None);
    assert!(h.store.get_flow(NS, "file-b").await.unwrap().is_none());

    // A broken file: reported, and the others stay as they were.
    std::fs::write(
        folder.path().join("broken.yml"),
        "id: broken\nnamespace: test.engine\ntasks: 3\n",
    )
    .unwrap();
    std::fs::write(&a, "id: file-a\nnamespace: test.engine\n").unwrap();
    assert_eq!(dir.sync(&h.engine, folder.path()).await, 0);
    assert_eq!(revision("file-a"), Some(2));
    assert_eq!(revision("broken"), None);
    let e = h.run("file-a", Value::Null).await;
    assert_eq!(e.state.current, State::Success, "{}", describe(&e));
    let logs = h.logs(&e.id).await;
    assert!(logs.iter().any(|l| l.message == "two"), "logs: {logs:#?}");
}
