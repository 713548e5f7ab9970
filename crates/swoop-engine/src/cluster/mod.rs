//! This node's part in a cluster of nodes sharing one PostgreSQL store (the store's side is
//! `swoop_store::cluster`). One task per node ([`run`]):
//!
//! - **heartbeats** every `heartbeatInterval`; after `initialDelay` it also declares DISCONNECTED
//!   the nodes silent for `liveness.timeout`. A heartbeat that finds this node DISCONNECTED (it
//!   was frozen, or cut off, for longer than the timeout) stops the node at once: everything it
//!   ran was taken over, and the store refuses its writes anyway (fencing).
//! - **claims** executions no live node runs (created by a node without the executor role, left
//!   by a node that stopped or died), `FOR UPDATE SKIP LOCKED`, and resumes them here.
//! - **leases** triggers ([`leases`]): one node runs each schedule and realtime trigger; they
//!   spread over the nodes with the scheduler role.
//! - **listens** (`LISTEN/NOTIFY`) for what the other nodes tell: a flow stored or deleted (reload
//!   it), work waiting (claim now, not at the next heartbeat), an execution to kill.
//!
//! An execution runs on the node that created it when that node executes (no queue hop: the
//! realtime path stays as fast as on one node); the others only run what they claim.
//!
//! Cancel policy: the task ends with the engine's shutdown; [`Node::lost`] is cancelled when the
//! node learns it was disconnected, and the binary exits on it.

pub(crate) mod leases;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use swoop_store::cluster::{ClusterStore, Notice, Roles};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// How a node takes part, with Kestra's setting names and defaults.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Unique among the running nodes; a restarted node keeps it (and takes back at once what a
    /// graceful stop kept for it). `host:port` by default.
    pub name: String,
    pub roles: Roles,
    /// `heartbeatInterval`: 3 s.
    pub heartbeat_interval: Duration,
    /// `liveness.timeout`: 45 s without a heartbeat and a node is DISCONNECTED; its executions
    /// resume elsewhere and its trigger leases expire.
    pub liveness_timeout: Duration,
    /// `initialDelay`: 45 s after start before this node judges the others.
    pub initial_delay: Duration,
    /// `terminationGracePeriod`: 5 min that a graceful stop gives running executions to end,
    /// and keeps its trigger leases for (a rolling restart takes them back without a gap).
    pub termination_grace_period: Duration,
}

impl NodeSettings {
    pub fn new(name: impl Into<String>, roles: Roles) -> NodeSettings {
        NodeSettings {
            name: name.into(),
            roles,
            heartbeat_interval: Duration::from_secs(3),
            liveness_timeout: Duration::from_secs(45),
            initial_delay: Duration::from_secs(45),
            termination_grace_period: Duration::from_secs(300),
        }
    }
}

/// How many orphans one claim takes: small, so that several live nodes share a dead one's work.
const CLAIM_BATCH: usize = 32;

/// This node, as the engine sees it.
pub struct Node {
    pub settings: NodeSettings,
    pub id: String,
    started: Instant,
    /// Cancelled when the cluster declared this node DISCONNECTED.
    pub lost: CancellationToken,
    /// Triggers whose lease this node holds.
    pub(crate) held: Mutex<HashSet<String>>,
    /// Poked when the flows changed: lease again without waiting for the next heartbeat.
    pub(crate) rebalance: Notify,
    /// Poked when work may wait: claim without waiting for the next heartbeat.
    claim: Notify,
}

impl Node {
    pub(crate) fn new(settings: NodeSettings, id: String) -> Node {
        Node {
            settings,
            id,
            started: Instant::now(),
            lost: CancellationToken::new(),
            held: Mutex::new(HashSet::new()),
            rebalance: Notify::new(),
            claim: Notify::new(),
        }
    }

    pub(crate) fn holds(&self, trigger: &str) -> bool {
        self.held.lock().contains(trigger)
    }

    pub fn executes(&self) -> bool {
        self.settings.roles.executes
    }
}

pub(crate) fn cluster_of(engine: &Engine) -> &dyn ClusterStore {
    engine
        .store()
        .cluster()
        .expect("a node runs only on a store that has a cluster side")
}

/// The node's task: heartbeats, claims, leases, notices. Ends with the engine or when the node
/// learns it is out.
pub(crate) async fn run(engine: Arc<Engine>, node: Arc<Node>) {
    let mut notices = match cluster_of(&engine).listen().await {
        Ok(rx) => Some(rx),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for cluster notices: changes made on other nodes are seen at the next heartbeat only");
            None
        }
    };
    let mut tick = tokio::time::interval(node.settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if !heartbeat(&engine, &node).await {
                    return;
                }
                claim(&engine, &node).await;
                leases::pass(&engine, &node).await;
            }
            _ = node.rebalance.notified() => leases::pass(&engine, &node).await,
            _ = node.claim.notified() => claim(&engine, &node).await,
            notice = recv(&mut notices) => match notice {
                Some(notice) => on_notice(&engine, &node, notice).await,
                None => notices = None,
            },
        }
    }
}

