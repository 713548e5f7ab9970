//! Three `swoop server --db postgres://…` nodes on one real PostgreSQL (initdb on a free
//! loopback port) and a real Kafka-compatible broker (tansu), with a Kafka realtime trigger fed
//! at 1,000 events/s, while the nodes are killed, restarted and frozen:
//!
//! - `kill -9` of the trigger's owner: another node takes the trigger within the liveness
//!   timeout; every event has exactly one execution, and every execution ends;
//! - a rolling restart of the three nodes (SIGTERM, start again under the same name): the same;
//! - `SIGSTOP` of the owner past the liveness timeout, then `SIGCONT`: the woken node learns it
//!   was disconnected and stops without creating anything; the same counts;
//! - 200 executions running on a node that is killed all end on the others;
//! - a node with the webserver role only: the executions it creates run on an executor node.
//!
//! Counts are read from PostgreSQL itself (psql), so they do not depend on any node's API.
//! The nodes use small Kestra settings (heartbeat 200 ms, liveness 2 s, initial delay 0).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    Cluster, LIVENESS, NS, SLOW_FLOW, TRIGGER, mid_stream, one_at_a_time, produce_paced, signal,
    start_kafka_cluster,
};
use common::{http, json};

#[test]
fn kill_9_of_the_trigger_owner_moves_the_trigger_and_loses_nothing() {
    let _serial = one_at_a_time();
    let events = 10_000;
    let (_broker, mut cluster, owner, producing) = mid_stream(events);
    let killed = Instant::now();
    cluster.kill_9(&owner);
    let next = cluster.owner_of(TRIGGER, Some(&owner), Duration::from_secs(20));
    let took = killed.elapsed();
    assert_ne!(next, owner);
    eprintln!("trigger moved from {owner} to {next} {took:?} after kill -9 (liveness {LIVENESS})");
    producing.join().expect("the producer ran");
    cluster.wait_all_ended(events as u64, Duration::from_secs(120));
    let nodes = cluster.nodes_view(None);
    let dead = nodes.iter().find(|n| n["name"] == owner.as_str()).unwrap();
    assert_eq!(dead["state"], "DISCONNECTED", "{dead}");
}

#[test]
fn a_rolling_restart_of_every_node_loses_nothing_and_runs_nothing_twice() {
    let _serial = one_at_a_time();
    let (broker, mut cluster) = start_kafka_cluster();
    cluster.owner_of(TRIGGER, None, Duration::from_secs(30));
    let events = 15_000;
    let producing = produce_paced(&broker, events, 1_000);
    for name in ["n1", "n2", "n3"] {
        std::thread::sleep(Duration::from_secs(2));
        let node = cluster.node(name);
        let mut server = node.server.take().unwrap();
        signal(&server, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = server.child.wait().unwrap();
        assert!(status.success(), "{name} stopped gracefully: {status}");
        let shown = cluster
            .nodes_view(Some(name))
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap();
        assert!(
            shown["state"] == "TERMINATED_GRACEFULLY" || shown["state"] == "TERMINATED_FORCED",
            "{shown}"
        );
        cluster.relaunch(name);
    }
    producing.join().expect("the producer ran");
    cluster.owner_of(TRIGGER, None, Duration::from_secs(30));
    cluster.wait_all_ended(events as u64, Duration::from_secs(120));
}

#[test]
fn a_frozen_owner_that_wakes_up_stops_without_creating_anything() {
    let _serial = one_at_a_time();
    let events = 10_000;
    let (_broker, mut cluster, owner, producing) = mid_stream(events);
    signal(cluster.node(&owner).server.as_ref().unwrap(), "-STOP");
    let next = cluster.owner_of(TRIGGER, Some(&owner), Duration::from_secs(20));
    assert_ne!(next, owner);
    // Well past the liveness timeout, and the new owner is consuming.
    std::thread::sleep(Duration::from_secs(3));
    let before = cluster.counts().0;
    signal(cluster.node(&owner).server.as_ref().unwrap(), "-CONT");
    let mut woken = cluster.node(&owner).server.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = woken.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the woken node did not stop after learning it was disconnected"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "it stops with an error: {status}");
    producing.join().expect("the producer ran");
    cluster.wait_all_ended(events as u64, Duration::from_secs(120));
    assert!(cluster.counts().0 >= before);
    let shown = cluster
        .nodes_view(Some(&owner))
        .into_iter()
        .find(|n| n["name"] == owner.as_str())
        .unwrap();
    assert_eq!(shown["state"], "DISCONNECTED", "{shown}");
}

#[test]
fn running_executions_of_a_killed_node_all_end_on_the_others() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(&[("slow.yml", SLOW_FLOW.to_string())], &["a", "b", "c"]);
    let port = cluster.node("a").port;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let (status, body) = http(
            port,
            "POST",
            &format!("/api/v1/executions/{NS}/slow"),
            Some(("application/json", "{}")),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    let a_id = cluster
        .nodes_view(None)
        .into_iter()
        .find(|n| n["name"] == "a")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let running_on_a = cluster.sql(&format!(
        "SELECT count(*) FROM executions WHERE flow_id = 'slow' AND NOT finished AND owner = '{a_id}'"
    ));
    assert_eq!(running_on_a.trim(), "200", "all 200 run on a");
    cluster.kill_9("a");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cluster.sql(
            "SELECT count(*) FILTER (WHERE state = 'SUCCESS'), count(*) FILTER (WHERE NOT finished), \
             count(DISTINCT owner) FROM executions WHERE flow_id = 'slow'",
        );
        let parts: Vec<&str> = out.trim().split('|').collect();
        if parts[0] == "200" {
            assert_eq!(parts[1], "0");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed node's executions did not all end elsewhere: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_a = cluster.sql(&format!(
        "SELECT count(*) FROM executions WHERE flow_id = 'slow' AND owner = '{a_id}'"
    ));
    assert_eq!(still_a.trim(), "0", "every execution was taken over");
    let shares =
        cluster.sql("SELECT owner, count(*) FROM executions WHERE flow_id = 'slow' GROUP BY owner");
    eprintln!(
        "the killed node's executions went to (node|count): {}",
        shares.replace('\n', ", ")
    );
    // Each ran its tasks again from the start on its new node: the outputs name it.
    let (_, body) = http(
        cluster.live_port(Some("a")),
        "GET",
        &format!("/api/v1/executions/{}", ids[0]),
        None,
    )
    .unwrap();
    let e = json(&body);
    assert_eq!(e["state"]["current"], "SUCCESS", "{e}");
    assert_eq!(
        e["taskRunList"][1]["outputs"]["value"],
        format!("done {}", ids[0])
    );
}

