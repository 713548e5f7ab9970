//! `kill -9` of `swoop server local` while executions run, then a restart: every execution
//! reaches a final state, the tasks that were running run again, none vanish.

mod common;

use std::time::{Duration, Instant};

use common::{Server, free_port, http, json};

const FLOW: &str = r#"id: slow
namespace: crash.test
inputs:
  - id: n
    type: INT
tasks:
  - id: before
    type: io.kestra.plugin.core.debug.Return
    format: "start {{ inputs.n }}"
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT1S
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: "end {{ inputs.n }}"
"#;

fn search(port: u16) -> serde_json::Value {
    let (status, body) = http(
        port,
        "GET",
        "/api/v1/executions/search?namespace=crash.test&size=100",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    json(&body)
}

#[test]
fn kill_9_then_restart_finishes_every_execution() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("slow.yml"), FLOW).unwrap();
    let port = free_port();
    let mut server = Server::start(data.path(), Some(flows.path()), port);

    const N: usize = 20;
    let mut ids = Vec::new();
    for n in 0..N {
        let body = format!("{{\"n\": {n}}}");
        let (status, text) = http(
            port,
            "POST",
            "/api/v1/executions/crash.test/slow",
            Some(("application/json", &body)),
        )
        .unwrap();
        assert_eq!(status, 200, "{text}");
        ids.push(json(&text)["id"].as_str().unwrap().to_string());
    }
    // Wait until every execution is inside its Sleep, then kill the process outright.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = search(port);
        let sleeping = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["taskRunList"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["taskId"] == "nap" && t["state"]["current"] == "RUNNING")
            })
            .count();
        if sleeping == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "executions never all reached the Sleep task"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill_9();

    let server = Server::start(data.path(), Some(flows.path()), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let page = search(server.port);
        let results = page["results"].as_array().unwrap().clone();
        if results.iter().all(|e| {
            let s = e["state"]["current"].as_str().unwrap();
            ["SUCCESS", "WARNING", "FAILED", "KILLED"].contains(&s)
        }) {
            break results;
        }
        assert!(
            Instant::now() < deadline,
            "executions did not all finish after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(finished.len(), N, "an execution vanished");
    for id in &ids {
        let e = finished
            .iter()
            .find(|e| e["id"] == id.as_str())
            .expect("every execution is still there");
        assert_eq!(e["state"]["current"], "SUCCESS", "{e}");
        let runs = e["taskRunList"].as_array().unwrap();
        let run = |task: &str| runs.iter().find(|t| t["taskId"] == task).unwrap();
        // The task that had finished before the crash did not run again …
        assert_eq!(run("before")["attempts"].as_array().unwrap().len(), 1);
        // … the one that was running ran again: its first attempt was cut by the crash.
        let nap = run("nap")["attempts"].as_array().unwrap();
        assert_eq!(nap.len(), 2, "{e}");
        assert_eq!(nap[0]["state"]["current"], "KILLED");
        assert_eq!(nap[1]["state"]["current"], "SUCCESS");
        assert!(
            run("after")["outputs"]["value"]
                .as_str()
                .unwrap()
                .starts_with("end ")
        );
    }
}

/// A graceful stop (SIGTERM) kills nothing: executions still running after the grace period
/// stay unfinished and end at the next start.
#[test]
fn sigterm_leaves_long_executions_to_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("slow.yml"),
        FLOW.replace("duration: PT1S", "duration: PT8S"),
    )
    .unwrap();
    let port = free_port();
    let mut server = Server::start(data.path(), Some(flows.path()), port);
    let (status, text) = http(
        port,
        "POST",
        "/api/v1/executions/crash.test/slow",
        Some(("application/json", "{\"n\": 1}")),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let id = json(&text)["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !search(port)["results"][0]["taskRunList"]
        .as_array()
        .is_some_and(|runs| runs.iter().any(|t| t["taskId"] == "nap"))
    {
        assert!(
            Instant::now() < deadline,
            "the execution never reached its Sleep"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful exit: {exit:?}");

    let server = Server::start(data.path(), Some(flows.path()), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(
            server.port,
            "GET",
            &format!("/api/v1/executions/{id}"),
            None,
        )
        .unwrap();
        let e = json(&body);
        match e["state"]["current"].as_str().unwrap() {
            "SUCCESS" => break,
            "KILLED" | "FAILED" => panic!("the stop ended the execution: {e}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the execution did not finish after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