async fn recv(notices: &mut Option<tokio::sync::mpsc::Receiver<Notice>>) -> Option<Notice> {
    match notices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `false` when the node is out (it then stops everything it runs).
async fn heartbeat(engine: &Arc<Engine>, node: &Arc<Node>) -> bool {
    let judge = node.started.elapsed() >= node.settings.initial_delay;
    match cluster_of(engine).heartbeat(judge).await {
        Ok(hb) if !hb.alive => {
            tracing::error!(
                node = %node.id,
                name = %node.settings.name,
                "this node was declared DISCONNECTED by the cluster (it missed its heartbeats for the liveness timeout): its executions and triggers run elsewhere now; it stops"
            );
            node.held.lock().clear();
            engine.abandon();
            node.lost.cancel();
            false
        }
        Ok(hb) => {
            if !hb.disconnected.is_empty() {
                tracing::warn!(nodes = ?hb.disconnected, "nodes missed their heartbeats: DISCONNECTED; their work is taken over");
                if let Err(e) = cluster_of(engine).notify(&Notice::Work).await {
                    tracing::warn!(error = %e, "cannot tell the other nodes that work waits");
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(node = %node.id, error = %e, "heartbeat failed; retrying at the next interval");
            true
        }
    }
}

/// Takes and resumes the executions no live node runs, a batch at a time.
async fn claim(engine: &Arc<Engine>, node: &Arc<Node>) {
    if !node.executes() || engine.shutdown.is_cancelled() {
        return;
    }
    loop {
        let claimed = match cluster_of(engine).claim_orphans(CLAIM_BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim executions; retrying at the next heartbeat");
                return;
            }
        };
        let full = claimed.len() == CLAIM_BATCH;
        if !claimed.is_empty() {
            tracing::info!(
                count = claimed.len(),
                "claimed executions no live node runs"
            );
        }
        for execution in claimed {
            if let Err(e) = engine.resume(execution).await {
                tracing::error!(error = %e, "cannot resume a claimed execution");
            }
        }
        if !full {
            return;
        }
        // Let the other nodes take their share.
        tokio::task::yield_now().await;
    }
}

async fn on_notice(engine: &Arc<Engine>, node: &Arc<Node>, notice: Notice) {
    match notice {
        Notice::Flow { namespace, id } => {
            if let Err(e) = engine.reload_flow(&namespace, &id).await {
                tracing::warn!(namespace = %namespace, flow = %id, error = %e, "cannot reload a flow another node changed");
            }
        }
        Notice::Work => node.claim.notify_one(),
        Notice::Kill { execution_id } => {
            if engine.is_running_here(&execution_id)
                && let Err(e) = engine.kill(&execution_id).await
            {
                tracing::warn!(execution = %execution_id, error = %e, "cannot kill an execution another node asked to kill");
            }
        }
        Notice::Reconnected => {
            if let Err(e) = engine.reload_all_flows().await {
                tracing::warn!(error = %e, "cannot reload the flows after listening again");
            }
            node.claim.notify_one();
        }
    }
}

/// A node as `GET /api/v1/cluster/nodes` shows it: the store's record, the triggers it runs
/// and whether it is the node answering.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    #[serde(flatten)]
    pub record: swoop_store::cluster::NodeRecord,
    /// The triggers whose lease it holds.
    pub triggers: Vec<String>,
    pub this_node: bool,
}

impl Engine {
    /// Every node of the cluster, newest first; on one node alone, this one.
    pub async fn cluster_nodes(&self) -> crate::EngineResult<Vec<NodeView>> {
        let Some(node) = &self.node else {
            let now = chrono::Utc::now();
            return Ok(vec![NodeView {
                record: swoop_store::cluster::NodeRecord {
                    id: "local".into(),
                    name: "local".into(),
                    roles: Roles::ALL.names().into_iter().map(String::from).collect(),
                    state: if self.shutdown.is_cancelled() {
                        swoop_store::cluster::NodeState::Terminating
                    } else {
                        swoop_store::cluster::NodeState::Running
                    },
                    started_at: self.started_at,
                    heartbeat_at: now,
                    state_at: self.started_at,
                },
                triggers: self
                    .trigger_statuses()
                    .into_iter()
                    .map(|t| {
                        crate::triggers::trigger_key_of(&t.namespace, &t.flow_id, &t.trigger_id)
                    })
                    .collect(),
                this_node: true,
            }]);
        };
        let cluster = cluster_of(self);
        let (nodes, leases) = tokio::try_join!(cluster.nodes(), cluster.leases())?;
        Ok(nodes
            .into_iter()
            .map(|record| NodeView {
                triggers: leases
                    .iter()
                    .filter(|l| l.node_id == record.id)
                    .map(|l| l.trigger.clone())
                    .collect(),
                this_node: record.id == node.id,
                record,
            })
            .collect())
    }
}
