//! Runs one execution: walks the flow's task tree, creates a task run per task (per ForEach
//! value), runs runnable tasks with retry and timeout, interprets flowable tasks (Sequential,
//! Parallel, ForEach, If, Switch, Subflow), runs `errors` branches, computes flow outputs.
//!
//! The walk is idempotent: a task run already in a terminal state is not run again, its state and
//! outputs are reused. That is what makes resuming after a crash (and restarting a failed
//! execution) the same code path as a first run: tasks that had finished stay finished, tasks
//! that were running run again (at-least-once), nothing else changes.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use swoop_core::duration::format_duration;
use swoop_core::flow::{ConcurrencyBehavior, Flowable, TaskDef, scalar_text};
use swoop_core::model::{Attempt, ExecutionTrigger, LogLevel, StateInfo, TaskRun, new_id};
use swoop_core::registry::{RunnableTask, TaskError, TaskKind, TaskRunInfo};
use swoop_core::storage::{self, ExecutionFiles, TaskStorage};
use swoop_core::template::{TaskTemplates, TemplateContext, Templates};
use swoop_core::{Flow, State};
use swoop_store::{DedupKey, Durability};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::context::{LogTarget, TaskRunContext, base_context, outputs_context};
use crate::engine::{Engine, LiveExecution, NewExecution};

/// Where a task runs in the tree.
#[derive(Debug, Clone, Default)]
struct Scope {
    parent: Option<String>,
    value: Option<String>,
    iteration: Option<u64>,
    error_branch: bool,
}

impl Scope {
    fn child(&self, parent: &str) -> Scope {
        Scope {
            parent: Some(parent.to_string()),
            ..self.clone()
        }
    }
}

pub(crate) struct Run {
    engine: Arc<Engine>,
    flow: Arc<Flow>,
    live: Arc<LiveExecution>,
    /// The variables every task run of the execution sees.
    base: TemplateContext,
    flow_ref: String,
    /// The execution's files (an error when its namespace or id cannot be a storage path).
    files: Result<ExecutionFiles, String>,
}

/// How a list of task states adds up (Kestra's rule: any failure fails, any warning warns).
fn combine(states: impl IntoIterator<Item = (State, bool)>) -> State {
    let mut result = State::Success;
    for (state, allow_failure) in states {
        match state {
            State::Killed => return State::Killed,
            s if s.is_failed() && !allow_failure => result = State::Failed,
            s if (s.is_failed() || s == State::Warning) && result == State::Success => {
                result = State::Warning
            }
            _ => {}
        }
    }
    result
}

impl Run {
    pub(crate) fn new(engine: Arc<Engine>, flow: Arc<Flow>, live: Arc<LiveExecution>) -> Run {
        let base = base_context(&flow, &live.execution.lock());
        let flow_ref = format!("{}.{}", flow.namespace, flow.id);
        let files = {
            let e = live.execution.lock();
            storage::execution_prefix(&e.namespace, &e.flow_id, &e.id)
        }
        .map(|prefix| ExecutionFiles {
            storage: engine.storage.clone(),
            prefix,
        });
        Run {
            engine,
            flow,
            live,
            base,
            flow_ref,
            files,
        }
    }

    fn id(&self) -> String {
        self.live.execution.lock().id.clone()
    }

    fn cancelled(&self) -> bool {
        self.live.cancel.is_cancelled()
    }

    /// Tells subscribers the execution changed, without saving it: they read the live copy.
    /// Used where a save follows soon anyway (a task's end is saved with the next task's first
    /// attempt, or with the execution's end), which halves the writes of a short flow. A crash in
    /// between re-runs that task, as it would any running task.
    fn changed(&self) {
        let (id, state) = {
            let e = self.live.execution.lock();
            (e.id.clone(), e.state.current)
        };
        self.engine.notify(&id, state);
    }

    /// Has the execution's current state saved in the background (coalesced: see
    /// [`crate::saver`]) and tells subscribers.
    fn save_later(&self) {
        self.engine.saver.mark(&self.live);
        self.changed();
    }

