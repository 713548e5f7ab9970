//! The [`Engine`]: owns the flows (parsed, by namespace and id, newest revision), creates
//! executions (durably, with an optional dedup key), runs them (see [`crate::executor`]),
//! resumes every unfinished execution at start, kills and restarts them, and keeps each flow's
//! triggers running (see [`crate::triggers`]).
//!
//! Running executions live in memory ([`LiveExecution`]); their in-between states are saved in
//! the background, coalesced (see [`crate::saver`]); an execution's creation and its end are
//! saved durably before anyone is told.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use swoop_core::model::{ExecutionTrigger, Label};
use swoop_core::resources::SharedResources;
use swoop_core::storage::{
    self, ExecutionFiles, FileMeta, FileReader, InternalStorage, MemoryStorage,
};
use swoop_core::validate::Diagnostic;
use swoop_core::{Execution, Flow, Registry, State};
use swoop_store::cluster::{JoinRequest, NodeState, Notice};
use swoop_store::{Created, DedupKey, Durability, FlowRecord, Store};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

mod flows;
mod trigger_control;

use crate::cluster::{self, Node, NodeSettings};
use crate::error::{EngineError, EngineResult};
use crate::executor::Run;
use crate::inputs::resolve_inputs;
use crate::saver::BackgroundSaver;
use crate::triggers::TriggerSupervisor;

/// How long `shutdown` lets running executions end before leaving them to the next start.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// (namespace, flow id)
pub type FlowKey = (String, String);

/// An execution being run by this process.
pub struct LiveExecution {
    pub execution: Mutex<Execution>,
    pub cancel: CancellationToken,
    /// Changed since its last save; saved by the [`BackgroundSaver`] unless it ends first.
    pub(crate) unsaved: AtomicBool,
    /// Held while a save of this execution is handed to the store: keeps saves in order.
    pub(crate) save_order: tokio::sync::Mutex<()>,
}

/// Something changed in an execution (its state or one of its task runs).
#[derive(Debug, Clone)]
pub struct ExecutionEvent {
    pub id: String,
    pub state: State,
}

/// What to execute, and why.
#[derive(Debug, Clone, Default)]
pub struct NewExecution {
    pub namespace: String,
    pub flow_id: String,
    /// As given by the caller; typed and checked against the flow's inputs.
    pub inputs: Map<String, Value>,
    pub labels: Vec<Label>,
    pub trigger: Option<ExecutionTrigger>,
    /// Makes the creation idempotent: a second request with the same key creates nothing and
    /// returns the first execution.
    pub dedup: Option<DedupKey>,
    pub parent_execution_id: Option<String>,
    /// Create the execution FAILED with this error, without running it (an event that could
    /// not be decoded: its raw payload is in the trigger variables).
    pub failed: Option<String>,
    /// The id to give the execution (a realtime source wrote its trigger files under it
    /// first); `None`: a new one.
    pub execution_id: Option<String>,
}

/// Something kept alive while an execution runs, dropped when it ends (a realtime trigger's
/// in-flight slot).
pub type Hold = Box<dyn std::any::Any + Send>;

/// What became of an event a realtime trigger offered (see [`Engine::admit`]).
pub(crate) enum Admission {
    /// Its execution was created (and started, taking the hold), or existed already.
    Admitted(Submitted),
    /// It can never become a running execution (its inputs do not resolve, say): it was kept
    /// as a FAILED execution with the raw event and this reason.
    Rejected(String),
    /// The store is unavailable: try again later.
    RetryLater(EngineError),
    ShuttingDown,
}

