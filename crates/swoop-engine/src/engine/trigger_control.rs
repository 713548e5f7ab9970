//! Triggers switched off and on, and restarted, from the API (Kestra's trigger toggle).
//!
//! A trigger disabled here stays disabled across restarts and on every node: the set of
//! disabled trigger keys is one trigger-state record in the store ([`DISABLED_RECORD`]), read
//! at start and again when another node announces a change. A disabled schedule or realtime
//! trigger runs no task (it holds no lease either); a disabled webhook answers 409. The flow's
//! own `disabled: true` is another thing: it is part of the flow's source.

use std::collections::BTreeSet;

use swoop_core::flow::TriggerKind;

use super::*;
use crate::realtime::{self, TriggerState, TriggerStatus};
use crate::triggers::{runs_a_task, trigger_key, trigger_key_of};

/// The trigger-state record that holds the disabled trigger keys (a JSON array).
const DISABLED_RECORD: &str = "swoop/disabled-triggers";

/// How long a restart or a disable waits for a realtime source to stop (it confirms what was
/// recorded first).
const STOP_WITHIN: Duration = Duration::from_secs(15);

impl Engine {
    /// Reads the disabled triggers from the store; `true` when the set changed.
    pub(super) async fn load_disabled_triggers(&self) -> EngineResult<bool> {
        let stored = self.read_disabled_record().await?;
        let mut current = self.disabled_triggers.write();
        let changed = *current != stored;
        *current = stored;
        Ok(changed)
    }

