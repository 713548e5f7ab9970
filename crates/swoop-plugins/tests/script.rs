//! Script tasks against real processes (`/bin/sh`, `python3`): commands, files, outputs,
//! failures, build-time refusals, and kill/timeout stopping the whole process group.
#![cfg(feature = "script")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use swoop_core::Flow;
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunnableTask, TaskError, TaskKind};
use swoop_core::testing::TestRunContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHELL_COMMANDS: &str = "io.kestra.plugin.scripts.shell.Commands";
const SHELL_SCRIPT: &str = "io.kestra.plugin.scripts.shell.Script";
const PYTHON_SCRIPT: &str = "io.kestra.plugin.scripts.python.Script";
/// Bound on anything a test waits for.
const LIMIT: Duration = Duration::from_secs(20);

fn build(task: Value) -> Arc<dyn RunnableTask> {
    let registry = swoop_plugins::registry();
    let type_name = task["type"].as_str().expect("a type").to_string();
    let factory = registry.task(&type_name).expect("a registered type");
    match (factory.build)(&registry, &task) {
        Ok(TaskKind::Runnable(r)) => r,
        Ok(other) => panic!("not runnable: {other:?}"),
        Err(e) => panic!("build failed: {e}"),
    }
}

async fn run(task: Value, ctx: &TestRunContext) -> Result<Map<String, Value>, TaskError> {
    let runnable = build(task);
    tokio::time::timeout(LIMIT, runnable.run(ctx))
        .await
        .expect("the script ends in time")
}

async fn read(ctx: &TestRunContext, uri: &str) -> String {
    let mut text = String::new();
    ctx.storage
        .open(uri)
        .await
        .expect("the file is stored")
        .read_to_string(&mut text)
        .await
        .expect("readable");
    text
}

fn logged(ctx: &TestRunContext, level: LogLevel, text: &str) -> bool {
    ctx.logs
        .lock()
        .iter()
        .any(|(l, m)| *l == level && m == text)
}

#[tokio::test]
async fn commands_see_env_and_before_commands() {
    let ctx = TestRunContext::new(json!({"inputs": {"name": "swoop"}}));
    let out = run(
        json!({
            "id": "t", "type": SHELL_COMMANDS,
            "env": {"GREETING": "hello {{ inputs.name }}"},
            "beforeCommands": ["PREFIX=before"],
            "commands": ["echo \"$PREFIX $GREETING\"", "echo 'to stderr' >&2"],
        }),
        &ctx,
    )
    .await
    .expect("the script succeeds");
    assert!(
        logged(&ctx, LogLevel::Info, "before hello swoop"),
        "{:?}",
        ctx.logs.lock()
    );
    assert!(
        logged(&ctx, LogLevel::Error, "to stderr"),
        "{:?}",
        ctx.logs.lock()
    );
    assert_eq!(out["exitCode"], 0);
    assert_eq!(out["stdOutLineCount"], 1);
    assert_eq!(out["stdErrLineCount"], 1);
}

#[tokio::test]
async fn fail_fast_stops_at_the_first_failing_command() {
    let ctx = TestRunContext::new(json!({}));
    let task = |fail_fast: bool| {
        json!({
            "id": "t", "type": SHELL_COMMANDS, "failFast": fail_fast,
            "commands": ["echo first", "false", "echo after"],
        })
    };
    let e = run(task(true), &ctx)
        .await
        .expect_err("`false` fails the script");
    assert!(e.message.contains("exit code 1"), "{e}");
    assert!(logged(&ctx, LogLevel::Info, "first"));
    assert!(
        !logged(&ctx, LogLevel::Info, "after"),
        "set -e stops at `false`"
    );

    let ctx = TestRunContext::new(json!({}));
    let out = run(task(false), &ctx)
        .await
        .expect("the last command decides");
    assert!(logged(&ctx, LogLevel::Info, "after"));
    assert_eq!(out["exitCode"], 0);
}

#[tokio::test]
async fn nonzero_exit_fails_with_the_code_and_the_last_stderr_lines() {
    let ctx = TestRunContext::new(json!({}));
    let e = run(
        json!({
            "id": "t", "type": SHELL_SCRIPT,
            "script": "echo 'something broke' >&2\nexit 3",
        }),
        &ctx,
    )
    .await
    .expect_err("exit 3 fails");
    assert!(e.message.contains("exit code 3"), "{e}");
    assert!(e.message.contains("something broke"), "{e}");
    assert!(logged(&ctx, LogLevel::Error, "something broke"));
}

