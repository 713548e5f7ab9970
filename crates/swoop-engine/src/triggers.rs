//! Keeps each flow's triggers running: one task per Schedule trigger, replaced when the flow
//! changes and stopped when it is deleted or disabled. (Webhook triggers need no task: the API
//! calls [`crate::Engine::webhook`].)
//!
//! A schedule fires at each cron occurrence after it starts; the occurrence's date is the
//! execution's dedup key, so a restart or two nodes never fire the same date twice.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use swoop_core::Flow;
use swoop_core::flow::{ScheduleTrigger, TriggerDef, TriggerKind};
use swoop_core::model::ExecutionTrigger;
use swoop_store::DedupKey;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, FlowKey, NewExecution};
use crate::realtime::{self, SharedStatus, TriggerStatus};

/// One running trigger task.
struct RunningTrigger {
    flow: FlowKey,
    stop: CancellationToken,
    status: SharedStatus,
    task: tokio::task::JoinHandle<()>,
}

/// `namespace/flowId/triggerId`: a trigger's dedup scope and its lease's name.
pub fn trigger_key(flow: &Flow, trigger_id: &str) -> String {
    trigger_key_of(&flow.namespace, &flow.id, trigger_id)
}

/// [`trigger_key`] from its parts.
pub fn trigger_key_of(namespace: &str, flow_id: &str, trigger_id: &str) -> String {
    format!("{namespace}/{flow_id}/{trigger_id}")
}

/// Whether a trigger needs a task (and, with several nodes, a lease): schedules and realtime
/// triggers of an enabled flow.
pub(crate) fn runs_a_task(flow: &Flow, trigger: &TriggerDef) -> bool {
    !flow.disabled
        && !trigger.disabled
        && matches!(
            trigger.kind,
            TriggerKind::Schedule(_) | TriggerKind::Realtime(_)
        )
}

#[derive(Default)]
pub struct TriggerSupervisor {
    /// By trigger key.
    running: Mutex<HashMap<String, RunningTrigger>>,
}

impl TriggerSupervisor {
    /// Stops the flow's trigger tasks and starts those of its new revision that `may_run`
    /// allows (all of them on one node; the leased ones with several).
    pub fn restart_flow(
        &self,
        engine: &Arc<Engine>,
        flow: &Arc<Flow>,
        may_run: impl Fn(&str) -> bool,
    ) {
        let key = (flow.namespace.clone(), flow.id.clone());
        self.stop_flow(&key);
        for trigger in flow.triggers.iter().filter(|t| runs_a_task(flow, t)) {
            if may_run(&trigger_key(flow, &trigger.id)) {
                self.start(engine, flow, trigger);
            }
        }
    }

    /// Starts one trigger of a flow (stopping a task it had already).
    pub(crate) fn start(&self, engine: &Arc<Engine>, flow: &Arc<Flow>, trigger: &TriggerDef) {
        let stop = engine.shutdown.child_token();
        let (status, task) = match &trigger.kind {
            TriggerKind::Schedule(schedule) => {
                let status = realtime::new_status(flow, &trigger.id, &trigger.type_name, 0);
                realtime::set_running(&status);
                let task = tokio::spawn(run_schedule(
                    engine.clone(),
                    flow.clone(),
                    trigger_ref(trigger),
                    schedule.clone(),
                    stop.clone(),
                ));
                (status, task)
            }
            TriggerKind::Realtime(rt) => {
                let status = realtime::new_status(
                    flow,
                    &trigger.id,
                    &trigger.type_name,
                    rt.settings.max_in_flight,
                );
                let task = tokio::spawn(realtime::run(
                    engine.clone(),
                    flow.clone(),
                    trigger.id.clone(),
                    trigger.type_name.clone(),
                    rt.clone(),
                    status.clone(),
                    stop.clone(),
                ));
                (status, task)
            }
            TriggerKind::Webhook(_) => return,
        };
        let running = RunningTrigger {
            flow: (flow.namespace.clone(), flow.id.clone()),
            stop,
            status,
            task,
        };
        if let Some(old) = self
            .running
            .lock()
            .insert(trigger_key(flow, &trigger.id), running)
        {
            old.stop.cancel();
        }
    }