    async fn read_disabled_record(&self) -> EngineResult<BTreeSet<String>> {
        let value = self.store.get_trigger_state(DISABLED_RECORD).await?;
        Ok(match value {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                EngineError::Store(swoop_store::StoreError::Data(format!(
                    "trigger state `{DISABLED_RECORD}` is not a list of trigger keys: {e}"
                )))
            })?,
            None => BTreeSet::new(),
        })
    }

    /// Whether the API disabled this trigger (`namespace/flowId/triggerId`).
    pub(crate) fn trigger_disabled(&self, key: &str) -> bool {
        self.disabled_triggers.read().contains(key)
    }

    /// Disables or enables one trigger of a flow, durably, and stops or starts it here; the
    /// other nodes are told. Returns the trigger's status after the change.
    pub async fn set_trigger_disabled(
        &self,
        namespace: &str,
        flow_id: &str,
        trigger_id: &str,
        disabled: bool,
    ) -> EngineResult<TriggerStatus> {
        let (flow, key) = self.find_trigger(namespace, flow_id, trigger_id)?;
        {
            let _one_writer = self.trigger_control.lock().await;
            let mut set = self.read_disabled_record().await?;
            let changed = if disabled {
                set.insert(key.clone())
            } else {
                set.remove(&key)
            };
            if changed {
                let value = serde_json::to_value(&set).unwrap_or(Value::Null);
                self.store
                    .put_trigger_state(DISABLED_RECORD, &value)
                    .await?;
            }
            *self.disabled_triggers.write() = set;
        }
        tracing::info!(trigger = %key, disabled, "trigger switched from the API");
        if disabled {
            match &self.node {
                // Stopped, then its lease released: no node takes it while it is disabled.
                Some(node) if node.holds(&key) => {
                    crate::cluster::leases::give_up(&self.arc(), node, &key, None).await
                }
                _ => {
                    if !self.triggers.stop_and_wait(&key, STOP_WITHIN).await {
                        tracing::warn!(trigger = %key, "the disabled trigger did not stop in time");
                    }
                }
            }
        } else {
            self.start_if_mine(&flow, trigger_id, &key);
        }
        self.announce_flow(namespace, flow_id).await;
        Ok(self.trigger_status(&flow, trigger_id, &key))
    }

    /// Stops a running trigger and starts it again (a new connection for a realtime source).
    pub async fn restart_trigger(
        &self,
        namespace: &str,
        flow_id: &str,
        trigger_id: &str,
    ) -> EngineResult<TriggerStatus> {
        let (flow, key) = self.find_trigger(namespace, flow_id, trigger_id)?;
        if self.trigger_disabled(&key) {
            return Err(EngineError::Conflict(format!(
                "trigger `{key}` is disabled: enable it (POST …/enable) instead of restarting it"
            )));
        }
        if !self.triggers.is_running(&key) && !self.may_run_trigger(&key) {
            return Err(EngineError::Conflict(format!(
                "trigger `{key}` runs on another node: restart it there"
            )));
        }
        if !self.triggers.stop_and_wait(&key, STOP_WITHIN).await {
            tracing::warn!(trigger = %key, "the trigger did not stop in time; it is started again anyway");
        }
        self.start_if_mine(&flow, trigger_id, &key);
        tracing::info!(trigger = %key, "trigger restarted from the API");
        Ok(self.trigger_status(&flow, trigger_id, &key))
    }

    fn start_if_mine(&self, flow: &Arc<Flow>, trigger_id: &str, key: &str) {
        match &self.node {
            // The lease pass takes it when it is this node's to run.
            Some(node) if !node.holds(key) => node.rebalance.notify_one(),
            _ => self.start_trigger(flow, trigger_id),
        }
    }

    /// A trigger that can be switched: one that runs a task (a schedule or a realtime
    /// trigger) or a webhook, of an installed flow.
    fn find_trigger(
        &self,
        namespace: &str,
        flow_id: &str,
        trigger_id: &str,
    ) -> EngineResult<(Arc<Flow>, String)> {
        let flow = self
            .flow(namespace, flow_id)
            .ok_or_else(|| not_found_flow(namespace, flow_id))?;
        let Some(trigger) = flow.triggers.iter().find(|t| t.id == trigger_id) else {
            let ids: Vec<&str> = flow.triggers.iter().map(|t| t.id.as_str()).collect();
            return Err(EngineError::NotFound(format!(
                "flow `{namespace}.{flow_id}` has no trigger `{trigger_id}` (its triggers are: {})",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            )));
        };
        if flow.disabled || trigger.disabled {
            return Err(EngineError::Conflict(format!(
                "trigger `{trigger_id}` of flow `{namespace}.{flow_id}` is disabled in the flow's source (`disabled: true`): change the flow"
            )));
        }
        Ok((flow.clone(), trigger_key(&flow, trigger_id)))
    }

    /// A trigger's status: its task's when it runs here, else what can be said without one.
    fn trigger_status(&self, flow: &Flow, trigger_id: &str, key: &str) -> TriggerStatus {
        if let Some(status) = self.triggers.status(key) {
            return status;
        }
        let def = flow.triggers.iter().find(|t| t.id == trigger_id);
        let type_name = def.map(|t| t.type_name.as_str()).unwrap_or_default();
        let max_in_flight = match def.map(|t| &t.kind) {
            Some(TriggerKind::Realtime(rt)) => rt.settings.max_in_flight,
            _ => 0,
        };
        let status = realtime::new_status(flow, trigger_id, type_name, max_in_flight);
        let mut status = status.lock().clone();
        status.state = if self.trigger_disabled(key) {
            TriggerState::Disabled
        } else {
            TriggerState::Stopped
        };
        status
    }

    /// The status of every trigger that runs here, and of every disabled one (state
    /// `DISABLED`), by namespace, flow and trigger id.
    pub fn trigger_statuses(&self) -> Vec<TriggerStatus> {
        let mut statuses = self.triggers.statuses();
        let disabled = self.disabled_triggers.read().clone();
        for key in disabled {
            let mut parts = key.splitn(3, '/');
            let (Some(ns), Some(flow_id), Some(trigger_id)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(flow) = self.flow(ns, flow_id) else {
                continue;
            };
            let exists = flow
                .triggers
                .iter()
                .any(|t| t.id == trigger_id && (runs_a_task(&flow, t) || is_webhook(t)));
            if exists && !self.triggers.is_running(&key) {
                statuses.push(self.trigger_status(&flow, trigger_id, &key));
            }
        }
        statuses.sort_by(|a, b| {
            (&a.namespace, &a.flow_id, &a.trigger_id).cmp(&(
                &b.namespace,
                &b.flow_id,
                &b.trigger_id,
            ))
        });
        statuses
    }

    /// Refuses a webhook call to a trigger disabled from the API.
    pub(super) fn check_webhook_enabled(
        &self,
        namespace: &str,
        flow_id: &str,
        trigger_id: &str,
    ) -> EngineResult<()> {
        let key = trigger_key_of(namespace, flow_id, trigger_id);
        if self.trigger_disabled(&key) {
            return Err(EngineError::Conflict(format!(
                "webhook trigger `{key}` is disabled: enable it with POST /api/v1/triggers/{key}/enable"
            )));
        }
        Ok(())
    }
}

fn is_webhook(t: &swoop_core::flow::TriggerDef) -> bool {
    matches!(t.kind, TriggerKind::Webhook(_))
}