#[tokio::test]
async fn marker_lines_become_vars_and_are_not_logged() {
    let ctx = TestRunContext::new(json!({}));
    let out = run(
        json!({
            "id": "t", "type": SHELL_COMMANDS,
            "commands": [
                r#"echo '::{"outputs":{"count":3,"nested":{"a":[1,2]}}}::'"#,
                r#"echo '::{"outputs":{"status":"ok"}}::'"#,
                "echo plain",
            ],
        }),
        &ctx,
    )
    .await
    .expect("the script succeeds");
    assert_eq!(
        out["vars"],
        json!({"count": 3, "nested": {"a": [1, 2]}, "status": "ok"})
    );
    assert_eq!(out["stdOutLineCount"], 3);
    let messages = ctx.messages();
    assert!(
        messages.iter().all(|m| !m.contains("outputs")),
        "{messages:?}"
    );
    assert!(messages.contains(&"plain".to_string()));
}

#[tokio::test]
async fn input_files_inline_and_from_storage_output_files_stored() {
    let ctx = TestRunContext::new(json!({"inputs": {"who": "world"}}));
    let (uri, mut writer) = ctx.storage.create("upstream.csv").await.unwrap();
    writer.write_all(b"id,total\n1,9.5\n").await.unwrap();
    writer.shutdown().await.unwrap();
    let out = run(
        json!({
            "id": "t", "type": SHELL_COMMANDS,
            "inputFiles": {
                "greeting.txt": "hello {{ inputs.who }}",
                "data/orders.csv": uri,
            },
            "outputFiles": ["*.out", "reports/**"],
            "commands": [
                "cat greeting.txt > copy.out",
                "mkdir -p reports/2024",
                "wc -l < {{ workingDir }}/data/orders.csv | tr -d ' ' > reports/2024/lines.txt",
                "echo ignored > not-matched.log",
            ],
        }),
        &ctx,
    )
    .await
    .expect("the script succeeds");
    let files = out["outputFiles"].as_object().expect("a map").clone();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["copy.out", "reports/2024/lines.txt"]
    );
    let copy = files["copy.out"].as_str().unwrap();
    assert!(copy.starts_with("kestra:///test/flow/executions/exec1/tasks/task/run1/"));
    assert_eq!(read(&ctx, copy).await, "hello world");
    let lines = files["reports/2024/lines.txt"].as_str().unwrap();
    assert_eq!(read(&ctx, lines).await, "2\n");
}

#[tokio::test]
async fn input_files_as_json_text_and_bad_names_refused() {
    let ctx = TestRunContext::new(json!({}));
    let out = run(
        json!({
            "id": "t", "type": SHELL_COMMANDS,
            "inputFiles": r#"{"a.txt": "from json"}"#,
            "commands": [r#"echo "::{\"outputs\":{\"a\":\"$(cat a.txt)\"}}::""#],
        }),
        &ctx,
    )
    .await
    .expect("the script succeeds");
    assert_eq!(out["vars"]["a"], "from json");
    let e = run(
        json!({"id": "t", "type": SHELL_COMMANDS, "inputFiles": {"../evil": "x"}, "commands": ["true"]}),
        &ctx,
    )
    .await
    .expect_err("a path outside the working directory is refused");
    assert!(
        e.message.contains("relative to the working directory"),
        "{e}"
    );
    assert!(!e.retryable);
}

#[tokio::test]
async fn python_script_has_pebble_aliases_and_outputs() {
    let ctx =
        TestRunContext::new(json!({"inputs": {"flag": true, "data": {"a": null, "b": false}}}));
    let out = run(
        json!({
            "id": "t", "type": PYTHON_SCRIPT,
            "outputFiles": ["*"],
            "script": "import json\nflag = {{ inputs.flag }}\ndata = {{ inputs.data }}\nassert flag is True and data == {'a': None, 'b': False}\nopen('result.json', 'w').write(json.dumps({'flag': flag}))\nprint('::' + json.dumps({'outputs': {'flag': flag}}) + '::')\n",
        }),
        &ctx,
    )
    .await
    .expect("the python script succeeds");
    assert_eq!(out["vars"], json!({"flag": true}));
    let files = out["outputFiles"].as_object().unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["result.json"],
        "swoop's own script file is no output"
    );
    assert_eq!(
        read(&ctx, files["result.json"].as_str().unwrap()).await,
        r#"{"flag": true}"#
    );
}

#[test]
fn docker_runner_and_package_installs_are_refused_when_the_flow_is_parsed() {
    let registry = swoop_plugins::registry();
    let flow = |task: &str| format!("id: f\nnamespace: test\ntasks:\n{task}");
    let docker = flow(
        "  - id: py\n    type: io.kestra.plugin.scripts.python.Script\n    taskRunner:\n      type: io.kestra.plugin.scripts.runner.docker.Docker\n    script: print(1)\n",
    );
    let errors = Flow::parse(&docker, &registry).expect_err("the Docker runner is refused");
    let text = errors
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("Docker runner"), "{text}");
    assert!(
        text.contains("io.kestra.plugin.core.runner.Process"),
        "{text}"
    );

    let deps = flow(
        "  - id: py\n    type: io.kestra.plugin.scripts.python.Commands\n    dependencies: [requests]\n    commands: [python3 -V]\n",
    );
    let errors = Flow::parse(&deps, &registry).expect_err("dependencies are refused");
    let text = errors
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("dependencies") && text.contains("beforeCommands"),
        "{text}"
    );

    let fine = flow(
        "  - id: sh\n    type: io.kestra.plugin.scripts.shell.Commands\n    taskRunner:\n      type: io.kestra.plugin.core.runner.Process\n    containerImage: ubuntu\n    commands: [echo hi]\n",
    );
    Flow::parse(&fine, &registry).expect("the Process runner is accepted");
}