    fn log_target(
        &self,
        task_id: Option<&str>,
        task_run_id: Option<&str>,
        attempt: u32,
    ) -> LogTarget {
        let e = self.live.execution.lock();
        LogTarget {
            logs: self.engine.store.clone() as Arc<dyn swoop_store::LogStore>,
            namespace: e.namespace.clone(),
            flow_id: e.flow_id.clone(),
            execution_id: e.id.clone(),
            task_id: task_id.map(str::to_string),
            task_run_id: task_run_id.map(str::to_string),
            attempt_number: attempt,
        }
    }

    fn set_error(&self, message: &str) {
        let mut e = self.live.execution.lock();
        if e.error.is_none() {
            e.error = Some(message.to_string());
        }
    }

    /// Runs the execution to its end.
    pub(crate) async fn drive(self) {
        let permit = match self.flow.concurrency.clone() {
            None => None,
            Some(c) => {
                let slots = self.engine.concurrency_slots(&self.flow, c.limit);
                match c.behavior {
                    ConcurrencyBehavior::Queue => tokio::select! {
                        p = slots.acquire_owned() => p.ok(),
                        _ = self.live.cancel.cancelled() => return self.finish(State::Killed, None).await,
                    },
                    behavior => match slots.try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            let state = if behavior == ConcurrencyBehavior::Cancel {
                                State::Cancelled
                            } else {
                                State::Failed
                            };
                            self.set_error(&format!(
                                "flow `{}` has {} executions running already (concurrency.limit)",
                                self.flow_ref, c.limit
                            ));
                            return self.finish(state, None).await;
                        }
                    },
                }
            }
        };
        self.live.execution.lock().state.transition(State::Running);
        self.changed();

        let root = Scope::default();
        let mut state = self.run_tasks(&self.flow.tasks, &root).await;
        if self.cancelled() {
            state = State::Killed;
        }
        if state == State::Failed && !self.flow.errors.is_empty() {
            let scope = Scope {
                error_branch: true,
                ..Scope::default()
            };
            self.run_tasks(&self.flow.errors, &scope).await;
        }
        if state.is_successful() && !self.flow.outputs.is_empty() {
            state = self.compute_outputs(state);
        }
        self.finish(state, permit).await;
    }

    fn compute_outputs(&self, state: State) -> State {
        let ctx = self.context(None, None, &Scope::default(), 0);
        let mut outputs = Map::new();
        for output in &self.flow.outputs {
            let what = format!("output `{}`", output.id);
            let value = Templates::global()
                .render_value_in(&output.value, &ctx)
                .map_err(|e| e.to_string())
                .and_then(|v| match output.output_type {
                    Some(kind) => crate::inputs::coerce_value(&what, kind, &v),
                    None => Ok(v),
                });
            match value {
                Ok(v) => {
                    outputs.insert(output.id.clone(), v);
                }
                Err(e) => {
                    let message = format!("flow `{}`, output `{}`: {e}", self.flow_ref, output.id);
                    self.log_target(None, None, 0)
                        .log(LogLevel::Error, &message);
                    self.set_error(&message);
                    return State::Failed;
                }
            }
        }
        self.live.execution.lock().outputs = outputs;
        state
    }

    /// Ends the execution: saved durably first, then shown ended (and out of the running ones,
    /// its concurrency slot free), then announced. So whoever sees the end finds it in the store
    /// and can restart it, or start the next execution in its slot, at once.
    async fn finish(&self, state: State, permit: Option<OwnedSemaphorePermit>) {
        let state = if self.cancelled() && !state.is_terminal() {
            State::Killed
        } else {
            state
        };
        let order = self.live.save_order.lock().await;
        // From here no background save of this execution is made: this one is the last.
        self.live.unsaved.store(false, AtomicOrdering::Release);
        let mut ended = self.live.execution.lock().clone();
        ended.state.transition(state);
        if let Err(e) = self
            .engine
            .store
            .save_execution(&ended, Durability::Wait)
            .await
        {
            tracing::error!(execution = %ended.id, error = %e, "cannot save execution");
        }
        drop(order);
        let id = ended.id.clone();
        self.engine
            .metrics
            .ended(&self.flow.namespace, &self.flow.id, state);
        self.engine.retire(&self.live, ended);
        drop(permit);
        self.engine.notify(&id, state);
        tracing::debug!(execution = %id, flow = %self.flow_ref, %state, "execution ended");
    }

    /// Runs tasks one after another; stops at the first failure (unless it is allowed).
    fn run_tasks<'a>(&'a self, tasks: &'a [TaskDef], scope: &'a Scope) -> BoxFuture<'a, State> {
        Box::pin(async move {
            let mut states = Vec::with_capacity(tasks.len());
            for task in tasks.iter().filter(|t| !t.disabled) {
                if self.cancelled() {
                    return State::Killed;
                }
                let state = self.run_task(task, scope).await;
                states.push((state, task.allow_failure));
                if state == State::Killed || (state.is_failed() && !task.allow_failure) {
                    break;
                }
            }
            combine(states)
        })
    }

    /// The task run of `task` in `scope`: the existing one (its state if terminal) or a new one.
    fn open_task_run(&self, task: &TaskDef, scope: &Scope) -> (String, Option<State>) {
        let mut e = self.live.execution.lock();
        let existing = e.task_run_list.iter_mut().find(|t| {
            t.task_id == task.id
                && t.parent_task_run_id == scope.parent
                && t.iteration == scope.iteration
        });
        if let Some(run) = existing {
            if run.state.current.is_terminal() {
                return (run.id.clone(), Some(run.state.current));
            }
            run.state.transition(State::Running);
            return (run.id.clone(), None);
        }
        let mut state = StateInfo::new(State::Created);
        state.transition(State::Running);
        let run = TaskRun {
            id: new_id(),
            execution_id: e.id.clone(),
            namespace: e.namespace.clone(),
            flow_id: e.flow_id.clone(),
            task_id: task.id.clone(),
            parent_task_run_id: scope.parent.clone(),
            value: scope.value.clone(),
            iteration: scope.iteration,
            attempts: Vec::new(),
            outputs: Map::new(),
            state,
            error_branch: scope.error_branch,
        };
        let id = run.id.clone();
        e.task_run_list.push(run);
        (id, None)
    }

    fn close_task_run(&self, run_id: &str, state: State, outputs: Option<Map<String, Value>>) {
        let mut e = self.live.execution.lock();
        if let Some(run) = e.task_run_mut(run_id) {
            if let Some(outputs) = outputs {
                run.outputs = outputs;
            }
            run.state.transition(state);
        }
    }

    fn set_task_run_state(&self, run_id: &str, state: State) {
        if let Some(run) = self.live.execution.lock().task_run_mut(run_id) {
            run.state.transition(state);
        }
    }

    async fn run_task(&self, task: &TaskDef, scope: &Scope) -> State {
        let (run_id, done) = self.open_task_run(task, scope);
        if let Some(state) = done {
            return state;
        }
        if matches!(task.kind, TaskKind::Flowable(_)) {
            // (A runnable's run is saved with its first attempt.)
            self.save_later();
        }
        let (state, outputs) = match &task.kind {
            TaskKind::Runnable(runnable) => {
                self.run_runnable(task, runnable.as_ref(), &run_id, scope)
                    .await
            }
            TaskKind::Flowable(flowable) => self.run_flowable(task, flowable, &run_id, scope).await,
        };
        let state = if self.cancelled() && state != State::Success {
            State::Killed
        } else {
            state
        };
        self.close_task_run(&run_id, state, outputs);
        self.changed();
        state
    }

    /// The template context of a task run.
    fn context(
        &self,
        task: Option<&TaskDef>,
        run_id: Option<&str>,
        scope: &Scope,
        attempt: u32,
    ) -> TemplateContext {
        let outputs = Value::Object(outputs_context(&self.live.execution.lock()));
        match task {
            None => self.base.with([("outputs", outputs)]),
            Some(task) => self.base.with([
                ("outputs", outputs),
                (
                    "taskrun",
                    json!({
                        "id": run_id,
                        "value": scope.value,
                        "iteration": scope.iteration,
                        "parentId": scope.parent,
                        "attemptsCount": attempt,
                    }),
                ),
                ("task", json!({"id": task.id, "type": task.type_name})),
            ]),
        }
    }

    fn task_run_context(
        &self,
        task: &TaskDef,
        run_id: &str,
        scope: &Scope,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<TaskRunContext, String> {
        let info = {
            let e = self.live.execution.lock();
            TaskRunInfo {
                namespace: e.namespace.clone(),
                flow_id: e.flow_id.clone(),
                execution_id: e.id.clone(),
                task_id: task.id.clone(),
                task_run_id: run_id.to_owned(),
                attempt,
            }
        };
        let files = self.files.clone()?;
        let folder = storage::task_run_prefix(&files.prefix, &task.id, run_id)?;
        Ok(TaskRunContext {
            flow_ref: self.flow_ref.clone(),
            task_id: task.id.clone(),
            templates: TaskTemplates::prepared(
                self.context(Some(task), Some(run_id), scope, attempt),
                Arc::new(files.clone()),
            ),
            log: self.log_target(Some(&task.id), Some(run_id), attempt),
            info,
            storage: TaskStorage { files, folder },
            resources: self.engine.resources.clone(),
            cancel,
            live: self.live.clone(),
        })
    }

    /// Starts a new attempt; an attempt left RUNNING by a crash is marked KILLED. Returns the
    /// attempt's number, and the failed attempts and first start since the last restart.
    fn begin_attempt(&self, run_id: &str) -> (u32, u32, chrono::DateTime<Utc>) {
        let mut e = self.live.execution.lock();
        let Some(run) = e.task_run_mut(run_id) else {
            return (1, 0, Utc::now());
        };
        for attempt in &mut run.attempts {
            if !attempt.state.current.is_terminal() {
                attempt.state.transition(State::Killed);
            }
        }
        let since = run
            .state
            .histories
            .iter()
            .rev()
            .find(|h| h.state == State::Restarted)
            .map(|h| h.date);
        let current: Vec<&Attempt> = run
            .attempts
            .iter()
            .filter(|a| since.is_none_or(|s| a.state.start_date().is_some_and(|d| d >= s)))
            .collect();
        let failed = current
            .iter()
            .filter(|a| a.state.current == State::Failed)
            .count() as u32;
        let first = current
            .first()
            .and_then(|a| a.state.start_date())
            .unwrap_or_else(Utc::now);
        run.attempts.push(Attempt {
            state: StateInfo::new(State::Running),
        });
        (run.attempts.len() as u32, failed, first)
    }

    fn end_attempt(&self, run_id: &str, state: State) {
        let mut e = self.live.execution.lock();
        if let Some(attempt) = e.task_run_mut(run_id).and_then(|r| r.attempts.last_mut()) {
            attempt.state.transition(state);
        }
    }

    async fn run_runnable(
        &self,
        task: &TaskDef,
        runnable: &dyn RunnableTask,
        run_id: &str,
        scope: &Scope,
    ) -> (State, Option<Map<String, Value>>) {
        loop {
            let (attempt, failed_before, first_start) = self.begin_attempt(run_id);
            self.save_later();
            // Cancelled on kill (a child of the execution's token) and on timeout; the task's
            // future is dropped then too, which drops any request in flight.
            let cancel = self.live.cancel.child_token();
            let _cancel_on_exit = cancel.clone().drop_guard();
            let ctx = match self.task_run_context(task, run_id, scope, attempt, cancel.clone()) {
                Ok(ctx) => ctx,
                Err(message) => {
                    self.end_attempt(run_id, State::Failed);
                    return self.fail_task(task, run_id, attempt, message);
                }
            };
            let outcome = tokio::select! {
                _ = self.live.cancel.cancelled() => None,
                r = async {
                    match task.timeout {
                        Some(limit) => match tokio::time::timeout(limit, runnable.run(&ctx)).await {
                            Ok(r) => r,
                            Err(_) => {
                                cancel.cancel();
                                Err(TaskError::new(format!(
                                    "timed out after {}", format_duration(limit)
                                )))
                            }
                        },
                        None => runnable.run(&ctx).await,
                    }
                } => Some(r),
            };
            match outcome {
                None => {
                    self.end_attempt(run_id, State::Killed);
                    return (State::Killed, None);
                }
                Some(Ok(outputs)) => {
                    self.end_attempt(run_id, State::Success);
                    let warn = failed_before > 0
                        && task.retry.as_ref().is_some_and(|r| r.warning_on_retry);
                    return (
                        if warn { State::Warning } else { State::Success },
                        Some(outputs),
                    );
                }
                Some(Err(error)) => {
                    self.end_attempt(run_id, State::Failed);
                    ctx.log.log(LogLevel::Error, &error.message);
                    let elapsed = (Utc::now() - first_start).to_std().unwrap_or_default();
                    let delay = task
                        .retry
                        .as_ref()
                        .filter(|_| error.retryable)
                        .and_then(|p| {
                            p.delay_before(failed_before + 2, elapsed, rand::random::<f64>())
                        });
                    if !error.retryable && task.retry.is_some() {
                        ctx.log
                            .log(LogLevel::Warn, "not retried: this error would happen again");
                    }
                    let Some(delay) = delay else {
                        self.set_error(&format!("task `{}` failed: {}", task.id, error.message));
                        return (State::Failed, None);
                    };
                    ctx.log.log(
                        LogLevel::Warn,
                        &format!(
                            "attempt {attempt} failed; retrying in {}",
                            format_duration(delay)
                        ),
                    );
                    self.set_task_run_state(run_id, State::Retrying);
                    self.save_later();
                    tokio::select! {
                        _ = self.live.cancel.cancelled() => return (State::Killed, None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.set_task_run_state(run_id, State::Running);
                }
            }
        }
    }

    fn fail_task(
        &self,
        task: &TaskDef,
        run_id: &str,
        attempt: u32,
        message: String,
    ) -> (State, Option<Map<String, Value>>) {
        self.log_target(Some(&task.id), Some(run_id), attempt)
            .log(LogLevel::Error, &message);
        self.set_error(&message);
        (State::Failed, None)
    }

    async fn run_flowable(
        &self,
        task: &TaskDef,
        flowable: &Flowable,
        run_id: &str,
        scope: &Scope,
    ) -> (State, Option<Map<String, Value>>) {
        let children = scope.child(run_id);
        let render = |property: &str, template: &str| {
            let ctx = self.context(Some(task), Some(run_id), scope, 1);
            Templates::global().render_in(template, &ctx).map_err(|e| {
                format!(
                    "flow `{}`, task `{}`, property `{property}`: {e}",
                    self.flow_ref, task.id
                )
            })
        };
        let (state, outputs) = match flowable {
            Flowable::Sequential { tasks, .. } => (self.run_tasks(tasks, &children).await, None),
            Flowable::Parallel {
                tasks, concurrent, ..
            } => {
                let jobs = tasks
                    .iter()
                    .filter(|t| !t.disabled)
                    .map(|t| (Job::Task(t), children.clone()))
                    .collect();
                (self.run_concurrently(jobs, *concurrent).await, None)
            }
            Flowable::ForEach {
                values,
                concurrency_limit,
                tasks,
                ..
            } => {
                let values = match self.resolve_values(task, run_id, scope, values) {
                    Ok(v) => v,
                    Err(message) => return self.fail_task(task, run_id, 1, message),
                };
                let jobs = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let scope = Scope {
                            parent: Some(run_id.to_string()),
                            value: Some(scalar_text(v)),
                            iteration: Some(i as u64),
                            error_branch: scope.error_branch,
                        };
                        (Job::Tasks(tasks.as_slice()), scope)
                    })
                    .collect();
                let state = self.run_concurrently(jobs, *concurrency_limit).await;
                (state, None)
            }
            Flowable::If {
                condition,
                then,
                otherwise,
                ..
            } => {
                let rendered = match render("condition", condition) {
                    Ok(r) => r,
                    Err(m) => return self.fail_task(task, run_id, 1, m),
                };
                let branch = if swoop_core::template::is_truthy(&rendered) {
                    then
                } else {
                    otherwise
                };
                (self.run_tasks(branch, &children).await, None)
            }
            Flowable::Switch {
                value,
                cases,
                defaults,
                ..
            } => {
                let rendered = match render("value", value) {
                    Ok(r) => r,
                    Err(m) => return self.fail_task(task, run_id, 1, m),
                };
                let case = cases.iter().find(|(k, _)| *k == rendered);
                let tasks = case.map(|(_, t)| t).unwrap_or(defaults);
                let mut outputs = Map::new();
                outputs.insert("value".into(), Value::String(rendered));
                outputs.insert("defaults".into(), Value::Bool(case.is_none()));
                (self.run_tasks(tasks, &children).await, Some(outputs))
            }
            Flowable::Subflow { .. } => {
                return self.run_subflow(task, flowable, run_id, scope).await;
            }
        };
        let state = if self.cancelled() {
            State::Killed
        } else {
            state
        };
        if state == State::Failed && !flowable.errors().is_empty() {
            let errors_scope = Scope {
                error_branch: true,
                ..children
            };
            self.run_tasks(flowable.errors(), &errors_scope).await;
        }
        (state, outputs)
    }

    /// Runs jobs at most `limit` at a time (0: all at once); no new job starts after one failed.
    async fn run_concurrently<'a>(&'a self, jobs: Vec<(Job<'a>, Scope)>, limit: usize) -> State {
        let limit = if limit == 0 { jobs.len().max(1) } else { limit };
        let mut pending = jobs.into_iter();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut states = Vec::new();
        let mut stop = false;
        loop {
            while running.len() < limit && !stop && !self.cancelled() {
                match pending.next() {
                    Some((job, scope)) => running.push(self.run_job(job, scope)),
                    None => break,
                }
            }
            match running.next().await {
                Some((state, allow_failure)) => {
                    stop |= state.is_failed() && !allow_failure;
                    states.push((state, allow_failure));
                }
                None => break,
            }
        }
        combine(states)
    }

    fn run_job<'a>(&'a self, job: Job<'a>, scope: Scope) -> BoxFuture<'a, (State, bool)> {
        Box::pin(async move {
            match job {
                Job::Task(task) => (self.run_task(task, &scope).await, task.allow_failure),
                Job::Tasks(tasks) => (self.run_tasks(tasks, &scope).await, false),
            }
        })
    }

    fn resolve_values(
        &self,
        task: &TaskDef,
        run_id: &str,
        scope: &Scope,
        values: &Value,
    ) -> Result<Vec<Value>, String> {
        let ctx = self.context(Some(task), Some(run_id), scope, 1);
        let prefix = || {
            format!(
                "flow `{}`, task `{}`, property `values`",
                self.flow_ref, task.id
            )
        };
        match values {
            Value::String(template) => {
                let text = Templates::global()
                    .render_in(template, &ctx)
                    .map_err(|e| format!("{}: {e}", prefix()))?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(items)) => Ok(items),
                    _ => Err(format!(
                        "{}: `{template}` rendered to `{text}`, which is not a JSON list",
                        prefix()
                    )),
                }
            }
            Value::Array(items) => items
                .iter()
                .map(|v| Templates::global().render_value_in(v, &ctx))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", prefix())),
            other => Err(format!(
                "{}: expected a list or a template rendering to one, got {other}",
                prefix()
            )),
        }
    }

    async fn run_subflow(
        &self,
        task: &TaskDef,
        flowable: &Flowable,
        run_id: &str,
        scope: &Scope,
    ) -> (State, Option<Map<String, Value>>) {
        let Flowable::Subflow {
            namespace,
            flow_id,
            inputs,
            labels,
            wait,
            transmit_failed,
        } = flowable
        else {
            unreachable!("run_subflow is called for Subflow tasks only");
        };
        let ctx =
            match self.task_run_context(task, run_id, scope, 1, self.live.cancel.child_token()) {
                Ok(ctx) => ctx,
                Err(message) => return self.fail_task(task, run_id, 1, message),
            };
        let rendered = (|| -> Result<_, swoop_core::registry::TaskError> {
            use swoop_core::registry::RunContext;
            let namespace = ctx.render("namespace", namespace)?;
            let flow_id = ctx.render("flowId", flow_id)?;
            let inputs = ctx.render_value("inputs", &Value::Object(inputs.clone()))?;
            let labels = ctx.render_value("labels", &Value::Object(labels.clone()))?;
            Ok((namespace, flow_id, inputs, labels))
        })();
        let (child_ns, child_id, inputs, labels) = match rendered {
            Ok(r) => r,
            Err(e) => return self.fail_task(task, run_id, 1, e.message),
        };
        let execution_id = self.id();
        let request = NewExecution {
            namespace: child_ns.clone(),
            flow_id: child_id.clone(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            labels: labels
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| swoop_core::model::Label {
                            key: k.clone(),
                            value: scalar_text(v),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            trigger: Some(ExecutionTrigger {
                id: task.id.clone(),
                type_name: task.type_name.clone(),
                variables: json!({
                    "executionId": execution_id,
                    "namespace": self.flow.namespace,
                    "flowId": self.flow.id,
                    "flowRevision": self.flow.revision,
                })
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
            }),
            // A resumed parent finds the child it started before instead of starting another.
            dedup: Some(DedupKey {
                trigger: format!("subflow/{execution_id}"),
                key: run_id.to_string(),
            }),
            parent_execution_id: Some(execution_id),
            failed: None,
            execution_id: None,
        };
        let child = match self.engine.execute(request).await {
            Ok(c) => c,
            // The process is stopping: leave this execution unfinished; it resumes (and starts
            // its subflow) at the next start.
            Err(crate::EngineError::ShuttingDown) => std::future::pending().await,
            Err(e) => {
                return self.fail_task(
                    task,
                    run_id,
                    1,
                    format!("cannot start subflow `{child_ns}.{child_id}`: {e}"),
                );
            }
        };
        let mut outputs = Map::new();
        outputs.insert("executionId".into(), Value::String(child.id.clone()));
        if !wait {
            return (State::Success, Some(outputs));
        }
        let ended = tokio::select! {
            r = self.engine.wait_for_end(&child.id, None) => r,
            _ = self.live.cancel.cancelled() => {
                let _ = self.engine.kill(&child.id).await;
                return (State::Killed, Some(outputs));
            }
        };
        let ended = match ended {
            Ok(e) => e,
            Err(e) => {
                return self.fail_task(
                    task,
                    run_id,
                    1,
                    format!("lost track of subflow execution `{}`: {e}", child.id),
                );
            }
        };
        outputs.insert(
            "state".into(),
            Value::String(ended.state.current.to_string()),
        );
        outputs.insert("outputs".into(), Value::Object(ended.outputs.clone()));
        let state = match ended.state.current {
            s if s.is_failed() && *transmit_failed => {
                let message = format!(
                    "subflow execution `{}` of `{child_ns}.{child_id}` ended {s}",
                    ended.id
                );
                self.log_target(Some(&task.id), Some(run_id), 1)
                    .log(LogLevel::Error, &message);
                self.set_error(&message);
                State::Failed
            }
            State::Warning if *transmit_failed => State::Warning,
            _ => State::Success,
        };
        (state, Some(outputs))
    }
}

/// What `run_concurrently` runs: one task (a Parallel child) or a task list (a ForEach
/// iteration).
enum Job<'a> {
    Task(&'a TaskDef),
    Tasks(&'a [TaskDef]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_follows_kestra() {
        assert_eq!(
            combine([(State::Success, false), (State::Warning, false)]),
            State::Warning
        );
        assert_eq!(
            combine([(State::Failed, true), (State::Success, false)]),
            State::Warning
        );
        assert_eq!(
            combine([(State::Failed, false), (State::Success, false)]),
            State::Failed
        );
        assert_eq!(
            combine([(State::Killed, false), (State::Failed, false)]),
            State::Killed
        );
        assert_eq!(combine([]), State::Success);
    }
}