#[test]
fn executions_created_on_a_webserver_node_run_on_an_executor_node() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(&[("slow.yml", SLOW_FLOW.replace("PT4S", "PT0.1S"))], &[]);
    cluster.add("web", &["--roles", "webserver"]);
    cluster.add("exec", &["--roles", "executor,scheduler,webserver"]);
    let web = cluster.node("web").port;
    let view = cluster.nodes_view(None);
    let roles = |name: &str| view.iter().find(|n| n["name"] == name).unwrap()["roles"].clone();
    assert_eq!(roles("web"), serde_json::json!(["webserver"]));
    assert_eq!(
        roles("exec"),
        serde_json::json!(["executor", "worker", "scheduler", "webserver"])
    );
    let (status, body) = http(
        web,
        "POST",
        &format!("/api/v1/executions/{NS}/slow"),
        Some(("application/json", "{}")),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(web, "GET", &format!("/api/v1/executions/{id}"), None).unwrap();
        let e = json(&body);
        if e["state"]["current"] == "SUCCESS" {
            break;
        }
        assert!(Instant::now() < deadline, "not run by the executor: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let exec_id = view.iter().find(|n| n["name"] == "exec").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let owner = cluster.sql(&format!("SELECT owner FROM executions WHERE id = '{id}'"));
    assert_eq!(owner.trim(), exec_id);
}

/// Three flows with a schedule each: started one after the other, the nodes end up with one
/// trigger each (the first took all three; each newcomer is handed one), and each trigger runs
/// on exactly one node.
#[test]
fn triggers_spread_over_the_nodes() {
    let _serial = one_at_a_time();
    let flow = |id: &str| {
        (
            format!("{id}.yml"),
            format!(
                "id: {id}\nnamespace: {NS}\ntriggers:\n  - id: every-minute\n    type: io.kestra.plugin.core.trigger.Schedule\n    cron: \"* * * * *\"\ntasks:\n  - id: hi\n    type: io.kestra.plugin.core.debug.Return\n    format: hi\n"
            ),
        )
    };
    let flows: Vec<(String, String)> = ["s1", "s2", "s3"].iter().map(|id| flow(id)).collect();
    let flows: Vec<(&str, String)> = flows.iter().map(|(f, s)| (f.as_str(), s.clone())).collect();
    let mut cluster = Cluster::start(&flows, &["first"]);
    let held = |cluster: &Cluster| -> Vec<(String, usize)> {
        cluster
            .nodes_view(None)
            .iter()
            .filter(|n| n["state"] == "RUNNING")
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["triggers"].as_array().map_or(0, Vec::len),
                )
            })
            .collect()
    };
    let wait_for = |cluster: &Cluster, want: &[usize]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut counts: Vec<usize> = held(cluster).iter().map(|(_, n)| *n).collect();
            counts.sort();
            if counts == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "triggers per node {:?}, expected {want:?}",
                held(cluster)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&cluster, &[3]);
    cluster.add("second", &[]);
    wait_for(&cluster, &[1, 2]);
    cluster.add("third", &[]);
    wait_for(&cluster, &[1, 1, 1]);
    // Every trigger once, on one node.
    let mut all: Vec<String> = cluster
        .nodes_view(None)
        .iter()
        .flat_map(|n| n["triggers"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            "cluster.test/s1/every-minute",
            "cluster.test/s2/every-minute",
            "cluster.test/s3/every-minute"
        ]
    );
}