/// What `submit` did.
pub(crate) enum Submitted {
    Created(Box<Execution>),
    /// The dedup key was recorded before, by this execution.
    Duplicate(String),
}

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    flows: RwLock<HashMap<FlowKey, Arc<Flow>>>,
    revisions: Mutex<HashMap<(FlowKey, u32), Arc<Flow>>>,
    live: Mutex<HashMap<String, Arc<LiveExecution>>>,
    events: broadcast::Sender<ExecutionEvent>,
    concurrency: Mutex<HashMap<FlowKey, Arc<Semaphore>>>,
    triggers: TriggerSupervisor,
    /// The keys of the triggers disabled from the API (see [`trigger_control`]).
    disabled_triggers: RwLock<std::collections::BTreeSet<String>>,
    /// One change of the disabled triggers at a time.
    trigger_control: tokio::sync::Mutex<()>,
    pub(crate) shutdown: CancellationToken,
    /// Internal storage (`kestra:///…` files).
    pub(crate) storage: Arc<dyn InternalStorage>,
    /// Clients and pools shared by every execution on this node.
    pub(crate) resources: Arc<SharedResources>,
    /// Writes running executions' in-between states, coalesced.
    pub(crate) saver: Arc<BackgroundSaver>,
    /// This node's part in a cluster (a PostgreSQL store shared by several nodes); `None` on
    /// one node alone.
    pub(crate) node: Option<Arc<Node>>,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) metrics: crate::metrics::EngineMetrics,
    me: Weak<Engine>,
}

impl Engine {
    /// Loads the stored flows, starts their triggers and resumes every unfinished execution.
    /// Files are kept in memory: use [`Engine::start_with_storage`] to keep them.
    pub async fn start(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
    ) -> EngineResult<Arc<Engine>> {
        Self::start_with_storage(store, registry, Arc::new(MemoryStorage::new())).await
    }

    /// Loads the stored flows, starts their triggers and resumes every unfinished execution,
    /// with `storage` for the files tasks write.
    pub async fn start_with_storage(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        storage: Arc<dyn InternalStorage>,
    ) -> EngineResult<Arc<Engine>> {
        Self::start_node(store, registry, storage, None).await
    }

    /// [`Engine::start_with_storage`] as one node of a cluster when `settings` are given and the
    /// store can be shared (PostgreSQL): the node joins, takes its share of the triggers and the
    /// executions no live node runs (see [`crate::cluster`]) instead of resuming every
    /// unfinished execution.
    pub async fn start_node(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        storage: Arc<dyn InternalStorage>,
        settings: Option<NodeSettings>,
    ) -> EngineResult<Arc<Engine>> {
        let node = match (settings, store.cluster()) {
            (Some(settings), Some(cluster)) => {
                let id = cluster
                    .join(&JoinRequest {
                        name: settings.name.clone(),
                        roles: settings.roles,
                        liveness_timeout: settings.liveness_timeout,
                    })
                    .await?;
                Some(Arc::new(Node::new(settings, id)))
            }
            (Some(_), None) => {
                return Err(EngineError::invalid(format!(
                    "several nodes need a store they can share: the `{}` store is one node's (use --db postgres://…)",
                    store.backend()
                )));
            }
            (None, _) => None,
        };
        let engine = Arc::new_cyclic(|me| Engine {
            store,
            registry,
            flows: RwLock::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            events: broadcast::channel(65_536).0,
            concurrency: Mutex::new(HashMap::new()),
            triggers: TriggerSupervisor::default(),
            disabled_triggers: RwLock::default(),
            trigger_control: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            storage,
            resources: Arc::new(SharedResources::new()),
            saver: Arc::new(BackgroundSaver::default()),
            node,
            started_at: chrono::Utc::now(),
            metrics: Default::default(),
            me: me.clone(),
        });
        tokio::spawn(
            engine
                .saver
                .clone()
                .run(engine.store.clone(), engine.shutdown.clone()),
        );
        engine.load_disabled_triggers().await?;
        for record in engine.store.list_flows().await? {
            match engine.parse_record(&record) {
                Ok(flow) => {
                    let flow = Arc::new(flow);
                    engine.install_flow(flow);
                }
                Err(diagnostics) => tracing::error!(
                    namespace = %record.namespace,
                    flow = %record.id,
                    revision = record.revision,
                    problems = %diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                    "stored flow no longer validates; it is not loaded"
                ),
            }
        }
        match &engine.node {
            // Claims (the first at once) take over what no live node runs, this name's earlier
            // process included.
            Some(node) => {
                tokio::spawn(cluster::run(engine.clone(), node.clone()));
            }
            None => engine.resume_unfinished().await?,
        }
        Ok(engine)
    }

