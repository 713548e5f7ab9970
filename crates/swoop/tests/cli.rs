//! The `swoop flow validate` and `swoop flow run` commands, run as a user would.

mod common;

use common::{examples, json, run, swoop};

#[test]
fn validate_prints_every_mistake_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "id: broken\nnamespace: company.team\ntasks:\n  - id: one\n    type: io.kestra.plugin.core.log.Logg\n    message: hi\n  - id: two\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n    colour: red\n  - id: three\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: [1, 2]\n",
    )
    .unwrap();
    let out = run(swoop().args(["flow", "validate"]).arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "three problems expected, got:\n{stdout}");
    let path = file.display().to_string();
    assert!(lines[0].starts_with(&format!("{path}:5:")), "{}", lines[0]);
    assert!(
        lines[0].contains("unknown task type")
            && lines[0].contains("io.kestra.plugin.core.log.Log`")
    );
    assert!(lines[1].starts_with(&format!("{path}:10:")), "{}", lines[1]);
    assert!(lines[1].contains("unknown property `colour`"));
    assert!(lines[2].starts_with(&format!("{path}:13:")), "{}", lines[2]);
    assert!(lines[2].contains("duration"));
}

#[test]
fn validate_accepts_the_examples() {
    let mut files: Vec<_> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let out = run(swoop().args(["flow", "validate"]).args(&files));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn flow_run_gives_the_expected_outputs() {
    let ex = examples();
    let out = run(swoop()
        .args(["flow", "run"])
        .arg(ex.join("enrich-order.yml"))
        .arg("--flows")
        .arg(&ex));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(e["state"]["current"], "SUCCESS");
    assert_eq!(e["outputs"]["warehouse"], "EU warehouse for swoop-demo");
    let runs = e["taskRunList"].as_array().unwrap();
    let run_of = |id: &str| {
        runs.iter()
            .find(|r| r["taskId"] == id)
            .unwrap_or_else(|| panic!("no run of {id}"))
    };
    assert_eq!(run_of("first_price")["outputs"]["value"], "10.5");
    assert_eq!(run_of("route")["outputs"]["value"], "FR");
    assert_eq!(run_of("flaky")["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(run_of("invoice")["outputs"]["outputs"]["number"], "INV-1");
    let items: Vec<_> = runs
        .iter()
        .filter(|r| r["taskId"] == "item")
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(items.len(), 2);
    assert!(items.contains(&"A-1".into()) && items.contains(&"B-2".into()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("order 1 → FR, invoice INV-1"), "{stderr}");
}

#[test]
fn flow_run_takes_inputs_and_trigger_variables() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("orders.yml");
    std::fs::write(
        &flow,
        r#"id: orders
namespace: company.shop
inputs:
  - id: qty
    type: INT
triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: k
tasks:
  - id: product
    type: io.kestra.plugin.core.debug.Return
    format: "{{ trigger.value | jq('.product_id') | first }} x{{ inputs.qty + 1 }}"
"#,
    )
    .unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"value": "{\"product_id\": \"20\", \"price\": \"166.89\"}", "offset": 7}"#,
    )
    .unwrap();
    let out = run(swoop()
        .args(["flow", "run"])
        .arg(&flow)
        .args(["--input", "qty=2", "--trigger"])
        .arg(&event));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(e["taskRunList"][0]["outputs"]["value"], "20 x3");
    assert_eq!(e["trigger"]["id"], "hook");
    assert_eq!(e["trigger"]["variables"]["offset"], 7);
}

#[test]
fn flow_run_exits_1_when_the_execution_fails() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("fail.yml");
    std::fs::write(
        &flow,
        "id: fails\nnamespace: company.team\ntasks:\n  - id: boom\n    type: io.kestra.plugin.core.execution.Fail\n    errorMessage: nope\n",
    )
    .unwrap();
    let out = run(swoop().args(["flow", "run"]).arg(&flow));
    assert_eq!(out.status.code(), Some(1));
    let e = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(e["state"]["current"], "FAILED");
}

#[test]
fn the_server_refuses_a_public_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(swoop()
        .args([
            "server",
            "local",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("SWOOP_AUTH_USER")
        .env_remove("SWOOP_AUTH_PASSWORD"));
    assert!(!out.status.success(), "the server started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0 without authentication")
            && stderr.contains("--auth-user")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    // Nothing was opened: the refusal comes before the store.
    assert!(!dir.path().join("swoop.db").exists());
}
