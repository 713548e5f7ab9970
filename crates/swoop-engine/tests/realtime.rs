//! Tests of the generic realtime trigger runtime (backpressure, dedup, acknowledgement after
//! the durable creation, ordering, status, reconnection, watchdog, stop and restart) with an
//! in-process fake source. Real brokers are tested with their plugins.
//!
//! The fake source is fed through a channel the test holds: it hands out events when the runtime
//! asks for one (`next()`), records acknowledgements, counts connections and closes, and can be
//! told to fail connections or a read. Every wait is bounded; timing properties (overlap, slots)
//! are checked on the state histories the engine records or on the fake's own counters.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use swoop_core::flow::TriggerKind;
use swoop_core::realtime::{
    Ack, Backlog, Event, Ordering, Outcome, RealtimeSettings, RealtimeSource, RealtimeTrigger,
    SourceContext, SourceError,
};
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};
use swoop_core::{Execution, Flow, Registry, State};
use swoop_engine::{Engine, TriggerState, TriggerStatus};
use swoop_store::{ExecutionQuery, ExecutionStore, LogStore, SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::mpsc;

use common::{max_overlap, running_interval};

const NS: &str = "test.realtime";
const FAKE_TYPE: &str = "test.FakeRealtime";
/// How long anything awaited in these tests may take.
const WAIT: Duration = Duration::from_secs(20);
/// Pause between two looks when polling the store or the trigger statuses.
const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------------- fake source

/// What the test feeds the fake: an event, or a read that fails (a dropped connection).
enum Item {
    Event(FakeEvent),
    Fail(SourceError),
}

#[derive(Clone, Default)]
struct FakeEvent {
    n: u64,
    dedup: Option<String>,
    key: Option<String>,
    partition: Option<String>,
    decode_error: Option<String>,
    /// Variables besides `n`.
    extra: Map<String, Value>,
}

/// Event `n`, with the dedup key `e<n>`.
fn ev(n: u64) -> FakeEvent {
    FakeEvent {
        n,
        dedup: Some(format!("e{n}")),
        ..FakeEvent::default()
    }
}

/// A source whose events the test feeds; shared by every connection (and every revision of
/// the flow), so an event not handed out stays for the next connection.
struct FakeSource {
    tx: mpsc::UnboundedSender<Item>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Item>>,
    connects: AtomicUsize,
    closes: AtomicUsize,
    consumer_names: Mutex<Vec<String>>,
    /// The next connections fail with these errors, in order.
    failing_connects: Mutex<VecDeque<SourceError>>,
    /// Every event handed out by `next()`: its `n` and when.
    handed_out: Mutex<Vec<(u64, DateTime<Utc>)>>,
    /// The dedup keys acknowledged (recorded), in order, with their outcome.
    acks: Mutex<Vec<(String, Outcome)>>,
    /// The dedup keys released (not recorded).
    released: Mutex<Vec<String>>,
    backlog: Mutex<Option<u64>>,
}

impl FakeSource {
    fn send(&self, event: FakeEvent) {
        self.tx.send(Item::Event(event)).expect("the fake is alive");
    }

    /// The next read fails (after the events fed before it).
    fn drop_connection(&self, error: SourceError) {
        self.tx.send(Item::Fail(error)).expect("the fake is alive");
    }

    fn fail_connects(&self, errors: impl IntoIterator<Item = SourceError>) {
        self.failing_connects.lock().extend(errors);
    }

    fn set_backlog(&self, backlog: Option<u64>) {
        *self.backlog.lock() = backlog;
    }

    fn connects(&self) -> usize {
        self.connects.load(AtomicOrdering::SeqCst)
    }

    fn closes(&self) -> usize {
        self.closes.load(AtomicOrdering::SeqCst)
    }

    fn handed_out(&self) -> usize {
        self.handed_out.lock().len()
    }

    fn acks(&self) -> Vec<String> {
        self.acks.lock().iter().map(|(k, _)| k.clone()).collect()
    }

    fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.acks.lock().clone()
    }
}

/// The fake as the runtime sees it (the registry's `build` wraps the shared state).
struct FakeConnector(Arc<FakeSource>);

