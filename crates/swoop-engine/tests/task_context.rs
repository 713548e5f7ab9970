//! What the engine hands a running task: internal storage (files written by one task, read by a
//! later one's templates, listed, deleted with the execution), typed rendering, labels, the
//! cancellation token (cancelled on timeout and kill), and retries that skip permanent errors.
//! The tasks here are test-only plugins registered beside the real core ones; the store is a
//! real SQLite store and the storage the real local filesystem backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use swoop_core::model::{Label, LogLevel};
use swoop_core::registry::{
    PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory, TaskKind, render_as,
};
use swoop_core::{Execution, Registry, State};
use swoop_engine::{Engine, NewExecution};
use swoop_store::{LocalStorage, LogStore, SqliteStore, Store};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(10);

/// Writes `content` to a file named `name` and outputs its `uri`.
struct WriteFile {
    name: String,
    content: String,
}

#[async_trait]
impl RunnableTask for WriteFile {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let content = ctx.render("content", &self.content)?;
        let (uri, mut w) = ctx
            .storage()
            .create(&self.name)
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        w.write_all(content.as_bytes())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        w.shutdown()
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        let mut out = Map::new();
        out.insert("uri".into(), json!(uri));
        Ok(out)
    }
}

/// Renders `value` keeping types and outputs it with its JSON type name; adds `label`.
struct Typed {
    value: Value,
}

#[async_trait]
impl RunnableTask for Typed {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let v = ctx.render_typed("value", &self.value)?;
        let n: u32 = render_as(ctx, "value", &json!("{{ inputs.n }}"))?;
        ctx.add_labels(vec![Label {
            key: "typed".into(),
            value: n.to_string(),
        }])?;
        let kind = match &v {
            Value::Number(_) => "number",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::String(_) => "string",
            _ => "other",
        };
        let mut out = Map::new();
        out.insert("kind".into(), json!(kind));
        out.insert("value".into(), v);
        Ok(out)
    }
}

static PERMANENT_RUNS: AtomicU32 = AtomicU32::new(0);

/// Fails with a permanent error and counts its attempts.
struct Permanent;

#[async_trait]
impl RunnableTask for Permanent {
    async fn run(&self, _ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        PERMANENT_RUNS.fetch_add(1, Ordering::SeqCst);
        Err(TaskError::permanent("syntax error at or near `SELEC`"))
    }
}

static CANCEL_SEEN: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Waits forever; a detached watcher records when the context's token is cancelled (what a task
/// holding a child process relies on).
struct WaitForCancel;

#[async_trait]
impl RunnableTask for WaitForCancel {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let token = ctx.cancellation().clone();
        tokio::spawn(async move {
            token.cancelled().await;
            CANCEL_SEEN.notify_one();
        });
        std::future::pending::<()>().await;
        Ok(Map::new())
    }
}

fn registry() -> Registry {
    let mut r = swoop_plugins::registry();
    r.register_task(TaskFactory {
        type_names: &["test.WriteFile"],
        properties: const {
            &[
                PropSpec::required("name", PropType::String),
                PropSpec::required("content", PropType::String),
            ]
        },
        build: |_, v| {
            Ok(TaskKind::Runnable(Arc::new(WriteFile {
                name: v["name"].as_str().unwrap_or("f").to_string(),
                content: v["content"].as_str().unwrap_or("").to_string(),
            })))
        },
    });
    r.register_task(TaskFactory {
        type_names: &["test.Typed"],
        properties: const { &[PropSpec::required("value", PropType::Any)] },
        build: |_, v| {
            Ok(TaskKind::Runnable(Arc::new(Typed {
                value: v["value"].clone(),
            })))
        },
    });
    r.register_task(TaskFactory {
        type_names: &["test.Permanent"],
        properties: &[],
        build: |_, _| Ok(TaskKind::Runnable(Arc::new(Permanent))),
    });
    r.register_task(TaskFactory {
        type_names: &["test.WaitForCancel"],
        properties: &[],
        build: |_, _| Ok(TaskKind::Runnable(Arc::new(WaitForCancel))),
    });
    r
}

