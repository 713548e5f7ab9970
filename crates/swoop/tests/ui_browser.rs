//! The web UI in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core from `crates/swoop-server/ui/tests/browser.mjs`, against `swoop server local`
//! with a Redis list realtime trigger on a real `redis-server`.
//!
//! The script creates a flow in the editor, sees a validation error at its line, fixes it,
//! saves, fires the flow's webhook, watches the execution finish live, opens its logs and its
//! Gantt, and disables then enables the realtime trigger from its panel. Screenshots land in
//! `target/ui-screenshots/`. `scripts/install-test-deps.sh` installs Chromium and the script's
//! npm packages.

#![cfg(feature = "redis")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::{command, redis};
use common::{Server, free_port, http, json, wait_until};

/// The whole browser script's bound.
const SCRIPT_WITHIN: Duration = Duration::from_secs(240);

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../swoop-server/ui")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("ui-screenshots")
}

fn chromium() -> String {
    std::env::var("SWOOP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The trigger's state as the API shows it, `None` when it is not listed.
fn trigger_state(port: u16, flow_id: &str, trigger_id: &str) -> Option<String> {
    let (status, body) = http(
        port,
        "GET",
        &format!("/api/v1/triggers/search?flowId={flow_id}"),
        None,
    )
    .expect("GET triggers");
    assert_eq!(status, 200, "{body}");
    json(&body)["results"]
        .as_array()?
        .iter()
        .find(|t| t["triggerId"] == trigger_id)
        .and_then(|t| t["state"].as_str().map(str::to_string))
}

#[test]
fn the_ui_in_headless_chromium() {
    let ui = ui_dir();
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/install-test-deps.sh (it runs `npm ci` there)",
        ui.display()
    );
    assert!(
        Path::new(&chromium()).exists(),
        "no Chromium at {}: run scripts/install-test-deps.sh (apt-get install chromium) or set SWOOP_CHROMIUM",
        chromium()
    );
    let redis = redis();
    let flows = tempfile::tempdir().expect("a flows folder");
    std::fs::write(
        flows.path().join("orders.yaml"),
        format!(
            "id: orders
namespace: ui.realtime
tasks:
  - id: seen
    type: io.kestra.plugin.core.log.Log
    message: \"order {{{{ trigger.value }}}}\"
triggers:
  - id: events
    type: io.kestra.plugin.redis.list.RealtimeTrigger
    url: redis://127.0.0.1:{}/0
    key: orders
",
            redis.port
        ),
    )
    .expect("write the flow");
    let data = tempfile::tempdir().expect("a data folder");
    let server = Server::start(data.path(), Some(flows.path()), free_port());
    let port = server.port;
    wait_until("the realtime trigger runs", Duration::from_secs(30), || {
        trigger_state(port, "orders", "events").as_deref() == Some("RUNNING")
    });

    let shots = screenshots_dir();
    std::fs::create_dir_all(&shots).expect("the screenshots folder");
    let mut script = Command::new("node")
        .arg(ui.join("tests/browser.mjs"))
        .env("SWOOP_URL", format!("http://127.0.0.1:{port}"))
        .env("SWOOP_SCREENSHOTS", &shots)
        .env("SWOOP_CHROMIUM", chromium())
        .env("SWOOP_REALTIME_TRIGGER", "ui.realtime/orders/events")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (apt-get install nodejs)");
    let deadline = Instant::now() + SCRIPT_WITHIN;
    let status = loop {
        if let Some(status) = script.try_wait().expect("wait for the script") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = script.kill();
            panic!("the browser script did not end within {SCRIPT_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the browser script failed ({status}): see its output above"
    );

    // What the browser did is what the server holds.
    let executions = common::executions_in(port, "ui.test");
    assert!(
        executions.iter().any(|e| e["state"]["current"] == "SUCCESS"
            && e["trigger"]["type"] == "io.kestra.plugin.core.trigger.Webhook"),
        "no webhook execution ended SUCCESS in ui.test: {executions:#?}"
    );
    assert!(
        shots.join("execution.png").is_file(),
        "no execution.png in {}",
        shots.display()
    );
    // The trigger the panel enabled again runs: an event becomes an execution.
    assert_eq!(
        trigger_state(port, "orders", "events").as_deref(),
        Some("RUNNING")
    );
    let reply = command(redis.port, &[b"RPUSH", b"orders", b"after-the-browser"]).expect("RPUSH");
    assert!(reply.starts_with(':'), "RPUSH: {reply}");
    wait_until(
        "the re-enabled trigger's event becomes an execution",
        Duration::from_secs(30),
        || {
            common::executions_in(port, "ui.realtime")
                .iter()
                .any(|e| e["trigger"]["variables"]["value"] == "after-the-browser")
        },
    );
    drop(server);
}