impl FakeSource {
    /// The fake's next event for the runtime; `Err` for a read that fails.
    fn event(self: &Arc<Self>, event: FakeEvent) -> Event {
        let mut variables = event.extra;
        variables.insert("n".into(), json!(event.n));
        let source = self.clone();
        let acked = event
            .dedup
            .clone()
            .unwrap_or_else(|| format!("#{}", event.n));
        Event {
            variables,
            dedup_key: event.dedup,
            key: event.key,
            partition: event.partition,
            decode_error: event.decode_error,
            execution_id: None,
            ack: Ack::new(move |outcome| match outcome {
                Outcome::Released => source.released.lock().push(acked),
                recorded => source.acks.lock().push((acked, recorded)),
            }),
        }
    }

    /// Reads the fed items and emits their events until stopped or a read fails.
    async fn consume(self: &Arc<Self>, ctx: &SourceContext) -> Result<(), SourceError> {
        loop {
            let item = tokio::select! {
                item = async { self.rx.lock().await.recv().await } => item,
                _ = ctx.stopped() => return Ok(()),
            };
            let event = match item {
                Some(Item::Event(event)) => event,
                Some(Item::Fail(error)) => return Err(error),
                None => return Ok(()),
            };
            let n = event.n;
            if ctx.emit(self.event(event)).await.is_err() {
                return Ok(());
            }
            self.handed_out.lock().push((n, Utc::now()));
        }
    }
}

struct FakeBacklog(Arc<FakeSource>);

#[async_trait]
impl Backlog for FakeBacklog {
    async fn backlog(&self) -> Option<u64> {
        *self.0.backlog.lock()
    }
}

#[async_trait]
impl RealtimeSource for FakeConnector {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let source = &self.0;
        source.connects.fetch_add(1, AtomicOrdering::SeqCst);
        source
            .consumer_names
            .lock()
            .push(ctx.consumer_name().to_string());
        if let Some(error) = source.failing_connects.lock().pop_front() {
            return Err(error);
        }
        ctx.connected();
        ctx.watch_backlog(Arc::new(FakeBacklog(source.clone())));
        let result = source.consume(&ctx).await;
        source.closes.fetch_add(1, AtomicOrdering::SeqCst);
        result
    }
}

/// The fakes by name, for the registry's `build` (a plain function that captures nothing).
static FAKES: LazyLock<Mutex<HashMap<String, Arc<FakeSource>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A new fake source, found by flows as `name: <name>` (unique per test).
fn fake(name: &str) -> Arc<FakeSource> {
    let (tx, rx) = mpsc::unbounded_channel();
    let source = Arc::new(FakeSource {
        tx,
        rx: tokio::sync::Mutex::new(rx),
        connects: AtomicUsize::new(0),
        closes: AtomicUsize::new(0),
        consumer_names: Mutex::new(Vec::new()),
        failing_connects: Mutex::new(VecDeque::new()),
        handed_out: Mutex::new(Vec::new()),
        acks: Mutex::new(Vec::new()),
        released: Mutex::new(Vec::new()),
        backlog: Mutex::new(None),
    });
    let previous = FAKES.lock().insert(name.to_string(), source.clone());
    assert!(previous.is_none(), "fake `{name}` created twice");
    source
}

fn build_fake(v: &Value) -> Result<TriggerKind, String> {
    let settings = RealtimeSettings::from_json(v)?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("the property `name` is required")?;
    let source = FAKES
        .lock()
        .get(name)
        .cloned()
        .ok_or_else(|| format!("no fake source named `{name}`"))?;
    Ok(TriggerKind::Realtime(RealtimeTrigger {
        source: Arc::new(FakeConnector(source)),
        settings,
    }))
}

