//! The conformance suite every [`Store`] backend passes.
//!
//! Each check is a `pub async fn` taking an `Arc<dyn Store>`; [`store_conformance_tests!`]
//! expands into one `#[tokio::test]` per check, given an async constructor of a fresh store:
//!
//! ```ignore
//! async fn make_store() -> impl swoop_store::conformance::StoreHandle { /* … */ }
//! swoop_store::store_conformance_tests!(make_store);
//! ```
//!
//! The checks only rely on what they wrote themselves (unique namespaces, triggers and ids),
//! so a backend may hand every test the same database. Durability across a restart needs a
//! constructor that can open the same store again: [`durable_across_reopen`] takes one and is
//! called by hand.
//!
//! Reads see committed data; the checks call [`Store::flush`] before reading background writes.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use swoop_core::model::{
    Attempt, ExecutionTrigger, Label, LogLevel, StateHistory, StateInfo, new_id,
};
use swoop_core::{Execution, LogEntry, State, TaskRun};

use crate::{Created, DedupKey, Durability, ExecutionQuery, Store};

/// What a test constructor returns: a store and whatever must live as long as it (a temporary
/// directory, a database container …).
pub trait StoreHandle: Send + Sync {
    fn store(&self) -> Arc<dyn Store>;
}

impl<S: Store + 'static> StoreHandle for Arc<S> {
    fn store(&self) -> Arc<dyn Store> {
        self.clone()
    }
}

impl StoreHandle for Arc<dyn Store> {
    fn store(&self) -> Arc<dyn Store> {
        self.clone()
    }
}

/// A store with a guard that is dropped after it.
pub struct Guarded<G> {
    pub store: Arc<dyn Store>,
    pub guard: G,
}

impl<G: Send + Sync> StoreHandle for Guarded<G> {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

/// One `#[tokio::test]` per conformance check. The argument is an async constructor (a path to
/// an `async fn` or a closure returning a future) whose output implements
/// [`StoreHandle`](crate::conformance::StoreHandle); it is called once per test. The invoking
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make;
            flow_revisions,
            flow_listing_and_separation,
            execution_roundtrip,
            delete_execution_keeps_its_dedup_key,
            dedup_duplicate_writes_nothing,
            dedup_concurrent_creates_one,
            dedup_scoped_by_trigger,
            save_background_then_flush,
            save_wait_is_readable,
            saves_keep_queue_order,
            search_executions,
            search_paging,
            search_keyset_paging,
            search_by_time_labels_and_trigger,
            unfinished_executions,
            logs_in_order_per_execution,
            trigger_state,
            many_concurrent_creates,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let handle = ($make)().await;
                let store = $crate::conformance::StoreHandle::store(&handle);
                $crate::conformance::$name(store).await;
                drop(handle);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A prefix no other test uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &new_id()[20..])
}

fn key(trigger: &str, key: &str) -> DedupKey {
    DedupKey {
        trigger: trigger.to_string(),
        key: key.to_string(),
    }
}

/// An execution in `state` whose first state is dated `created`.
fn execution_at(namespace: &str, flow_id: &str, state: State, created: DateTime<Utc>) -> Execution {
    let mut e = Execution::new(namespace, flow_id, 1);
    e.state = StateInfo {
        current: State::Created,
        histories: vec![StateHistory {
            state: State::Created,
            date: created,
        }],
    };
    if state != State::Created {
        e.state.current = state;
        e.state.histories.push(StateHistory {
            state,
            date: created + Duration::milliseconds(5),
        });
    }
    e
}

/// An execution using every part of the model.
fn rich_execution(namespace: &str) -> Execution {
    let mut e = Execution::new(namespace, "rich", 3);
    e.state.transition(State::Running);
    e.inputs = json!({"name": "world", "n": 3, "nested": {"list": [1, 2.5, null, true]}})
        .as_object()
        .cloned()
        .unwrap_or_default();
    e.labels = vec![Label {
        key: "team".into(),
        value: "data".into(),
    }];
    let mut variables = Map::new();
    variables.insert("offset".into(), json!(42));
    e.trigger = Some(ExecutionTrigger {
        id: "kafka".into(),
        type_name: "io.kestra.plugin.kafka.Trigger".into(),
        variables: variables.into(),
    });
    let mut outputs = Map::new();
    outputs.insert("value".into(), json!("héllo ✓ \"quoted\"\n"));
    e.task_run_list = vec![TaskRun {
        id: new_id(),
        execution_id: e.id.clone(),
        namespace: namespace.into(),
        flow_id: "rich".into(),
        task_id: "hello".into(),
        parent_task_run_id: Some(new_id()),
        value: Some("[1,2]".into()),
        iteration: Some(2),
        attempts: vec![Attempt {
            state: StateInfo::new(State::Success),
        }],
        outputs,
        state: StateInfo::new(State::Success),
        error_branch: true,
    }];
    e.outputs
        .insert("out".into(), json!({"a": [1, {"b": "c"}]}));
    e.parent_execution_id = Some(new_id());
    e.error = Some("nothing wrong".into());
    e
}