/// Is the process gone (no entry, or a zombie waiting for its reaper)?
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Starts the task on its own, waits until it logged `count` lines `pid N`, and returns the
/// pids with the running task.
async fn start_with_pids(
    script: &str,
    count: usize,
) -> (
    Arc<TestRunContext>,
    tokio::task::JoinHandle<Result<Map<String, Value>, TaskError>>,
    Vec<u32>,
) {
    let ctx = Arc::new(TestRunContext::new(json!({})));
    let runnable = build(json!({"id": "t", "type": SHELL_SCRIPT, "script": script}));
    let handle = {
        let ctx = ctx.clone();
        tokio::spawn(async move { runnable.run(ctx.as_ref()).await })
    };
    let started = Instant::now();
    loop {
        let pids: Vec<u32> = ctx
            .messages()
            .iter()
            .filter_map(|m| m.strip_prefix("pid ").and_then(|p| p.parse().ok()))
            .collect();
        if pids.len() >= count {
            return (ctx, handle, pids);
        }
        assert!(started.elapsed() < LIMIT, "the script never said its pids");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(pids: &[u32], within: Duration) -> Duration {
    let started = Instant::now();
    while !pids.iter().all(|p| gone(*p)) {
        assert!(
            started.elapsed() < within,
            "processes {pids:?} still run {:?} after the stop",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

const TWO_SLEEPERS: &str =
    "sleep 1000 &\necho \"pid $!\"\nsleep 1000 &\necho \"pid $!\"\necho \"pid $$\"\nwait\n";

#[tokio::test]
async fn dropping_the_future_kills_the_grandchildren() {
    let (_ctx, handle, pids) = start_with_pids(TWO_SLEEPERS, 3).await;
    assert!(pids.iter().all(|p| !gone(*p)));
    handle.abort();
    let _ = handle.await;
    let took = wait_gone(&pids, Duration::from_secs(3)).await;
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM ends them at once: {took:?}"
    );
}

#[tokio::test]
async fn cancellation_kills_the_group_and_fails_the_task() {
    let (ctx, handle, pids) = start_with_pids(TWO_SLEEPERS, 3).await;
    ctx.cancel.cancel();
    let result = tokio::time::timeout(LIMIT, handle)
        .await
        .expect("the task returns once cancelled")
        .expect("no panic");
    let e = result.expect_err("a cancelled script fails");
    assert!(e.message.contains("stopped"), "{e}");
    wait_gone(&pids, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_script_ignoring_sigterm_is_killed_after_the_grace() {
    let script = "trap '' TERM\nsleep 1000 &\necho \"pid $!\"\necho \"pid $$\"\nwait\n";
    let (_ctx, handle, pids) = start_with_pids(script, 2).await;
    let stopped = Instant::now();
    handle.abort();
    let _ = handle.await;
    wait_gone(
        &pids,
        swoop_plugins::script::KILL_GRACE + Duration::from_secs(5),
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took >= swoop_plugins::script::KILL_GRACE - Duration::from_millis(200),
        "SIGTERM is ignored, only SIGKILL after the grace stops them ({took:?})"
    );
}

#[cfg(feature = "core")]
#[test]
fn the_examples_parse() {
    let registry = swoop_plugins::registry();
    for name in ["shell-script.yml", "python-script.yml"] {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).expect("the example exists");
        if let Err(errors) = Flow::parse(&source, &registry) {
            panic!("{name}: {errors:?}");
        }
    }
}

#[tokio::test]
async fn worker_secrets_are_hidden_unless_passed_in_env() {
    // SAFETY: the variable's name is used by this test alone.
    unsafe { std::env::set_var("SWOOP_SECRET_SCRIPT_TEST_TOKEN", "s3cr3t") };
    let ctx = TestRunContext::new(json!({}));
    run(
        json!({
            "id": "t", "type": SHELL_COMMANDS,
            "env": {"TOKEN": "{{ secret('SCRIPT_TEST_TOKEN') }}"},
            "commands": [
                "echo \"inherited: ${SWOOP_SECRET_SCRIPT_TEST_TOKEN:-none}\"",
                "echo \"passed: $TOKEN\"",
            ],
        }),
        &ctx,
    )
    .await
    .expect("the script succeeds");
    assert!(
        logged(&ctx, LogLevel::Info, "inherited: none"),
        "{:?}",
        ctx.logs.lock()
    );
    assert!(logged(&ctx, LogLevel::Info, "passed: s3cr3t"));
}