fn registry() -> Registry {
    let mut registry = swoop_plugins::registry();
    registry.register_trigger(TriggerFactory {
        type_names: &[FAKE_TYPE],
        properties: const { &[PropSpec::required("name", PropType::String)] },
        realtime: true,
        build: build_fake,
    });
    registry
}

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
        let dyn_store: Arc<dyn Store> = store.clone();
        let engine = Engine::start(dyn_store, Arc::new(registry()))
            .await
            .expect("the engine starts");
        Harness {
            engine,
            store,
            _dir: dir,
        }
    }

    /// Stores a flow (creates it or adds a revision).
    async fn flow(&self, yaml: &str) -> Arc<Flow> {
        self.engine
            .put_flow(yaml)
            .await
            .unwrap_or_else(|e| panic!("the flow is refused: {e}\n{yaml}"))
    }

    /// Every execution of a flow in the store, once pending writes are written.
    async fn executions_of(&self, flow_id: &str) -> Vec<Execution> {
        self.store.flush().await.expect("flush");
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

    /// Waits until the flow has at least `count` executions, all ended; returns them.
    async fn ended_executions(&self, flow_id: &str, count: usize) -> Vec<Execution> {
        eventually(
            &format!("{count} ended executions of `{flow_id}`"),
            async || {
                let all = self.executions_of(flow_id).await;
                let ended = all.iter().filter(|e| e.state.current.is_terminal()).count();
                if all.len() >= count && ended == all.len() {
                    Ok(all)
                } else {
                    Err(format!("{} executions, {ended} ended", all.len()))
                }
            },
        )
        .await
    }

    /// The status of the flow's trigger, if it runs.
    fn status(&self, flow_id: &str) -> Option<TriggerStatus> {
        self.engine
            .trigger_statuses()
            .into_iter()
            .find(|s| s.namespace == NS && s.flow_id == flow_id)
    }

    /// Waits until the flow's trigger status satisfies `done`.
    async fn status_until(
        &self,
        flow_id: &str,
        what: &str,
        done: impl Fn(&TriggerStatus) -> bool,
    ) -> TriggerStatus {
        eventually(what, async || match self.status(flow_id) {
            Some(s) if done(&s) => Ok(s),
            other => Err(format!("{other:?}")),
        })
        .await
    }

    async fn log_messages(&self, execution_id: &str) -> Vec<String> {
        self.store.flush().await.expect("flush");
        self.store
            .logs_for_execution(execution_id)
            .await
            .expect("logs")
            .into_iter()
            .map(|l| l.message)
            .collect()
    }
}

/// Polls `probe` until it gives a value (at most [`WAIT`]); on a timeout, panics with the last
/// thing it said.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(t) => return t,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not seen within {WAIT:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A flow fired by the fake `name`; `settings` are extra trigger properties (indented for the
/// trigger), `tasks` the flow's task list.
fn flow_yaml(id: &str, name: &str, settings: &str, tasks: &str) -> String {
    format!(
        "id: {id}\nnamespace: {NS}\ntriggers:\n  - id: events\n    type: {FAKE_TYPE}\n    name: {name}\n{settings}tasks:\n{tasks}"
    )
}

const LOG_N: &str =
    "  - id: log\n    type: io.kestra.plugin.core.log.Log\n    message: \"n={{ trigger.n }}\"\n";

fn sleep_task(duration: &str) -> String {
    format!("  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: {duration}\n")
}