struct Harness {
    engine: Arc<Engine>,
    store: Arc<SqliteStore>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).unwrap();
        let storage = LocalStorage::open(dir.path().join("storage")).unwrap();
        let dyn_store: Arc<dyn Store> = store.clone();
        let engine = Engine::start_with_storage(dyn_store, Arc::new(registry()), Arc::new(storage))
            .await
            .unwrap();
        Harness { engine, store, dir }
    }

    async fn run(&self, yaml: &str, inputs: Value) -> Execution {
        let flow = self.engine.put_flow(yaml).await.expect("the flow is valid");
        let started = self
            .engine
            .execute(NewExecution {
                namespace: flow.namespace.clone(),
                flow_id: flow.id.clone(),
                inputs: inputs.as_object().cloned().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .unwrap();
        let e = self
            .engine
            .wait_for_end(&started.id, Some(WAIT))
            .await
            .unwrap();
        assert!(e.state.current.is_terminal(), "not ended: {e:?}");
        e
    }

    async fn log_messages(&self, id: &str) -> Vec<String> {
        self.store.flush().await.unwrap();
        self.store
            .logs_for_execution(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.level >= LogLevel::Info)
            .map(|l| l.message)
            .collect()
    }
}

fn run_of<'a>(e: &'a Execution, task: &str) -> &'a swoop_core::TaskRun {
    e.task_run_list
        .iter()
        .find(|r| r.task_id == task)
        .unwrap_or_else(|| panic!("no run of `{task}` in {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_flow_between_tasks_and_go_with_their_execution() {
    let h = Harness::new().await;
    let e = h
        .run(
            r#"
id: files
namespace: company.team
tasks:
  - id: write
    type: test.WriteFile
    name: rows.ion
    content: "{a:1}\n{a:2}\n"
  - id: read
    type: io.kestra.plugin.core.log.Log
    message: "size={{ fileSize(outputs.write.uri) }} exists={{ fileExists(outputs.write.uri) }} first={{ fromIon(read(outputs.write.uri)).a }} all={{ read(outputs.write.uri) | fromIon(true) | length }}"
"#,
            json!({}),
        )
        .await;
    assert_eq!(e.state.current, State::Success, "{e:?}");
    let uri = run_of(&e, "write").outputs["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let write_run = &run_of(&e, "write").id;
    assert_eq!(
        uri,
        format!(
            "kestra:///company/team/files/executions/{}/tasks/write/{write_run}/rows.ion",
            e.id
        )
    );
    let logs = h.log_messages(&e.id).await;
    assert!(
        logs.iter()
            .any(|m| m == "size=12 exists=true first=1 all=2"),
        "{logs:?}"
    );
    let on_disk = h.dir.path().join(format!(
        "storage/company/team/files/executions/{}/tasks/write/{write_run}/rows.ion",
        e.id
    ));
    assert!(on_disk.is_file(), "{on_disk:?}");
    let files = h.engine.execution_files(&e.id).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].uri, uri);

    // Another execution cannot read this one's files.
    let other = h
        .run(
            &format!(
                "id: reader\nnamespace: company.team\ntasks:\n  - id: r\n    type: io.kestra.plugin.core.log.Log\n    message: \"{{{{ read('{uri}') }}}}\"\n"
            ),
            json!({}),
        )
        .await;
    assert_eq!(other.state.current, State::Failed);
    assert!(
        other
            .error
            .as_deref()
            .unwrap_or("")
            .contains("does not belong to this execution"),
        "{:?}",
        other.error
    );

    h.engine.delete_execution(&e.id).await.unwrap();
    assert!(!on_disk.exists(), "files are deleted with their execution");
    assert!(h.engine.get_execution(&e.id).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_rendering_and_labels() {
    let h = Harness::new().await;
    let e = h
        .run(
            r#"
id: typed
namespace: company.team
inputs:
  - id: n
    type: INT
tasks:
  - id: t
    type: test.Typed
    value: "{{ inputs.n }}"
  - id: list
    type: test.Typed
    value: "{{ [1, 2, inputs.n] }}"
"#,
            json!({"n": 7}),
        )
        .await;
    assert_eq!(e.state.current, State::Success, "{e:?}");
    assert_eq!(run_of(&e, "t").outputs["kind"], json!("number"));
    assert_eq!(run_of(&e, "t").outputs["value"], json!(7));
    assert_eq!(run_of(&e, "list").outputs["value"], json!([1, 2, 7]));
    assert!(
        e.labels.iter().any(|l| l.key == "typed" && l.value == "7"),
        "{:?}",
        e.labels
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_is_not_retried() {
    let h = Harness::new().await;
    let e = h
        .run(
            r#"
id: permanent
namespace: company.team
tasks:
  - id: p
    type: test.Permanent
    retry:
      type: constant
      interval: PT0.01S
      maxAttempts: 5
"#,
            json!({}),
        )
        .await;
    assert_eq!(e.state.current, State::Failed);
    assert_eq!(run_of(&e, "p").attempts.len(), 1, "{e:?}");
    assert_eq!(PERMANENT_RUNS.load(Ordering::SeqCst), 1);
    let logs = h.log_messages(&e.id).await;
    assert!(logs.iter().any(|m| m.contains("not retried")), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_cancels_the_task_token() {
    let h = Harness::new().await;
    let e = h
        .run(
            r#"
id: cancel
namespace: company.team
tasks:
  - id: w
    type: test.WaitForCancel
    timeout: PT0.2S
"#,
            json!({}),
        )
        .await;
    assert_eq!(e.state.current, State::Failed);
    tokio::time::timeout(WAIT, CANCEL_SEEN.notified())
        .await
        .expect("the token is cancelled at the timeout");
}