    /// This node's part in a cluster, if it is one.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    fn arc(&self) -> Arc<Engine> {
        self.me
            .upgrade()
            .expect("the engine is alive while its methods run")
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops the triggers, gives running executions [`SHUTDOWN_GRACE`] to end, then waits for
    /// pending writes. Executions still running then are not killed: they stay unfinished in
    /// the store and resume at the next start, as after a crash.
    ///
    /// As a node of a cluster: TERMINATING, the triggers stop and their leases are kept for this
    /// node's name for `terminationGracePeriod` (a restart takes them back without a gap), the
    /// executions get that period to end; then TERMINATED_GRACEFULLY, or TERMINATED_FORCED with
    /// executions left, which the other nodes claim at once.
    pub async fn shutdown(&self) {
        // From here nothing new is taken: no submission, no lease.
        self.shutdown.cancel();
        let grace = match &self.node {
            Some(node) if !node.lost.is_cancelled() => {
                let cluster = cluster::cluster_of(self);
                if let Err(e) = cluster.set_node_state(NodeState::Terminating).await {
                    tracing::warn!(error = %e, "cannot mark this node TERMINATING");
                }
                cluster::leases::release_all(
                    &self.arc(),
                    node,
                    node.settings.termination_grace_period,
                )
                .await;
                node.settings.termination_grace_period
            }
            _ => SHUTDOWN_GRACE,
        };
        self.triggers.stop_all();
        let deadline = tokio::time::Instant::now() + grace;
        let mut events = self.subscribe();
        while self.running_count() > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        let left = self.running_count();
        if left > 0 {
            tracing::info!(
                running = left,
                "shutting down with executions running: they resume at the next start"
            );
        }
        self.saver.save_pending(self.store.as_ref()).await;
        let _ = self.store.flush().await;
        if let Some(node) = self.node.as_ref().filter(|n| !n.lost.is_cancelled()) {
            let cluster = cluster::cluster_of(self);
            let state = if left > 0 {
                NodeState::TerminatedForced
            } else {
                NodeState::TerminatedGracefully
            };
            if let Err(e) = cluster.set_node_state(state).await {
                tracing::warn!(error = %e, "cannot record this node's stop");
            }
            if left > 0 {
                let _ = cluster.notify(&Notice::Work).await;
            }
            tracing::info!(node = %node.id, state = state.as_str(), "node stopped");
        }
    }

    /// Stops taking work at once, without saving anything more: the cluster declared this node
    /// DISCONNECTED and other nodes run its executions and triggers now.
    pub(crate) fn abandon(&self) {
        self.shutdown.cancel();
        self.triggers.stop_all();
    }

    // ----------------------------------------------------------- executions

    /// Creates an execution (durably) and starts it. With a dedup key seen before, creates
    /// nothing and returns the execution that holds the key.
    pub async fn execute(&self, request: NewExecution) -> EngineResult<Execution> {
        let flow = self
            .flow(&request.namespace, &request.flow_id)
            .ok_or_else(|| not_found_flow(&request.namespace, &request.flow_id))?;
        self.execute_flow(&flow, request).await
    }

    pub(crate) async fn execute_flow(
        &self,
        flow: &Arc<Flow>,
        request: NewExecution,
    ) -> EngineResult<Execution> {
        match self.submit(flow, &request, &mut None).await? {
            Submitted::Created(execution) => Ok(*execution),
            Submitted::Duplicate(id) => self.get_execution(&id).await,
        }
    }