fn log(e: &Execution, message: &str) -> LogEntry {
    LogEntry {
        namespace: e.namespace.clone(),
        flow_id: e.flow_id.clone(),
        execution_id: e.id.clone(),
        task_id: Some("t".into()),
        task_run_id: None,
        attempt_number: 0,
        timestamp: Utc::now(),
        level: LogLevel::Info,
        message: message.to_string(),
    }
}

fn json_of(e: &Execution) -> Value {
    serde_json::to_value(e).expect("an execution serializes")
}

async fn get(store: &dyn Store, id: &str) -> Option<Execution> {
    store.get_execution(id).await.expect("get_execution")
}

async fn create(store: &dyn Store, e: &Execution) {
    let created = store
        .create_execution(e, None)
        .await
        .expect("create_execution");
    assert_eq!(created, Created::Created, "creating {}", e.id);
}

fn ids(executions: &[Execution]) -> Vec<String> {
    executions.iter().map(|e| e.id.clone()).collect()
}

fn query(namespace: Option<&str>, flow_id: Option<&str>, states: &[State]) -> ExecutionQuery {
    ExecutionQuery {
        namespace: namespace.map(str::to_string),
        flow_id: flow_id.map(str::to_string),
        states: states.to_vec(),
        page: 1,
        size: 100,
        ..ExecutionQuery::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Flows

/// Unchanged source keeps its revision, a change bumps it, delete hides the flow but keeps its
/// revisions, a re-create after delete bumps again.
pub async fn flow_revisions(store: Arc<dyn Store>) {
    let ns = unique("conf.flows");
    let v1 = "id: hello\nnamespace: x\ntasks: []\n";
    let v2 = "id: hello\nnamespace: x\ntasks: [] # changed\n";

    assert_eq!(store.get_flow(&ns, "hello").await.unwrap(), None);
    let r1 = store.put_flow(&ns, "hello", v1).await.unwrap();
    assert_eq!(
        (r1.namespace.as_str(), r1.id.as_str()),
        (ns.as_str(), "hello")
    );
    assert_eq!(r1.revision, 1);
    assert_eq!(r1.source, v1);
    assert_eq!(
        store.get_flow(&ns, "hello").await.unwrap(),
        Some(r1.clone())
    );

    let same = store.put_flow(&ns, "hello", v1).await.unwrap();
    assert_eq!(same.revision, 1, "an unchanged source keeps its revision");
    assert_eq!(same.source, v1);

    let r2 = store.put_flow(&ns, "hello", v2).await.unwrap();
    assert_eq!(r2.revision, 2, "a changed source bumps the revision");
    assert_eq!(
        store.get_flow(&ns, "hello").await.unwrap(),
        Some(r2.clone())
    );
    let old = store.get_flow_revision(&ns, "hello", 1).await.unwrap();
    assert_eq!(old.map(|f| f.source), Some(v1.to_string()));
    assert_eq!(
        store.get_flow_revision(&ns, "hello", 9).await.unwrap(),
        None
    );

    assert!(store.delete_flow(&ns, "hello").await.unwrap());
    assert_eq!(
        store.get_flow(&ns, "hello").await.unwrap(),
        None,
        "delete hides"
    );
    assert!(
        !store.delete_flow(&ns, "hello").await.unwrap(),
        "deleting a deleted flow says there was none"
    );
    assert!(!store.delete_flow(&ns, "nope").await.unwrap());
    assert_eq!(
        store
            .get_flow_revision(&ns, "hello", 2)
            .await
            .unwrap()
            .map(|f| f.source),
        Some(v2.to_string()),
        "a deleted flow's revisions stay readable"
    );

    let r3 = store.put_flow(&ns, "hello", v2).await.unwrap();
    assert_eq!(
        r3.revision, 3,
        "a re-create after delete bumps, even with the same source"
    );
    assert_eq!(store.get_flow(&ns, "hello").await.unwrap(), Some(r3));
    assert!(
        store
            .get_flow_revision(&ns, "hello", 1)
            .await
            .unwrap()
            .is_some(),
        "old revisions survive a re-create"
    );
}

/// `list_flows` gives the newest live revision of each flow by namespace then id; namespace and
/// id are separate keys.
pub async fn flow_listing_and_separation(store: Arc<dyn Store>) {
    let root = unique("conf.list");
    let (a, ab) = (format!("{root}.a"), format!("{root}.a.b"));

    store.put_flow(&ab, "c", "ab/c v1").await.unwrap();
    store.put_flow(&a, "b.c", "a/b.c v1").await.unwrap();
    store.put_flow(&a, "zeta", "a/zeta v1").await.unwrap();
    store.put_flow(&a, "alpha", "a/alpha v1").await.unwrap();
    store.put_flow(&a, "alpha", "a/alpha v2").await.unwrap();
    store.put_flow(&a, "gone", "a/gone v1").await.unwrap();
    assert!(store.delete_flow(&a, "gone").await.unwrap());
    // Same id in two namespaces: two flows.
    store.put_flow(&ab, "zeta", "ab/zeta v1").await.unwrap();

    let listed: Vec<(String, String, u32, String)> = store
        .list_flows()
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.namespace.starts_with(&root))
        .map(|f| (f.namespace, f.id, f.revision, f.source))
        .collect();
    let expected = vec![
        (a.clone(), "alpha".to_string(), 2, "a/alpha v2".to_string()),
        (a.clone(), "b.c".to_string(), 1, "a/b.c v1".to_string()),
        (a.clone(), "zeta".to_string(), 1, "a/zeta v1".to_string()),
        (ab.clone(), "c".to_string(), 1, "ab/c v1".to_string()),
        (ab.clone(), "zeta".to_string(), 1, "ab/zeta v1".to_string()),
    ];
    assert_eq!(listed, expected);

    assert_eq!(
        store.get_flow(&a, "zeta").await.unwrap().map(|f| f.source),
        Some("a/zeta v1".to_string())
    );
    assert_eq!(
        store.get_flow(&ab, "zeta").await.unwrap().map(|f| f.source),
        Some("ab/zeta v1".to_string())
    );
    assert_eq!(store.get_flow(&ab, "b.c").await.unwrap(), None);
    assert_eq!(store.get_flow(&a, "c").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Executions

/// What is created is what is read back, to the JSON.
pub async fn execution_roundtrip(store: Arc<dyn Store>) {
    let e = rich_execution(&unique("conf.roundtrip"));
    create(&*store, &e).await;
    let got = get(&*store, &e.id).await.expect("the execution is stored");
    assert_eq!(json_of(&got), json_of(&e));
    assert_eq!(got, e);
    assert_eq!(get(&*store, &new_id()).await, None);
}

/// Deleting an execution removes it and its logs; its dedup key still refuses a second create.
pub async fn delete_execution_keeps_its_dedup_key(store: Arc<dyn Store>) {
    let ns = unique("conf.delete");
    let e = rich_execution(&ns);
    let dedup = key(&format!("{ns}/flow/t"), "p0/o1");
    assert_eq!(
        store
            .create_execution(&e, Some(dedup.clone()))
            .await
            .unwrap(),
        Created::Created
    );
    store.append_logs(vec![LogEntry {
        namespace: e.namespace.clone(),
        flow_id: e.flow_id.clone(),
        execution_id: e.id.clone(),
        task_id: None,
        task_run_id: None,
        attempt_number: 0,
        timestamp: Utc::now(),
        level: LogLevel::Info,
        message: "hello".into(),
    }]);
    store.flush().await.unwrap();
    assert_eq!(store.logs_for_execution(&e.id).await.unwrap().len(), 1);
    assert!(store.delete_execution(&e.id).await.unwrap());
    assert_eq!(get(&*store, &e.id).await, None);
    assert!(store.logs_for_execution(&e.id).await.unwrap().is_empty());
    assert!(
        !store.delete_execution(&e.id).await.unwrap(),
        "deleted twice"
    );
    let again = rich_execution(&ns);
    assert!(matches!(
        store.create_execution(&again, Some(dedup)).await.unwrap(),
        Created::Duplicate { .. }
    ));
}

/// A second create with a recorded dedup key writes nothing and names the first execution.
pub async fn dedup_duplicate_writes_nothing(store: Arc<dyn Store>) {
    let ns = unique("conf.dedup");
    let trigger = format!("{ns}/flow/kafka");
    let k = key(&trigger, "topic/0/42");
    let first = Execution::new(&ns, "flow", 1);
    let second = Execution::new(&ns, "flow", 1);

    assert_eq!(store.execution_for_dedup(&k).await.unwrap(), None);
    assert_eq!(
        store
            .create_execution(&first, Some(k.clone()))
            .await
            .unwrap(),
        Created::Created
    );
    assert_eq!(
        store
            .create_execution(&second, Some(k.clone()))
            .await
            .unwrap(),
        Created::Duplicate {
            existing_id: first.id.clone()
        }
    );
    assert_eq!(
        get(&*store, &second.id).await,
        None,
        "a duplicate writes nothing"
    );
    assert_eq!(
        get(&*store, &first.id).await.map(|e| e.id),
        Some(first.id.clone())
    );
    assert_eq!(
        store.execution_for_dedup(&k).await.unwrap(),
        Some(first.id.clone())
    );
    assert_eq!(
        store
            .execution_for_dedup(&key(&trigger, "topic/0/43"))
            .await
            .unwrap(),
        None
    );
    let page = store
        .search_executions(&query(Some(&ns), None, &[]))
        .await
        .unwrap();
    assert_eq!(page.total, 1);
}

/// 50 tasks create with the same dedup key at once: exactly one creates.
pub async fn dedup_concurrent_creates_one(store: Arc<dyn Store>) {
    let ns = unique("conf.race");
    let k = key(&format!("{ns}/flow/webhook"), "request-1");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let store = store.clone();
        let (ns, k) = (ns.clone(), k.clone());
        tasks.spawn(async move {
            let e = Execution::new(&ns, "flow", 1);
            let created = store.create_execution(&e, Some(k)).await.unwrap();
            (e.id, created)
        });
    }
    let mut winners = Vec::new();
    let mut duplicates = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, created) = joined.expect("a create task panicked");
        match created {
            Created::Created => winners.push(id),
            Created::Duplicate { existing_id } => duplicates.push(existing_id),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    let winner = &winners[0];
    assert_eq!(duplicates.len(), 49);
    assert!(
        duplicates.iter().all(|d| d == winner),
        "every duplicate names the winner"
    );
    assert_eq!(
        store.execution_for_dedup(&k).await.unwrap().as_ref(),
        Some(winner)
    );
    let page = store
        .search_executions(&query(Some(&ns), None, &[]))
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(ids(&page.results), vec![winner.clone()]);
}

/// A dedup key is scoped by its trigger.
pub async fn dedup_scoped_by_trigger(store: Arc<dyn Store>) {
    let ns = unique("conf.scope");
    let a = Execution::new(&ns, "flow", 1);
    let b = Execution::new(&ns, "flow", 1);
    let c = Execution::new(&ns, "flow", 1);
    let ka = key(&format!("{ns}/flow/a"), "same");
    let kb = key(&format!("{ns}/flow/b"), "same");
    let ka2 = key(&format!("{ns}/flow/a"), "other");
    for (e, k) in [(&a, &ka), (&b, &kb), (&c, &ka2)] {
        assert_eq!(
            store.create_execution(e, Some(k.clone())).await.unwrap(),
            Created::Created
        );
    }
    assert_eq!(
        store.execution_for_dedup(&ka).await.unwrap(),
        Some(a.id.clone())
    );
    assert_eq!(
        store.execution_for_dedup(&kb).await.unwrap(),
        Some(b.id.clone())
    );
    assert_eq!(
        store.execution_for_dedup(&ka2).await.unwrap(),
        Some(c.id.clone())
    );
}

/// A background save is visible after a flush.
pub async fn save_background_then_flush(store: Arc<dyn Store>) {
    let mut e = Execution::new(&unique("conf.bg"), "flow", 1);
    create(&*store, &e).await;
    e.state.transition(State::Running);
    e.outputs.insert("step".into(), json!(1));
    store
        .save_execution(&e, Durability::Background)
        .await
        .unwrap();
    store.flush().await.unwrap();
    let got = get(&*store, &e.id).await.unwrap();
    assert_eq!(got.state.current, State::Running);
    assert_eq!(json_of(&got), json_of(&e));
    // A flush with nothing queued returns too.
    store.flush().await.unwrap();
}

/// A save with `Wait` is readable when it returns, and moves the execution out of the unfinished
/// ones once terminal.
pub async fn save_wait_is_readable(store: Arc<dyn Store>) {
    let mut e = Execution::new(&unique("conf.wait"), "flow", 1);
    create(&*store, &e).await;
    e.state.transition(State::Running);
    store.save_execution(&e, Durability::Wait).await.unwrap();
    assert_eq!(
        get(&*store, &e.id).await.unwrap().state.current,
        State::Running
    );
    assert!(ids(&store.unfinished_executions().await.unwrap()).contains(&e.id));

    e.state.transition(State::Success);
    e.outputs.insert("done".into(), json!(true));
    store.save_execution(&e, Durability::Wait).await.unwrap();
    let got = get(&*store, &e.id).await.unwrap();
    assert_eq!(json_of(&got), json_of(&e));
    assert!(!ids(&store.unfinished_executions().await.unwrap()).contains(&e.id));
    let page = store
        .search_executions(&query(Some(&e.namespace), None, &[State::Success]))
        .await
        .unwrap();
    assert_eq!(ids(&page.results), vec![e.id.clone()]);
}

/// Many saves of one execution from one task (mixing durabilities): the last one wins, the way
/// group commit coalesces them.
pub async fn saves_keep_queue_order(store: Arc<dyn Store>) {
    let ns = unique("conf.order");
    let mut executions: Vec<Execution> = (0..4).map(|_| Execution::new(&ns, "flow", 1)).collect();
    for e in &executions {
        create(&*store, e).await;
    }
    for step in 0..200 {
        for (n, e) in executions.iter_mut().enumerate() {
            e.outputs.insert("step".into(), json!(step));
            if step == 0 {
                e.state.transition(State::Running);
            }
            let durability = if (step + n) % 50 == 0 {
                Durability::Wait
            } else {
                Durability::Background
            };
            store.save_execution(e, durability).await.unwrap();
        }
    }
    store.flush().await.unwrap();
    for e in &executions {
        let got = get(&*store, &e.id).await.unwrap();
        assert_eq!(got.outputs.get("step"), Some(&json!(199)));
        assert_eq!(json_of(&got), json_of(e));
    }
}

/// Namespace prefix (`company` matches `company.team`, not `companyx`), flow id, states, newest
/// first.
pub async fn search_executions(store: Arc<dyn Store>) {
    let root = unique("conf.search");
    let company = format!("{root}.company");
    let team = format!("{root}.company.team");
    let companyx = format!("{root}.companyx");
    let base = Utc::now() - Duration::hours(1);
    let specs = [
        (&company, "a", State::Success),
        (&company, "a", State::Running),
        (&company, "a", State::Failed),
        (&team, "a", State::Running),
        (&team, "a", State::Created),
        (&team, "b", State::Success),
        (&companyx, "a", State::Success),
        (&companyx, "a", State::Running),
    ];
    let mut all = Vec::new();
    for (i, (ns, flow, state)) in specs.iter().enumerate() {
        let e = execution_at(ns, flow, *state, base + Duration::seconds(i as i64));
        create(&*store, &e).await;
        all.push(e);
    }
    // Newest first: the expected ids of the matching executions, by index in `all`.
    let expect = |indexes: &[usize]| -> Vec<String> {
        let mut picked: Vec<&Execution> = indexes.iter().map(|&i| &all[i]).collect();
        picked.sort_by_key(|e| std::cmp::Reverse(e.state.start_date()));
        picked.iter().map(|e| e.id.clone()).collect()
    };
    let search = |q: ExecutionQuery| {
        let store = store.clone();
        async move { store.search_executions(&q).await.unwrap() }
    };

    let page = search(query(Some(&company), None, &[])).await;
    assert_eq!(page.total, 6);
    assert_eq!(ids(&page.results), expect(&[0, 1, 2, 3, 4, 5]));

    let page = search(query(Some(&team), None, &[])).await;
    assert_eq!(ids(&page.results), expect(&[3, 4, 5]));

    let page = search(query(Some(&companyx), None, &[])).await;
    assert_eq!(ids(&page.results), expect(&[6, 7]));

    let page = search(query(Some(&format!("{root}.comp")), None, &[])).await;
    assert_eq!(page.total, 0, "a prefix must end at a dot");

    let page = search(query(Some(&root), None, &[])).await;
    assert_eq!(page.total, 8);

    let page = search(query(Some(&company), Some("a"), &[])).await;
    assert_eq!(ids(&page.results), expect(&[0, 1, 2, 3, 4]));

    let page = search(query(Some(&root), Some("b"), &[])).await;
    assert_eq!(ids(&page.results), expect(&[5]));

    let page = search(query(Some(&root), None, &[State::Running])).await;
    assert_eq!(ids(&page.results), expect(&[1, 3, 7]));

    let page = search(query(
        Some(&company),
        None,
        &[State::Success, State::Failed],
    ))
    .await;
    assert_eq!(page.total, 3);
    assert_eq!(ids(&page.results), expect(&[0, 2, 5]));

    let page = search(query(Some(&root), Some("a"), &[State::Killed])).await;
    assert_eq!(page.total, 0);
    assert!(page.results.is_empty());

    // Documents come back whole.
    let page = search(query(Some(&team), Some("b"), &[])).await;
    assert_eq!(
        page.results.iter().map(json_of).collect::<Vec<_>>(),
        vec![json_of(&all[5])]
    );
}

/// The filters the UI offers beyond namespace, flow and state: a creation time range (start
/// included, end excluded), labels (every one must match) and the trigger, with keyset paging.
pub async fn search_by_time_labels_and_trigger(store: Arc<dyn Store>) {
    let ns = unique("conf.filters");
    let base = Utc::now() - Duration::hours(3);
    let mut all = Vec::new();
    for i in 0..6i64 {
        let mut e = execution_at(&ns, "f", State::Success, base + Duration::minutes(i));
        e.labels = vec![
            Label {
                key: "team".into(),
                value: if i % 2 == 0 { "blue" } else { "red" }.into(),
            },
            Label {
                key: "region".into(),
                value: if i < 3 { "eu" } else { "us" }.into(),
            },
        ];
        if i >= 4 {
            e.trigger = Some(ExecutionTrigger {
                id: "orders".into(),
                type_name: "io.kestra.plugin.kafka.RealtimeTrigger".into(),
                variables: Default::default(),
            });
        }
        create(&*store, &e).await;
        all.push(e.id);
    }
    store.flush().await.unwrap();
    let search = |q: ExecutionQuery| {
        let store = store.clone();
        let ns = ns.clone();
        async move {
            store
                .search_executions(&ExecutionQuery {
                    namespace: Some(ns),
                    ..q
                })
                .await
                .unwrap()
        }
    };
    let at = |i: i64| (base + Duration::minutes(i)).timestamp_millis();
    let newest_first = |idx: &[usize]| {
        idx.iter()
            .rev()
            .map(|&i| all[i].clone())
            .collect::<Vec<_>>()
    };

    let page = search(ExecutionQuery {
        created_from: Some(at(1)),
        created_before: Some(at(4)),
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(
        ids(&page.results),
        newest_first(&[1, 2, 3]),
        "from included, before excluded"
    );
    assert_eq!(page.total, 3);

    let label = |k: &str, v: &str| (k.to_string(), v.to_string());
    let page = search(ExecutionQuery {
        labels: vec![label("team", "blue")],
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&page.results), newest_first(&[0, 2, 4]));
    assert_eq!((page.total, page.total_is_lower_bound), (3, false));

    let page = search(ExecutionQuery {
        labels: vec![label("team", "blue"), label("region", "us")],
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(
        ids(&page.results),
        newest_first(&[4]),
        "every label must match"
    );

    let page = search(ExecutionQuery {
        labels: vec![label("team", "eu")],
        ..ExecutionQuery::default()
    })
    .await;
    assert!(
        page.results.is_empty(),
        "a value of another key does not match"
    );

    let page = search(ExecutionQuery {
        trigger_id: Some("orders".into()),
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&page.results), newest_first(&[4, 5]));

    // Keyset paging through a document filter.
    let first = search(ExecutionQuery {
        labels: vec![label("team", "red")],
        size: 2,
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&first.results), newest_first(&[3, 5]));
    let second = search(ExecutionQuery {
        labels: vec![label("team", "red")],
        size: 2,
        after: first.next.clone(),
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&second.results), newest_first(&[1]));
    assert_eq!(second.total, 3);

    // A label set by a task (a save) is found; the value it replaced is not; a deleted
    // execution is found by none.
    let mut changed = store.get_execution(&all[0]).await.unwrap().unwrap();
    changed.labels[0].value = "green".into();
    store
        .save_execution(&changed, Durability::Wait)
        .await
        .unwrap();
    let page = search(ExecutionQuery {
        labels: vec![label("team", "green")],
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&page.results), newest_first(&[0]), "the saved label");
    let page = search(ExecutionQuery {
        labels: vec![label("team", "blue")],
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(
        ids(&page.results),
        newest_first(&[2, 4]),
        "the replaced label"
    );
    assert!(store.delete_execution(&all[4]).await.unwrap());
    let page = search(ExecutionQuery {
        labels: vec![label("team", "blue")],
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&page.results), newest_first(&[2]), "deleted");
    let page = search(ExecutionQuery {
        trigger_id: Some("orders".into()),
        ..ExecutionQuery::default()
    })
    .await;
    assert_eq!(ids(&page.results), newest_first(&[5]), "deleted");
}

/// Pages are 1-based (0 counts as 1), size 0 means the default, `total` counts every match.
pub async fn search_paging(store: Arc<dyn Store>) {
    let ns = unique("conf.paging");
    let base = Utc::now() - Duration::hours(2);
    let mut all = Vec::new();
    for i in 0..7 {
        let e = execution_at(&ns, "flow", State::Success, base + Duration::seconds(i));
        create(&*store, &e).await;
        all.push(e.id);
    }
    all.reverse(); // newest first
    let at = |page: usize, size: usize| ExecutionQuery {
        namespace: Some(ns.clone()),
        page,
        size,
        ..ExecutionQuery::default()
    };
    let p1 = store.search_executions(&at(1, 3)).await.unwrap();
    let p2 = store.search_executions(&at(2, 3)).await.unwrap();
    let p3 = store.search_executions(&at(3, 3)).await.unwrap();
    let p4 = store.search_executions(&at(4, 3)).await.unwrap();
    assert_eq!((p1.total, p2.total, p3.total, p4.total), (7, 7, 7, 7));
    assert_eq!(ids(&p1.results), all[0..3]);
    assert_eq!(ids(&p2.results), all[3..6]);
    assert_eq!(ids(&p3.results), all[6..7]);
    assert!(p4.results.is_empty());
    let p0 = store.search_executions(&at(0, 3)).await.unwrap();
    assert_eq!(ids(&p0.results), all[0..3], "page 0 is page 1");
    let default = store.search_executions(&at(1, 0)).await.unwrap();
    assert_eq!(ids(&default.results), all, "size 0 is the default size");
}

/// Keyset paging: each page's `next` leads to the following rows, in order, with ties on the
/// creation time broken by id, whatever the filter; the last page has no `next`.
pub async fn search_keyset_paging(store: Arc<dyn Store>) {
    let ns = unique("conf.keyset");
    let base = Utc::now() - Duration::hours(2);
    let mut all = Vec::new();
    // Eight executions, two by two created in the same millisecond (ties); every other one
    // FAILED.
    for i in 0..8 {
        let state = if i % 2 == 0 {
            State::Success
        } else {
            State::Failed
        };
        let e = execution_at(&ns, "flow", state, base + Duration::seconds(i / 2));
        create(&*store, &e).await;
        all.push(e);
    }
    // Newest first: time descending, then id descending.
    all.sort_by(|a, b| {
        let key = |e: &Execution| (e.state.start_date(), e.id.clone());
        key(b).cmp(&key(a))
    });
    let walk = |states: Vec<State>| {
        let store = store.clone();
        let ns = ns.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = None;
            for _ in 0..10 {
                let page = store
                    .search_executions(&ExecutionQuery {
                        namespace: Some(ns.clone()),
                        states: states.clone(),
                        size: 3,
                        // Ignored with a cursor.
                        page: if after.is_some() { 7 } else { 1 },
                        after: after.clone(),
                        ..ExecutionQuery::default()
                    })
                    .await
                    .unwrap();
                assert!(page.results.len() <= 3);
                seen.extend(ids(&page.results));
                match page.next {
                    Some(next) => after = Some(next),
                    None => return (seen, page.total),
                }
            }
            panic!("keyset paging did not end");
        }
    };
    let (every, total) = walk(Vec::new()).await;
    assert_eq!(
        total, 8,
        "the total counts the whole filter, not what follows the cursor"
    );
    assert_eq!(every, ids(&all));
    let (failed, total) = walk(vec![State::Failed]).await;
    assert_eq!(total, 4);
    let expected: Vec<String> = all
        .iter()
        .filter(|e| e.state.current == State::Failed)
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(failed, expected);
    let cursor = crate::ExecutionCursor {
        created_at: 1_700_000_000_123,
        id: "0abc_def".into(),
    };
    assert_eq!(crate::ExecutionCursor::decode(&cursor.encode()), Ok(cursor));
    assert!(crate::ExecutionCursor::decode("nope").is_err());
    assert!(crate::ExecutionCursor::decode("12_").is_err());
}

/// Only non-terminal executions, oldest first.
pub async fn unfinished_executions(store: Arc<dyn Store>) {
    let ns = unique("conf.unfinished");
    let base = Utc::now() - Duration::hours(3);
    let states = [
        State::Running,
        State::Success,
        State::Created,
        State::Failed,
        State::Paused,
        State::Killed,
        State::Retrying,
    ];
    let mut all = Vec::new();
    // Created newest first, to check the order is by date rather than by insertion.
    for (i, state) in states.iter().enumerate().rev() {
        let e = execution_at(&ns, "flow", *state, base + Duration::seconds(i as i64));
        create(&*store, &e).await;
        all.push(e);
    }
    all.reverse();
    let mine = |list: Vec<Execution>| -> Vec<String> {
        list.into_iter()
            .filter(|e| e.namespace == ns)
            .map(|e| e.id)
            .collect()
    };
    let unfinished = mine(store.unfinished_executions().await.unwrap());
    let expected: Vec<String> = [0, 2, 4, 6].iter().map(|&i| all[i].id.clone()).collect();
    assert_eq!(unfinished, expected);

    let mut first = all[0].clone();
    first.state.transition(State::Success);
    store
        .save_execution(&first, Durability::Wait)
        .await
        .unwrap();
    let unfinished = mine(store.unfinished_executions().await.unwrap());
    assert_eq!(unfinished, expected[1..]);
}

// ---------------------------------------------------------------------------------------------
// Logs and trigger state

/// Logs come back in append order, per execution.
pub async fn logs_in_order_per_execution(store: Arc<dyn Store>) {
    let ns = unique("conf.logs");
    let a = Execution::new(&ns, "flow", 1);
    let b = Execution::new(&ns, "flow", 1);
    store.append_logs(vec![log(&a, "a1"), log(&a, "a2")]);
    store.append_logs(vec![log(&b, "b1")]);
    store.append_logs(vec![]);
    store.append_logs(vec![log(&a, "a3"), log(&b, "b2"), log(&a, "a4")]);
    for i in 5..=40 {
        store.append_logs(vec![log(&a, &format!("a{i}"))]);
    }
    store.flush().await.unwrap();

    let messages = |logs: Vec<LogEntry>| logs.into_iter().map(|l| l.message).collect::<Vec<_>>();
    let of_a = store.logs_for_execution(&a.id).await.unwrap();
    assert_eq!(of_a.first(), Some(&log_like(&of_a[0], &a, "a1")));
    let expected_a: Vec<String> = (1..=40).map(|i| format!("a{i}")).collect();
    assert_eq!(messages(of_a), expected_a);
    assert_eq!(
        messages(store.logs_for_execution(&b.id).await.unwrap()),
        vec!["b1", "b2"]
    );
    assert!(
        store
            .logs_for_execution(&new_id())
            .await
            .unwrap()
            .is_empty()
    );
}

/// `log(e, message)` with the timestamp of `stored`, to compare a whole entry.
fn log_like(stored: &LogEntry, e: &Execution, message: &str) -> LogEntry {
    LogEntry {
        timestamp: stored.timestamp,
        ..log(e, message)
    }
}

/// Put, get, overwrite; triggers are separate.
pub async fn trigger_state(store: Arc<dyn Store>) {
    let t1 = unique("conf.trigger/flow/schedule");
    let t2 = unique("conf.trigger/flow/other");
    assert_eq!(store.get_trigger_state(&t1).await.unwrap(), None);
    let v1 = json!({"lastDate": "2024-01-01T00:00:00Z", "n": 1});
    store.put_trigger_state(&t1, &v1).await.unwrap();
    assert_eq!(store.get_trigger_state(&t1).await.unwrap(), Some(v1));
    let v2 = json!({"lastDate": "2024-01-02T00:00:00Z", "list": [1, "two", null]});
    store.put_trigger_state(&t1, &v2).await.unwrap();
    assert_eq!(
        store.get_trigger_state(&t1).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.get_trigger_state(&t2).await.unwrap(), None);
    store.put_trigger_state(&t2, &json!("plain")).await.unwrap();
    assert_eq!(store.get_trigger_state(&t1).await.unwrap(), Some(v2));
    assert_eq!(
        store.get_trigger_state(&t2).await.unwrap(),
        Some(json!("plain"))
    );
}

// ---------------------------------------------------------------------------------------------
// Load and durability

/// 2,000 creates from 100 tasks, each followed by a background save: all stored, none lost.
pub async fn many_concurrent_creates(store: Arc<dyn Store>) {
    let ns = unique("conf.load");
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..100 {
        let store = store.clone();
        let ns = ns.clone();
        tasks.spawn(async move {
            let mut made = Vec::new();
            for i in 0..20 {
                let mut e = Execution::new(&ns, "flow", 1);
                let k = key(&format!("{ns}/flow/t"), &format!("{t}/{i}"));
                let created = store.create_execution(&e, Some(k)).await.unwrap();
                assert_eq!(created, Created::Created);
                e.state.transition(State::Running);
                store
                    .save_execution(&e, Durability::Background)
                    .await
                    .unwrap();
                made.push(e.id);
            }
            made
        });
    }
    let mut all = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.expect("a create task panicked"));
    }
    assert_eq!(all.len(), 2000);
    store.flush().await.unwrap();
    let page = store
        .search_executions(&ExecutionQuery {
            namespace: Some(ns.clone()),
            size: 1000,
            ..ExecutionQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 2000);
    assert_eq!(page.results.len(), 1000);
    let running = store
        .search_executions(&query(Some(&ns), None, &[State::Running]))
        .await
        .unwrap();
    assert_eq!(running.total, 2000, "every background save landed");
    for id in &all {
        assert!(get(&*store, id).await.is_some(), "execution {id} is stored");
    }
}

/// Everything written survives closing and reopening the store. `open` opens the same store
/// each time it is called; the suite drops every handle to the first store before reopening.
pub async fn durable_across_reopen<F, Fut>(mut open: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let ns = unique("conf.reopen");
    let k = key(&format!("{ns}/flow/t"), "event-1");
    let mut running = Execution::new(&ns, "flow", 1);
    let mut done = Execution::new(&ns, "flow", 1);
    let flow;
    {
        let store = open().await;
        flow = store.put_flow(&ns, "flow", "id: flow\n").await.unwrap();
        assert_eq!(
            store
                .create_execution(&running, Some(k.clone()))
                .await
                .unwrap(),
            Created::Created
        );
        create(&*store, &done).await;
        running.state.transition(State::Running);
        store
            .save_execution(&running, Durability::Wait)
            .await
            .unwrap();
        done.state.transition(State::Running);
        store
            .save_execution(&done, Durability::Background)
            .await
            .unwrap();
        done.state.transition(State::Success);
        store
            .save_execution(&done, Durability::Background)
            .await
            .unwrap();
        store.append_logs(vec![log(&running, "one"), log(&running, "two")]);
        store
            .put_trigger_state(&k.trigger, &json!({"n": 7}))
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the suite holds the only handle"
        );
    }

    let store = open().await;
    assert_eq!(store.get_flow(&ns, "flow").await.unwrap(), Some(flow));
    assert_eq!(
        json_of(&get(&*store, &running.id).await.unwrap()),
        json_of(&running)
    );
    assert_eq!(
        json_of(&get(&*store, &done.id).await.unwrap()),
        json_of(&done)
    );
    let unfinished: Vec<String> = store
        .unfinished_executions()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.namespace == ns)
        .map(|e| e.id)
        .collect();
    assert_eq!(unfinished, vec![running.id.clone()]);
    let messages: Vec<String> = store
        .logs_for_execution(&running.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(messages, vec!["one", "two"]);
    assert_eq!(
        store.get_trigger_state(&k.trigger).await.unwrap(),
        Some(json!({"n": 7}))
    );
    let again = Execution::new(&ns, "flow", 1);
    assert_eq!(
        store.create_execution(&again, Some(k)).await.unwrap(),
        Created::Duplicate {
            existing_id: running.id.clone()
        },
        "dedup keys survive a restart"
    );
}
