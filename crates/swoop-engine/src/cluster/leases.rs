//! Trigger leases: which node runs each schedule and realtime trigger. A pass (every heartbeat
//! interval, and when the flows change):
//!
//! 1. gives up the leases this node holds for triggers that are gone, and stops the triggers
//!    whose lease another node holds now (this node's expired while it could not renew it);
//! 2. takes free leases up to its fair share (the triggers over the live nodes with the
//!    scheduler role, rounded up), leases a graceful stop kept for this node's name first, and
//!    starts their triggers;
//! 3. holding more than its share while another scheduler holds less than its, gives one up:
//!    the trigger stops here (its source confirms what is recorded), then the lease is freed and
//!    the other node takes it at its next pass.
//!
//! Taking a lease over never races with the old owner's writes: each creation of the old owner
//! checks its token in the transaction that stores the execution (see `swoop_store::cluster`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use swoop_core::Flow;
use swoop_store::cluster::NodeState;

use super::{Node, cluster_of};
use crate::engine::Engine;
use crate::triggers::{runs_a_task, trigger_key};

/// How long a trigger may take to stop (its source to confirm what is recorded) before its lease
/// is released anyway.
const STOP_WITHIN: Duration = Duration::from_secs(35);

/// One lease pass (see the module comment).
pub(crate) async fn pass(engine: &Arc<Engine>, node: &Arc<Node>) {
    if !node.settings.roles.schedules || engine.shutdown.is_cancelled() || node.lost.is_cancelled()
    {
        return;
    }
    let cluster = cluster_of(engine);
    let wanted: BTreeMap<String, (Arc<Flow>, String)> = engine
        .flows()
        .into_iter()
        .flat_map(|flow| {
            flow.triggers
                .iter()
                .filter(|t| runs_a_task(&flow, t))
                .map(|t| (trigger_key(&flow, &t.id), (flow.clone(), t.id.clone())))
                .filter(|(key, _)| !engine.trigger_disabled(key))
                .collect::<Vec<_>>()
        })
        .collect();
    let (leases, nodes) = match tokio::try_join!(cluster.leases(), cluster.nodes()) {
        Ok(both) => both,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the trigger leases; retrying at the next pass");
            return;
        }
    };
    let holder: HashMap<&str, &str> = leases
        .iter()
        .map(|l| (l.trigger.as_str(), l.node_id.as_str()))
        .collect();

    // 1. What this node holds but should not, or no longer does.
    let held: Vec<String> = node.held.lock().iter().cloned().collect();
    for key in held {
        let gone = !wanted.contains_key(&key);
        let taken = holder.get(key.as_str()).is_some_and(|h| *h != node.id);
        if gone || taken {
            if taken {
                tracing::warn!(trigger = %key, "another node holds this trigger's lease now: it stops here");
            }
            give_up(engine, node, &key, None).await;
        } else if !holder.contains_key(key.as_str()) {
            // Expired without being taken (the heartbeat could not renew it): renew it.
            match cluster.acquire_lease(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => give_up(engine, node, &key, None).await,
                Err(e) => tracing::warn!(trigger = %key, error = %e, "cannot renew a lease"),
            }
        }
    }

    // 2. Take up to the fair share.
    let schedulers: Vec<_> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Running && n.roles.iter().any(|r| r == "scheduler"))
        .collect();
    let fair = wanted.len().div_ceil(schedulers.len().max(1));
    let name_of: HashMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.name.as_str()))
        .collect();
    let kept_for_me = |key: &str| {
        holder
            .get(key)
            .is_some_and(|h| *h != node.id && name_of.get(h) == Some(&node.settings.name.as_str()))
    };
    let mut candidates: Vec<&String> = wanted
        .keys()
        .filter(|k| !node.holds(k) && (kept_for_me(k) || !holder.contains_key(k.as_str())))
        .collect();
    candidates.sort_by_key(|k| !kept_for_me(k));
    for key in candidates {
        if node.held.lock().len() >= fair && !kept_for_me(key) {
            break;
        }
        match cluster.acquire_lease(key).await {
            Ok(Some(token)) => {
                node.held.lock().insert(key.clone());
                let (flow, trigger_id) = &wanted[key];
                tracing::info!(trigger = %key, token, "trigger lease taken: the trigger runs on this node");
                engine.start_trigger(flow, trigger_id);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(trigger = %key, error = %e, "cannot take a trigger lease");
                return;
            }
        }
    }

    // 3. Hand one over when this node has more than its share and another has less.
    let mine = node.held.lock().len();
    if mine > fair {
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for l in &leases {
            *per_node.entry(l.node_id.as_str()).or_default() += 1;
        }
        let someone_short = schedulers
            .iter()
            .any(|s| s.id != node.id && per_node.get(s.id.as_str()).copied().unwrap_or(0) < fair);
        let last = node.held.lock().iter().max().cloned();
        if let (true, Some(key)) = (someone_short, last) {
            tracing::info!(trigger = %key, held = mine, fair, "handing a trigger over to spread them across the nodes");
            give_up(engine, node, &key, None).await;
        }
    }
}

/// Stops the trigger here, waits until it has stopped, then releases its lease (kept for this
/// node's name for `keep`, when given).
pub(crate) async fn give_up(
    engine: &Arc<Engine>,
    node: &Arc<Node>,
    key: &str,
    keep: Option<Duration>,
) {
    node.held.lock().remove(key);
    if !engine.stop_trigger(key, STOP_WITHIN).await {
        tracing::warn!(trigger = %key, within_s = STOP_WITHIN.as_secs(), "the trigger did not stop in time; its lease is released anyway");
    }
    if let Err(e) = cluster_of(engine).release_lease(key, keep).await {
        tracing::warn!(trigger = %key, error = %e, "cannot release a trigger lease: it expires at the liveness timeout");
    }
}

/// A graceful stop: every trigger stops, and its lease is kept for this node's name for
/// `keep`.
pub(crate) async fn release_all(engine: &Arc<Engine>, node: &Arc<Node>, keep: Duration) {
    let held: Vec<String> = node.held.lock().iter().cloned().collect();
    futures::future::join_all(
        held.iter()
            .map(|key| give_up(engine, node, key, Some(keep))),
    )
    .await;
}