    /// Creates the execution durably and starts it. When it starts, it takes `hold` and drops it
    /// when it ends; otherwise (an error, a duplicate, an execution created FAILED) `hold` is
    /// left to the caller.
    pub(crate) async fn submit(
        &self,
        flow: &Arc<Flow>,
        request: &NewExecution,
        hold: &mut Option<Hold>,
    ) -> EngineResult<Submitted> {
        if self.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        if flow.disabled {
            return Err(EngineError::Conflict(format!(
                "flow `{}.{}` is disabled: set `disabled: false` to run it",
                flow.namespace, flow.id
            )));
        }
        // An execution created FAILED does not run: its inputs are kept as given.
        let inputs = if request.failed.is_some() {
            request.inputs.clone()
        } else {
            resolve_inputs(flow, &request.inputs).map_err(|problems| EngineError::Invalid {
                message: format!(
                    "invalid inputs for flow `{}.{}`: {}",
                    flow.namespace,
                    flow.id,
                    problems.join("; ")
                ),
                details: problems
                    .into_iter()
                    .map(|message| Diagnostic {
                        line: 0,
                        column: 0,
                        message,
                    })
                    .collect(),
            })?
        };
        let mut execution = Execution::new(&flow.namespace, &flow.id, flow.revision);
        if let Some(id) = &request.execution_id {
            execution.id = id.clone();
        }
        execution.inputs = inputs;
        execution.labels = flow
            .labels
            .iter()
            .map(|(key, value)| Label {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        for label in &request.labels {
            execution.labels.retain(|l| l.key != label.key);
            execution.labels.push(label.clone());
        }
        execution.trigger = request.trigger.clone();
        execution.parent_execution_id = request.parent_execution_id.clone();
        if let Some(error) = &request.failed {
            execution.error = Some(error.clone());
            execution.state.transition(State::Failed);
        }
        match self
            .store
            .create_execution(&execution, request.dedup.clone())
            .await?
        {
            Created::Created => {
                tracing::debug!(execution = %execution.id, namespace = %flow.namespace, flow = %flow.id, "execution created");
                self.metrics.created(&flow.namespace, &flow.id);
                if execution.state.current.is_terminal() {
                    self.metrics
                        .ended(&flow.namespace, &flow.id, execution.state.current);
                    self.notify(&execution.id, execution.state.current);
                } else if self.node.as_ref().is_some_and(|n| !n.executes()) {
                    // Created without an owner: a node that executes claims it.
                    let _ = cluster::cluster_of(self).notify(&Notice::Work).await;
                } else {
                    self.spawn(flow.clone(), execution.clone(), hold.take());
                }
                Ok(Submitted::Created(Box::new(execution)))
            }
            Created::Duplicate { existing_id } => Ok(Submitted::Duplicate(existing_id)),
        }
    }

    /// Admits an event of a realtime trigger: [`Engine::submit`], and when the event can never
    /// become a running execution (bad inputs, a flow that refuses it), the same request
    /// created FAILED with the reason, so that the event is recorded and acknowledged instead
    /// of retried forever. Only an unavailable store is a reason to retry.
    pub(crate) async fn admit(
        &self,
        flow: &Arc<Flow>,
        request: &NewExecution,
        hold: &mut Option<Hold>,
    ) -> Admission {
        let error = match self.submit(flow, request, hold).await {
            Ok(submitted) => return Admission::Admitted(submitted),
            Err(EngineError::ShuttingDown) => return Admission::ShuttingDown,
            Err(e @ (EngineError::Store(_) | EngineError::Storage(_))) => {
                return Admission::RetryLater(e);
            }
            Err(e) => e,
        };
        let reason = error.to_string();
        let failed = NewExecution {
            failed: Some(format!(
                "the event cannot start an execution of flow `{}.{}`: {reason}",
                flow.namespace, flow.id
            )),
            ..request.clone()
        };
        match self.submit(flow, &failed, hold).await {
            // A redelivered event already kept FAILED: a duplicate, not a new rejection.
            Ok(Submitted::Duplicate(id)) => Admission::Admitted(Submitted::Duplicate(id)),
            Ok(Submitted::Created(_)) => Admission::Rejected(reason),
            Err(EngineError::ShuttingDown) => Admission::ShuttingDown,
            Err(e) => Admission::RetryLater(e),
        }
    }

    /// Runs `execution` (new, resumed or restarted) in a task of its own.
    fn spawn(&self, flow: Arc<Flow>, execution: Execution, hold: Option<Hold>) {
        let id = execution.id.clone();
        let live = Arc::new(LiveExecution {
            execution: Mutex::new(execution),
            // Not a child of the engine's shutdown: stopping the engine must not kill
            // executions, which resume at the next start.
            cancel: CancellationToken::new(),
            unsaved: AtomicBool::new(false),
            save_order: tokio::sync::Mutex::new(()),
        });
        self.live.lock().insert(id.clone(), live.clone());
        let engine = self.arc();
        tokio::spawn(async move {
            Run::new(engine.clone(), flow, live.clone()).drive().await;
            engine.forget(&id, &live);
            drop(hold);
        });
    }

    /// Shows an ended execution (saved already) as it ended and stops serving it from memory:
    /// from then on it is read from the store, and it can be restarted.
    pub(crate) fn retire(&self, live: &Arc<LiveExecution>, ended: Execution) {
        let mut running = self.live.lock();
        let id = ended.id.clone();
        *live.execution.lock() = ended;
        if running.get(&id).is_some_and(|l| Arc::ptr_eq(l, live)) {
            running.remove(&id);
        }
    }

    /// Drops `live` from the running executions, unless a restart replaced it already.
    fn forget(&self, id: &str, live: &Arc<LiveExecution>) {
        let mut running = self.live.lock();
        if running.get(id).is_some_and(|l| Arc::ptr_eq(l, live)) {
            running.remove(id);
        }
    }

    pub(crate) fn notify(&self, id: &str, state: State) {
        let _ = self.events.send(ExecutionEvent {
            id: id.to_string(),
            state,
        });
    }

    /// The counters and histograms `/metrics` shows.
    pub fn metrics(&self) -> &crate::metrics::EngineMetrics {
        &self.metrics
    }

    /// Events for every execution change; pair with [`Engine::get_execution`].
    pub fn subscribe(&self) -> broadcast::Receiver<ExecutionEvent> {
        self.events.subscribe()
    }

    /// The execution as it is now (from memory while it runs here, else from the store).
    pub async fn get_execution(&self, id: &str) -> EngineResult<Execution> {
        let live = self.live.lock().get(id).cloned();
        if let Some(live) = live {
            return Ok(live.execution.lock().clone());
        }
        self.store
            .get_execution(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("execution `{id}` not found")))
    }

    /// The folder of an execution's files.
    fn files_of(&self, execution: &Execution) -> EngineResult<ExecutionFiles> {
        let prefix =
            storage::execution_prefix(&execution.namespace, &execution.flow_id, &execution.id)
                .map_err(EngineError::Storage)?;
        Ok(ExecutionFiles {
            storage: self.storage.clone(),
            prefix,
        })
    }

    /// Every file an execution's tasks and trigger wrote.
    pub async fn execution_files(&self, id: &str) -> EngineResult<Vec<FileMeta>> {
        let execution = self.get_execution(id).await?;
        let files = self.files_of(&execution)?;
        files
            .storage
            .list(&files.prefix)
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))
    }

    /// Opens one file of an execution; a URI outside the execution's folder (another
    /// execution's, or a path with `..`) is not found, whether it exists or not.
    pub async fn open_execution_file(
        &self,
        id: &str,
        uri: &str,
    ) -> EngineResult<(FileMeta, FileReader)> {
        let execution = self.get_execution(id).await?;
        let files = self.files_of(&execution)?;
        let not_found = || EngineError::NotFound(format!("execution `{id}` has no file `{uri}`"));
        let path = files.resolve(uri).map_err(|_| not_found())?;
        let size = files
            .storage
            .size(&path)
            .map_err(|e| EngineError::Storage(e.to_string()))?
            .ok_or_else(not_found)?;
        let reader = files.storage.open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                not_found()
            } else {
                EngineError::Storage(e.to_string())
            }
        })?;
        Ok((
            FileMeta {
                uri: path.uri(),
                size,
            },
            reader,
        ))
    }

    /// Deletes a finished execution, its logs and its files. A running one must be killed first.
    pub async fn delete_execution(&self, id: &str) -> EngineResult<()> {
        let execution = self.get_execution(id).await?;
        if !execution.state.current.is_terminal() || self.live.lock().contains_key(id) {
            return Err(EngineError::Conflict(format!(
                "execution `{id}` is {}: kill it (DELETE /api/v1/executions/{id}/kill) before deleting it",
                execution.state.current
            )));
        }
        let files = self.files_of(&execution)?;
        if !self.store.delete_execution(id).await? {
            return Err(EngineError::NotFound(format!("execution `{id}` not found")));
        }
        // After the row: a crash in between leaves files nobody points to, never an execution
        // whose files are gone.
        let deleted = files
            .storage
            .delete_prefix(&files.prefix)
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))?;
        tracing::info!(execution = %id, files = deleted, "execution deleted");
        Ok(())
    }

    /// Waits until the execution is in a terminal state, or `timeout` passed (then returns it as
    /// it is).
    pub async fn wait_for_end(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> EngineResult<Execution> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut events = self.subscribe();
        loop {
            let execution = self.get_execution(id).await?;
            if execution.state.current.is_terminal() {
                return Ok(execution);
            }
            loop {
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, events.recv()).await {
                        Ok(r) => r,
                        Err(_) => return Ok(execution),
                    },
                    None => events.recv().await,
                };
                match next {
                    Ok(ev) if ev.id == id && ev.state.is_terminal() => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(EngineError::ShuttingDown);
                    }
                }
            }
        }
    }

    /// Kills a running execution: its running tasks are stopped and it ends KILLED.
    pub async fn kill(&self, id: &str) -> EngineResult<Execution> {
        let live = self.live.lock().get(id).cloned();
        if let Some(live) = live {
            {
                let mut e = live.execution.lock();
                if e.state.current.is_terminal() {
                    return Err(EngineError::Conflict(format!(
                        "execution `{id}` is {} already",
                        e.state.current
                    )));
                }
                e.state.transition(State::Killing);
            }
            live.cancel.cancel();
            self.notify(id, State::Killing);
            return self.get_execution(id).await;
        }
        let mut execution = self.get_execution(id).await?;
        if execution.state.current.is_terminal() {
            return Err(EngineError::Conflict(format!(
                "execution `{id}` is {} already",
                execution.state.current
            )));
        }
        if self.node.is_some() {
            let cluster = cluster::cluster_of(self);
            if let Some(owner) = cluster.execution_owner(id).await? {
                // It runs on another node: that node kills it.
                cluster
                    .notify(&Notice::Kill {
                        execution_id: id.to_string(),
                    })
                    .await?;
                tracing::info!(execution = %id, node = %owner, "kill sent to the node that runs the execution");
                return Ok(execution);
            }
            if !cluster.adopt_execution(id).await? {
                return Err(EngineError::Conflict(format!(
                    "execution `{id}` is being taken over by another node: try again"
                )));
            }
        }
        execution.state.transition(State::Killed);
        self.store
            .save_execution(&execution, Durability::Wait)
            .await?;
        self.notify(id, State::Killed);
        Ok(execution)
    }

    /// Runs an execution again from the start as a new execution: the flow's newest revision,
    /// the same inputs, labels and trigger (its event), and the label `replayOf` naming the
    /// execution replayed. Files the trigger wrote stay the old execution's.
    pub async fn replay(&self, id: &str) -> EngineResult<Execution> {
        let old = self.get_execution(id).await?;
        let flow = self
            .flow(&old.namespace, &old.flow_id)
            .ok_or_else(|| not_found_flow(&old.namespace, &old.flow_id))?;
        let mut labels = old.labels;
        labels.retain(|l| l.key != "replayOf");
        labels.push(Label {
            key: "replayOf".into(),
            value: old.id.clone(),
        });
        let request = NewExecution {
            namespace: old.namespace,
            flow_id: old.flow_id,
            inputs: old.inputs,
            labels,
            trigger: old.trigger,
            ..Default::default()
        };
        tracing::info!(execution = %id, "execution replayed");
        self.execute_flow(&flow, request).await
    }

    /// Restarts a FAILED or KILLED execution from its failed tasks: successful task runs are
    /// kept, failed ones run again (with fresh attempts), the errors branch runs again if needed.
    pub async fn restart(&self, id: &str) -> EngineResult<Execution> {
        if self.live.lock().contains_key(id) {
            return Err(EngineError::Conflict(format!(
                "execution `{id}` is still running: only a FAILED or KILLED execution can be restarted"
            )));
        }
        let mut execution = self.get_execution(id).await?;
        if !matches!(execution.state.current, State::Failed | State::Killed) {
            return Err(EngineError::Conflict(format!(
                "execution `{id}` is {}: only a FAILED or KILLED execution can be restarted",
                execution.state.current
            )));
        }
        let flow = self
            .flow_revision(
                &execution.namespace,
                &execution.flow_id,
                execution.flow_revision,
            )
            .await?;
        if self.node.is_some() && !cluster::cluster_of(self).adopt_execution(id).await? {
            return Err(EngineError::Conflict(format!(
                "execution `{id}` is run by another node"
            )));
        }
        execution.task_run_list.retain(|t| !t.error_branch);
        for run in &mut execution.task_run_list {
            if run.state.current.is_failed() {
                run.state.transition(State::Restarted);
            }
        }
        execution.error = None;
        execution.state.transition(State::Restarted);
        self.store
            .save_execution(&execution, Durability::Wait)
            .await?;
        self.notify(id, State::Restarted);
        self.spawn(flow, execution.clone(), None);
        Ok(execution)
    }

    async fn resume_unfinished(&self) -> EngineResult<()> {
        let unfinished = self.store.unfinished_executions().await?;
        if !unfinished.is_empty() {
            tracing::info!(count = unfinished.len(), "resuming unfinished executions");
        }
        for execution in unfinished {
            self.resume(execution).await?;
        }
        Ok(())
    }

    /// Runs an unfinished execution again here (after a restart, or claimed from a node that
    /// stopped or died): an execution being killed ends KILLED; one whose flow is gone FAILED.
    pub(crate) async fn resume(&self, mut execution: Execution) -> EngineResult<()> {
        if self.live.lock().contains_key(&execution.id) {
            return Ok(());
        }
        if execution.state.current == State::Killing {
            execution.state.transition(State::Killed);
            self.store
                .save_execution(&execution, Durability::Background)
                .await?;
            self.notify(&execution.id, State::Killed);
            return Ok(());
        }
        match self
            .flow_revision(
                &execution.namespace,
                &execution.flow_id,
                execution.flow_revision,
            )
            .await
        {
            Ok(flow) => self.spawn(flow, execution, None),
            Err(e) => {
                tracing::error!(execution = %execution.id, error = %e, "cannot resume execution: its flow is gone");
                execution.error = Some(format!("cannot resume: {e}"));
                execution.state.transition(State::Failed);
                self.store
                    .save_execution(&execution, Durability::Background)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the execution runs in this process now.
    pub fn is_running_here(&self, id: &str) -> bool {
        self.live.lock().contains_key(id)
    }

    /// The semaphore that enforces a flow's `concurrency.limit`.
    pub(crate) fn concurrency_slots(&self, flow: &Flow, limit: u32) -> Arc<Semaphore> {
        self.concurrency
            .lock()
            .entry((flow.namespace.clone(), flow.id.clone()))
            .or_insert_with(|| Arc::new(Semaphore::new(limit as usize)))
            .clone()
    }

    /// Number of executions running in this process.
    pub fn running_count(&self) -> usize {
        self.live.lock().len()
    }

    /// Starts an execution from a webhook call: the flow must have a Webhook trigger with this
    /// `key`. `variables` become `trigger.*` (body, headers, parameters).
    pub async fn webhook(
        &self,
        namespace: &str,
        flow_id: &str,
        key: &str,
        variables: Map<String, Value>,
    ) -> EngineResult<Execution> {
        let flow = self
            .flow(namespace, flow_id)
            .ok_or_else(|| not_found_flow(namespace, flow_id))?;
        let trigger = flow
            .triggers
            .iter()
            .find(|t| {
                !t.disabled
                    && matches!(&t.kind, swoop_core::flow::TriggerKind::Webhook(w) if w.key == key)
            })
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "flow `{namespace}.{flow_id}` has no enabled Webhook trigger with this key"
                ))
            })?;
        self.check_webhook_enabled(namespace, flow_id, &trigger.id)?;
        let request = NewExecution {
            namespace: namespace.to_string(),
            flow_id: flow_id.to_string(),
            trigger: Some(ExecutionTrigger {
                id: trigger.id.clone(),
                type_name: trigger.type_name.clone(),
                variables: variables.into(),
            }),
            ..Default::default()
        };
        self.execute_flow(&flow, request).await
    }
}

fn not_found_flow(namespace: &str, id: &str) -> EngineError {
    EngineError::NotFound(format!("flow `{namespace}.{id}` not found"))
}