/// The event number an execution was created for.
fn n_of(e: &Execution) -> u64 {
    e.trigger
        .as_ref()
        .and_then(|t| t.variables.get("n"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("execution {} has no trigger.n: {:?}", e.id, e.trigger))
}

fn describe(e: &Execution) -> String {
    format!(
        "execution {} (n={:?}) is {} (error: {:?}), history {:?}",
        e.id,
        e.trigger.as_ref().and_then(|t| t.variables.get("n")),
        e.state.current,
        e.error,
        e.state
            .histories
            .iter()
            .map(|h| h.state)
            .collect::<Vec<_>>()
    )
}

fn assert_acked_once(acks: &[String], expected: impl IntoIterator<Item = String>) {
    let expected: HashSet<String> = expected.into_iter().collect();
    let mut seen = HashSet::new();
    for a in acks {
        assert!(seen.insert(a.clone()), "`{a}` acknowledged twice: {acks:?}");
    }
    assert_eq!(seen, expected, "acknowledged events");
}

// -------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_becomes_one_execution_and_is_acknowledged() {
    let fake = fake("basic");
    let h = Harness::new().await;
    h.flow(&flow_yaml("basic", "basic", "", LOG_N)).await;
    for n in 0..200 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("basic", 200).await;
    assert_eq!(executions.len(), 200);
    let mut numbers: Vec<u64> = executions.iter().map(n_of).collect();
    numbers.sort();
    assert_eq!(numbers, (0..200).collect::<Vec<_>>());
    for e in &executions {
        assert_eq!(e.state.current, State::Success, "{}", describe(e));
        let trigger = e.trigger.as_ref().expect("trigger");
        assert_eq!(trigger.id, "events");
        assert_eq!(trigger.type_name, FAKE_TYPE);
        assert_eq!(e.flow_revision, 1);
    }
    for e in executions.iter().take(20) {
        let messages = h.log_messages(&e.id).await;
        let wanted = format!("n={}", n_of(e));
        assert!(
            messages.contains(&wanted),
            "{}: logs {messages:?} lack `{wanted}`",
            e.id
        );
    }
    assert_acked_once(&fake.acks(), (0..200).map(|n| format!("e{n}")));
    assert_eq!(fake.connects(), 1);
    assert_eq!(
        fake.consumer_names.lock().as_slice(),
        [format!("{NS}/basic/events")]
    );
    let status = h
        .status_until("basic", "every slot free again", |s| s.in_flight == 0)
        .await;
    assert_eq!(status.state, TriggerState::Running);
    assert_eq!(status.type_name, FAKE_TYPE);
    assert_eq!(status.trigger_id, "events");
    assert_eq!(status.events, 200);
    assert_eq!(status.executions_created, 200);
    assert_eq!(status.duplicates, 0);
    assert_eq!(status.max_in_flight, 1000);
    assert!(status.last_event.is_some());
    assert_eq!(status.last_error, None);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_creates_no_second_execution() {
    let fake = fake("redelivery");
    let h = Harness::new().await;
    h.flow(&flow_yaml("redelivery", "redelivery", "", LOG_N))
        .await;
    fake.send(ev(1));
    // The same event again (same dedup key), as a broker redelivers it after a lost ack.
    fake.send(FakeEvent {
        n: 2,
        dedup: Some("e1".into()),
        ..FakeEvent::default()
    });
    let status = h
        .status_until("redelivery", "both deliveries handled", |s| {
            s.executions_created + s.duplicates == 2
        })
        .await;
    assert_eq!(status.events, 2);
    assert_eq!(status.executions_created, 1, "{status:?}");
    assert_eq!(status.duplicates, 1, "{status:?}");
    // Both deliveries are acknowledged (the ack comes before the counters).
    assert_eq!(fake.acks(), ["e1", "e1"]);

    // The stream goes on; still exactly one execution for `e1`.
    fake.send(ev(3));
    let executions = h.ended_executions("redelivery", 2).await;
    assert_eq!(executions.len(), 2, "{executions:#?}");
    let first: Vec<&Execution> = executions.iter().filter(|e| n_of(e) != 3).collect();
    assert_eq!(first.len(), 1);
    assert!(executions.iter().all(|e| e.state.current == State::Success));
    let status = h
        .status_until("redelivery", "the third event counted", |s| {
            s.executions_created == 2
        })
        .await;
    assert_eq!(status.duplicates, 1);
    assert_eq!(fake.acks(), ["e1", "e1", "e3"]);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_holds_slots_until_executions_end() {
    const EVENTS: usize = 30;
    const SLOTS: usize = 5;
    let fake = fake("backpressure");
    let h = Harness::new().await;
    let mut ended_events = h.engine.subscribe();
    h.flow(&flow_yaml(
        "backpressure",
        "backpressure",
        "    maxInFlight: 5\n",
        &sleep_task("PT0.2S"),
    ))
    .await;
    h.status_until("backpressure", "connected", |s| {
        s.state == TriggerState::Running
    })
    .await;
    for n in 0..EVENTS as u64 {
        fake.send(ev(n));
    }
    // While draining: read what was handed out first, then every end announced so far (an
    // execution's end is announced before its slot is freed), so the difference is what holds a
    // slot at most.
    let mut ended: HashSet<String> = HashSet::new();
    let mut worst = 0usize;
    let mut worst_status = 0usize;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ended.len() < EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {EVENTS} executions ended within {WAIT:?}",
            ended.len()
        );
        let handed_out = fake.handed_out();
        loop {
            match ended_events.try_recv() {
                Ok(event) if event.state.is_terminal() => {
                    ended.insert(event.id);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                Err(e) => panic!("execution events: {e}"),
            }
        }
        let holding = handed_out.saturating_sub(ended.len());
        worst = worst.max(holding);
        assert!(
            holding <= SLOTS,
            "{handed_out} events handed out but only {} executions ended",
            ended.len()
        );
        let status = h.status("backpressure").expect("status");
        worst_status = worst_status.max(status.in_flight);
        assert!(status.in_flight <= SLOTS, "{status:?}");
        assert_eq!(status.max_in_flight, SLOTS);
        tokio::time::sleep(POLL).await;
    }
    assert!(
        worst >= 2,
        "the slots were never used together (at most {worst})"
    );
    assert!(worst_status >= 1, "inFlight never showed a running event");

    let executions = h.ended_executions("backpressure", EVENTS).await;
    assert_eq!(executions.len(), EVENTS);
    assert!(
        executions.iter().all(|e| e.state.current == State::Success),
        "{:#?}",
        executions.iter().map(describe).collect::<Vec<_>>()
    );
    // The same on the recorded times: when an event was handed out, at most SLOTS - 1 earlier
    // ones had not ended yet (an execution's end is recorded before its slot is freed).
    let ends: Vec<DateTime<Utc>> = executions
        .iter()
        .map(|e| e.state.end_date().expect("ended"))
        .collect();
    let handed_out = fake.handed_out.lock().clone();
    assert_eq!(handed_out.len(), EVENTS);
    for (i, (n, at)) in handed_out.iter().enumerate() {
        let ended_before = ends.iter().filter(|end| *end < at).count();
        assert!(
            i + 1 - ended_before.min(i + 1) <= SLOTS,
            "event {n} was handed out with {} executions unfinished",
            i + 1 - ended_before
        );
    }
    let intervals: Vec<_> = executions
        .iter()
        .map(|e| running_interval(&e.state))
        .collect();
    let overlap = max_overlap(&intervals);
    assert!(
        (2..=SLOTS).contains(&overlap),
        "{overlap} executions ran at once"
    );
    assert_acked_once(&fake.acks(), (0..EVENTS).map(|n| format!("e{n}")));
    h.status_until("backpressure", "every slot free again", |s| {
        s.in_flight == 0
    })
    .await;
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_becomes_a_failed_execution() {
    let fake = fake("decode");
    let h = Harness::new().await;
    h.flow(&flow_yaml("decode", "decode", "", LOG_N)).await;
    let mut raw = Map::new();
    raw.insert("raw".into(), json!("{not json"));
    fake.send(FakeEvent {
        decode_error: Some("bad json".into()),
        extra: raw,
        ..ev(0)
    });
    for n in 1..4 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("decode", 4).await;
    assert_eq!(executions.len(), 4);
    for e in &executions {
        if n_of(e) == 0 {
            assert_eq!(e.state.current, State::Failed, "{}", describe(e));
            let error = e.error.as_deref().unwrap_or_default();
            assert!(error.contains("bad json"), "error: {error:?}");
            let variables = &e.trigger.as_ref().expect("trigger").variables;
            assert_eq!(variables["raw"], json!("{not json"));
            assert!(e.task_run_list.is_empty(), "{}", describe(e));
        } else {
            assert_eq!(e.state.current, State::Success, "{}", describe(e));
            assert_eq!(
                h.log_messages(&e.id).await,
                [format!("n={}", n_of(e))],
                "{}",
                describe(e)
            );
        }
    }
    assert_acked_once(&fake.acks(), (0..4).map(|n| format!("e{n}")));
    let status = h
        .status_until("decode", "every event counted", |s| {
            s.executions_created == 4
        })
        .await;
    assert_eq!(status.state, TriggerState::Running);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_whose_execution_cannot_start_are_rejected_into_failed_executions() {
    // The flow needs an input no event gives: before, each event was retried forever and,
    // after `maxInFlight` of them, the trigger stopped pulling while it said RUNNING.
    let fake = fake("rejected");
    let h = Harness::new().await;
    let yaml = flow_yaml("rejected", "rejected", "    maxInFlight: 2\n", LOG_N).replace(
        "tasks:\n",
        "inputs:\n  - id: customer\n    type: STRING\n    required: true\ntasks:\n",
    );
    h.flow(&yaml).await;
    for n in 0..6 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("rejected", 6).await;
    assert_eq!(
        executions.len(),
        6,
        "every event is recorded, more than maxInFlight"
    );
    for e in &executions {
        assert_eq!(e.state.current, State::Failed, "{}", describe(e));
        let error = e.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("customer") && error.contains("rejected"),
            "the reason names the input and the flow: {error:?}"
        );
        assert!(e.task_run_list.is_empty(), "{}", describe(e));
    }
    let mut numbers: Vec<u64> = executions.iter().map(n_of).collect();
    numbers.sort();
    assert_eq!(numbers, (0..6).collect::<Vec<_>>(), "the raw event is kept");
    assert_acked_once(&fake.acks(), (0..6).map(|n| format!("e{n}")));
    assert!(
        fake.outcomes()
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Rejected(r) if r.contains("customer"))),
        "{:?}",
        fake.outcomes()
    );
    let status = h
        .status_until("rejected", "six rejected", |s| s.rejected == 6)
        .await;
    assert_eq!(status.state, TriggerState::Running);
    assert_eq!(status.in_flight, 0);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_not_admitted_when_the_trigger_stops_is_released() {
    let fake = fake("released");
    let h = Harness::new().await;
    h.flow(&flow_yaml(
        "released",
        "released",
        "    maxInFlight: 1\n",
        &sleep_task("PT30S"),
    ))
    .await;
    fake.send(ev(0));
    fake.send(ev(1));
    // e0 holds the only slot (its execution sleeps); e1 waits in `emit`.
    h.status_until("released", "one in flight", |s| s.in_flight == 1)
        .await;
    eventually("e0 acknowledged", async || match fake.acks().as_slice() {
        [k] if k == "e0" => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    h.engine
        .delete_flow(NS, "released")
        .await
        .expect("the flow is deleted");
    eventually("e1 released", async || {
        match fake.released.lock().as_slice() {
            [k] if k == "e1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(fake.acks(), ["e0"], "e1 was not recorded");
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_reconnect_without_losing_events() {
    let fake = fake("reconnect");
    fake.fail_connects([
        SourceError::Transient("broker down".into()),
        SourceError::Transient("broker down".into()),
    ]);
    let h = Harness::new().await;
    h.flow(&flow_yaml("reconnect", "reconnect", "", LOG_N))
        .await;
    let seen = h
        .status_until("reconnect", "RECONNECTING after `broker down`", |s| {
            s.state == TriggerState::Reconnecting
        })
        .await;
    assert!(
        seen.last_error
            .as_deref()
            .is_some_and(|e| e.contains("broker down")),
        "{seen:?}"
    );
    assert!(seen.attempt >= 1, "{seen:?}");
    h.status_until("reconnect", "RUNNING after the backoff", |s| {
        s.state == TriggerState::Running
    })
    .await;
    assert_eq!(fake.connects(), 3);
    assert_eq!(fake.closes(), 0);
    for n in 0..5 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("reconnect", 5).await;
    assert_eq!(executions.len(), 5);
    let status = h
        .status_until("reconnect", "attempts reset by an event", |s| {
            s.attempt == 0
        })
        .await;
    assert_eq!(status.state, TriggerState::Running);

    // The connection drops mid-stream: events fed meanwhile wait in the source.
    fake.drop_connection(SourceError::Transient("connection reset".into()));
    for n in 5..8 {
        fake.send(ev(n));
    }
    eventually("a new connection", async || {
        if fake.connects() == 4 && fake.closes() == 1 {
            Ok(())
        } else {
            Err(format!(
                "{} connects, {} closes",
                fake.connects(),
                fake.closes()
            ))
        }
    })
    .await;
    for n in 8..10 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("reconnect", 10).await;
    assert_eq!(executions.len(), 10);
    let mut numbers: Vec<u64> = executions.iter().map(n_of).collect();
    numbers.sort();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    assert!(executions.iter().all(|e| e.state.current == State::Success));
    assert_acked_once(&fake.acks(), (0..10).map(|n| format!("e{n}")));
    let status = h
        .status_until("reconnect", "running, all counted", |s| {
            s.executions_created == 10 && s.attempt == 0
        })
        .await;
    assert_eq!(status.state, TriggerState::Running);
    assert_eq!(fake.connects(), 4);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_fails_the_trigger_without_retrying() {
    let fake = fake("fatal");
    fake.fail_connects([SourceError::Fatal(
        "unknown topic `orders` (check the flow)".into(),
    )]);
    let h = Harness::new().await;
    h.flow(&flow_yaml("fatal", "fatal", "", LOG_N)).await;
    let status = h
        .status_until("fatal", "FAILED", |s| s.state == TriggerState::Failed)
        .await;
    assert_eq!(
        status.last_error.as_deref(),
        Some("unknown topic `orders` (check the flow)")
    );
    fake.send(ev(0));
    // Nothing announces that no retry happens: look again after more than a backoff.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(fake.connects(), 1, "retried after a fatal error");
    assert_eq!(fake.handed_out(), 0);
    let status = h
        .status("fatal")
        .expect("the failed trigger is still shown");
    assert_eq!(status.state, TriggerState::Failed);
    assert!(h.executions_of("fatal").await.is_empty());
    h.engine.shutdown().await;
}

/// Feeds 4 events for each of two groups (`a`, `b`, interleaved) to a flow that sleeps, and
/// returns the executions by group, in order of creation.
async fn run_grouped(
    name: &str,
    ordering: &str,
    by_partition: bool,
) -> HashMap<String, Vec<Execution>> {
    let fake = fake(name);
    let h = Harness::new().await;
    h.flow(&flow_yaml(
        name,
        name,
        &format!("    ordering: {ordering}\n"),
        &sleep_task("PT0.1S"),
    ))
    .await;
    for i in 0..4u64 {
        for (j, group) in ["a", "b"].into_iter().enumerate() {
            let mut extra = Map::new();
            extra.insert("group".into(), json!(group));
            let (key, partition) = if by_partition {
                (Some(format!("k{i}")), Some(group.to_string()))
            } else {
                (Some(group.to_string()), Some(format!("p{i}")))
            };
            fake.send(FakeEvent {
                key,
                partition,
                extra,
                ..ev(2 * i + j as u64)
            });
        }
    }
    let executions = h.ended_executions(name, 8).await;
    assert_eq!(executions.len(), 8);
    assert!(
        executions.iter().all(|e| e.state.current == State::Success),
        "{:#?}",
        executions.iter().map(describe).collect::<Vec<_>>()
    );
    assert_acked_once(&fake.acks(), (0..8).map(|n| format!("e{n}")));
    h.engine.shutdown().await;
    let mut groups: HashMap<String, Vec<Execution>> = HashMap::new();
    for e in executions {
        let group = e.trigger.as_ref().expect("trigger").variables["group"]
            .as_str()
            .expect("group")
            .to_string();
        groups.entry(group).or_default().push(e);
    }
    for list in groups.values_mut() {
        list.sort_by_key(|e| e.state.start_date());
    }
    groups
}

fn assert_one_at_a_time_in_event_order(groups: &HashMap<String, Vec<Execution>>) {
    let mut all = Vec::new();
    for (group, list) in groups {
        let numbers: Vec<u64> = list.iter().map(n_of).collect();
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(numbers, sorted, "group {group}: created out of event order");
        let intervals: Vec<_> = list.iter().map(|e| running_interval(&e.state)).collect();
        assert_eq!(
            max_overlap(&intervals),
            1,
            "group {group} overlapped: {:#?}",
            list.iter().map(describe).collect::<Vec<_>>()
        );
        all.extend(intervals);
    }
    assert!(
        max_overlap(&all) >= 2,
        "the two groups never ran at the same time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_by_key_runs_one_key_at_a_time() {
    let groups = run_grouped("ordered-key", "KEY", false).await;
    assert_one_at_a_time_in_event_order(&groups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_by_partition_runs_one_partition_at_a_time() {
    let groups = run_grouped("ordered-partition", "partition", true).await;
    assert_one_at_a_time_in_event_order(&groups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ordering_same_key_executions_overlap() {
    let groups = run_grouped("unordered", "NONE", false).await;
    let intervals: Vec<_> = groups["a"]
        .iter()
        .map(|e| running_interval(&e.state))
        .collect();
    assert!(
        max_overlap(&intervals) >= 2,
        "same-key executions never overlapped without ordering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_flow_stops_the_trigger() {
    let fake = fake("deleted");
    let h = Harness::new().await;
    h.flow(&flow_yaml("deleted", "deleted", "", LOG_N)).await;
    for n in 0..3 {
        fake.send(ev(n));
    }
    h.ended_executions("deleted", 3).await;
    h.engine
        .delete_flow(NS, "deleted")
        .await
        .expect("the flow is deleted");
    assert!(
        h.status("deleted").is_none(),
        "the trigger is still shown: {:?}",
        h.engine.trigger_statuses()
    );
    eventually("the connection closed", async || match fake.closes() {
        1 => Ok(()),
        n => Err(format!("{n} closes")),
    })
    .await;
    fake.send(ev(3));
    fake.send(ev(4));
    // Nothing announces that an event is not read: look again a little later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.handed_out(), 3, "events were read after the delete");
    assert_eq!(fake.connects(), 1);
    assert_eq!(h.executions_of("deleted").await.len(), 3);
    assert_acked_once(&fake.acks(), (0..3).map(|n| format!("e{n}")));
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_restarts_the_trigger() {
    let fake = fake("revised");
    let h = Harness::new().await;
    let v1 = h.flow(&flow_yaml("revised", "revised", "", LOG_N)).await;
    assert_eq!(v1.revision, 1);
    for n in 0..2 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("revised", 2).await;
    assert!(executions.iter().all(|e| e.flow_revision == 1));

    let v2 = h
        .flow(&flow_yaml(
            "revised",
            "revised",
            "    maxInFlight: 7\n",
            &LOG_N.replace("n=", "v2 n="),
        ))
        .await;
    assert_eq!(v2.revision, 2);
    // The old connection is closed and a new one opened (by the new revision).
    eventually("reconnected for revision 2", async || {
        if fake.connects() == 2 && fake.closes() == 1 {
            Ok(())
        } else {
            Err(format!(
                "{} connects, {} closes",
                fake.connects(),
                fake.closes()
            ))
        }
    })
    .await;
    let status = h
        .status_until("revised", "revision 2 running", |s| {
            s.state == TriggerState::Running
        })
        .await;
    assert_eq!(status.max_in_flight, 7);
    assert_eq!(status.events, 0, "a new revision starts new counters");
    for n in 2..4 {
        fake.send(ev(n));
    }
    let executions = h.ended_executions("revised", 4).await;
    assert_eq!(executions.len(), 4);
    for e in &executions {
        let expected = if n_of(e) < 2 { 1 } else { 2 };
        assert_eq!(e.flow_revision, expected, "{}", describe(e));
        assert_eq!(e.state.current, State::Success, "{}", describe(e));
        if expected == 2 {
            assert_eq!(h.log_messages(&e.id).await, [format!("v2 n={}", n_of(e))]);
        }
    }
    assert_acked_once(&fake.acks(), (0..4).map(|n| format!("e{n}")));
    assert_eq!(fake.connects(), 2);
    assert_eq!(h.engine.trigger_statuses().len(), 1);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_reconnects_a_stalled_source() {
    // The watchdog looks every 30 s: this test waits that long.
    let fake = fake("stalled");
    fake.set_backlog(Some(12));
    let h = Harness::new().await;
    h.flow(&flow_yaml("stalled", "stalled", "", LOG_N)).await;
    h.status_until("stalled", "connected", |s| s.state == TriggerState::Running)
        .await;
    let reconnected = tokio::time::timeout(Duration::from_secs(45), async {
        loop {
            if fake.connects() >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reconnected.is_ok(),
        "no reconnection within 45 s: {:?}",
        h.status("stalled")
    );
    assert_eq!(fake.closes(), 1);
    let status = h.status("stalled").expect("status");
    assert_eq!(status.lag, Some(12), "the lag is shown: {status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stalled") && e.contains("12")),
        "{status:?}"
    );
    // The source has events after all: they are processed on the new connection.
    fake.set_backlog(None);
    fake.send(ev(0));
    let executions = h.ended_executions("stalled", 1).await;
    assert_eq!(executions[0].state.current, State::Success);
    h.engine.shutdown().await;
}

#[test]
fn realtime_settings_are_validated_with_the_flow() {
    let _fake = fake("settings");
    let registry = registry();
    let parse = |settings: &str| {
        Flow::parse(
            &flow_yaml("settings", "settings", settings, LOG_N),
            &registry,
        )
    };
    let problems = |settings: &str| -> String {
        match parse(settings) {
            Ok(_) => panic!("`{settings}` was accepted"),
            Err(d) => d
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    };
    let zero = problems("    maxInFlight: 0\n");
    assert!(
        zero.contains("maxInFlight") && zero.contains("positive"),
        "{zero}"
    );
    let negative = problems("    maxInFlight: -3\n");
    assert!(negative.contains("maxInFlight"), "{negative}");
    let sideways = problems("    ordering: SIDEWAYS\n");
    assert!(
        sideways.contains("ordering")
            && sideways.contains("NONE")
            && sideways.contains("KEY")
            && sideways.contains("PARTITION"),
        "{sideways}"
    );

    let flow = parse("    maxInFlight: 5\n    ordering: key\n").expect("valid settings");
    match &flow.triggers[0].kind {
        TriggerKind::Realtime(rt) => {
            assert_eq!(rt.settings.max_in_flight, 5);
            assert_eq!(rt.settings.ordering, Ordering::Key);
        }
        other => panic!("expected a realtime trigger, got {other:?}"),
    }
    let flow = parse("").expect("defaults");
    match &flow.triggers[0].kind {
        TriggerKind::Realtime(rt) => {
            assert_eq!(
                rt.settings.max_in_flight,
                swoop_core::realtime::DEFAULT_MAX_IN_FLIGHT
            );
            assert_eq!(rt.settings.ordering, Ordering::None);
        }
        other => panic!("expected a realtime trigger, got {other:?}"),
    }
}