    /// Stops one trigger and waits (at most `within`) until its task has returned: a realtime
    /// source has then confirmed what was recorded. `false` when it did not return in time.
    pub(crate) async fn stop_and_wait(&self, key: &str, within: std::time::Duration) -> bool {
        let Some(running) = self.running.lock().remove(key) else {
            return true;
        };
        running.stop.cancel();
        tokio::time::timeout(within, running.task).await.is_ok()
    }

    pub fn stop_flow(&self, key: &FlowKey) {
        self.running.lock().retain(|_, t| {
            if &t.flow == key {
                t.stop.cancel();
                false
            } else {
                true
            }
        });
    }

    pub fn stop_all(&self) {
        for (_, t) in self.running.lock().drain() {
            t.stop.cancel();
        }
    }

    /// The status of every running trigger, in no order.
    pub fn statuses(&self) -> Vec<TriggerStatus> {
        let running = self.running.lock();
        running.values().map(|t| t.status.lock().clone()).collect()
    }

    /// One running trigger's status.
    pub fn status(&self, key: &str) -> Option<TriggerStatus> {
        let running = self.running.lock();
        running.get(key).map(|t| t.status.lock().clone())
    }

    /// Whether a task runs for this trigger here.
    pub fn is_running(&self, key: &str) -> bool {
        self.running.lock().contains_key(key)
    }
}

#[derive(Clone)]
struct TriggerRef {
    id: String,
    type_name: String,
}

fn trigger_ref(t: &TriggerDef) -> TriggerRef {
    TriggerRef {
        id: t.id.clone(),
        type_name: t.type_name.clone(),
    }
}

/// Parses a schedule's cron and time zone (both were checked at validation).
fn parse_schedule(s: &ScheduleTrigger) -> Result<(croner::Cron, Tz), String> {
    let cron = croner::parser::CronParser::new()
        .parse(&s.cron)
        .map_err(|e| format!("cron `{}`: {e}", s.cron))?;
    let tz = match &s.timezone {
        Some(name) => name
            .parse::<Tz>()
            .map_err(|e| format!("timezone `{name}`: {e}"))?,
        None => Tz::UTC,
    };
    Ok((cron, tz))
}

async fn run_schedule(
    engine: Arc<Engine>,
    flow: Arc<Flow>,
    trigger: TriggerRef,
    schedule: ScheduleTrigger,
    stop: CancellationToken,
) {
    let (cron, tz) = match parse_schedule(&schedule) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(namespace = %flow.namespace, flow = %flow.id, trigger = %trigger.id, error = %e, "schedule cannot start");
            return;
        }
    };
    let dedup_trigger = trigger_key(&flow, &trigger.id);
    let mut after = Utc::now().with_timezone(&tz);
    loop {
        let next = match cron.find_next_occurrence(&after, false) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(trigger = %dedup_trigger, error = %e, "schedule has no next occurrence");
                return;
            }
        };
        let wait = (next.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let date = next.with_timezone(&Utc);
        let following = cron
            .find_next_occurrence(&next, false)
            .ok()
            .map(|d| d.with_timezone(&Utc));
        let previous = cron
            .find_previous_occurrence(&next, false)
            .ok()
            .map(|d| d.with_timezone(&Utc));
        let mut variables = Map::new();
        variables.insert("date".into(), Value::String(iso(date)));
        if let Some(n) = following {
            variables.insert("next".into(), Value::String(iso(n)));
        }
        if let Some(p) = previous {
            variables.insert("previous".into(), Value::String(iso(p)));
        }
        let request = NewExecution {
            namespace: flow.namespace.clone(),
            flow_id: flow.id.clone(),
            inputs: schedule.inputs.clone(),
            trigger: Some(ExecutionTrigger {
                id: trigger.id.clone(),
                type_name: trigger.type_name.clone(),
                variables: variables.into(),
            }),
            dedup: Some(DedupKey {
                trigger: dedup_trigger.clone(),
                key: iso(date),
            }),
            ..Default::default()
        };
        match engine.execute_flow(&flow, request).await {
            Ok(e) => {
                tracing::info!(trigger = %dedup_trigger, execution = %e.id, date = %iso(date), "schedule fired")
            }
            Err(e) => {
                tracing::error!(trigger = %dedup_trigger, error = %e, "schedule could not start an execution")
            }
        }
        after = next;
    }
}

fn iso(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
