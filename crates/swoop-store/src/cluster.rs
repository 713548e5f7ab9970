//! What several nodes sharing one store keep about each other: the nodes and their heartbeats,
//! who runs which execution (its owner), who runs which trigger (a lease with a fencing token),
//! and the wake-ups they send each other. A leaf module: only types and the
//! [`ClusterStore`] trait; the PostgreSQL backend implements it (`postgres/cluster.rs`), the
//! engine's `cluster` module drives it.
//!
//! Liveness is judged by the database's clock (`now()`), never by a node's: heartbeats, lease
//! expiries and the liveness timeout are all compared on the server, so nodes whose clocks
//! disagree still agree on who is alive.
//!
//! Fencing: once a node has joined, the store writes on its behalf only what it still owns.
//! - A save of an execution succeeds only while the execution's owner is this node
//!   ([`StoreError::Fenced`] otherwise): a node frozen past the liveness timeout, whose
//!   executions were taken over, cannot overwrite what the new owner wrote.
//! - An execution with a dedup key of a trigger this node leased is created only while this
//!   node still holds the lease with the same token, checked in the transaction that stores the
//!   execution: a node that lost a trigger cannot create its executions any more.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use swoop_core::Execution;

use crate::StoreResult;

/// A node's life, as Kestra names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Running,
    /// Stopping gracefully: takes no new work, lets its executions end.
    Terminating,
    /// Stopped after every execution it ran had ended (or been handed over).
    TerminatedGracefully,
    /// Stopped with executions still running after `terminationGracePeriod`: they are resumed
    /// by the other nodes.
    TerminatedForced,
    /// Missed its heartbeats for the liveness timeout: its executions and triggers were taken
    /// over. A node that finds itself DISCONNECTED stops.
    Disconnected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Running => "RUNNING",
            NodeState::Terminating => "TERMINATING",
            NodeState::TerminatedGracefully => "TERMINATED_GRACEFULLY",
            NodeState::TerminatedForced => "TERMINATED_FORCED",
            NodeState::Disconnected => "DISCONNECTED",
        }
    }

    pub fn parse(text: &str) -> Option<NodeState> {
        Some(match text {
            "RUNNING" => NodeState::Running,
            "TERMINATING" => NodeState::Terminating,
            "TERMINATED_GRACEFULLY" => NodeState::TerminatedGracefully,
            "TERMINATED_FORCED" => NodeState::TerminatedForced,
            "DISCONNECTED" => NodeState::Disconnected,
            _ => return None,
        })
    }

    /// RUNNING or TERMINATING: the node still owns what it runs.
    pub fn is_alive(self) -> bool {
        matches!(self, NodeState::Running | NodeState::Terminating)
    }
}

/// What a node does. `executor` and `worker` are one role in swoop (an execution's tasks run in
/// the process that runs the execution): a node with either runs executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Runs executions (`executor`, `worker`).
    pub executes: bool,
    /// Runs triggers (`scheduler`): takes trigger leases.
    pub schedules: bool,
    /// Serves the HTTP API (`webserver`).
    pub serves: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        executes: true,
        schedules: true,
        serves: true,
    };

    /// `all`, or a comma-separated subset of `executor`, `worker`, `scheduler`, `webserver`.
    pub fn parse(text: &str) -> Result<Roles, String> {
        let mut roles = Roles {
            executes: false,
            schedules: false,
            serves: false,
        };
        for part in text.split(',').map(str::trim) {
            match part {
                "all" => roles = Roles::ALL,
                "executor" | "worker" => roles.executes = true,
                "scheduler" => roles.schedules = true,
                "webserver" => roles.serves = true,
                other => {
                    return Err(format!(
                        "unknown role `{other}` (the roles are all, executor, worker, scheduler, webserver)"
                    ));
                }
            }
        }
        if roles
            == (Roles {
                executes: false,
                schedules: false,
                serves: false,
            })
        {
            return Err("--roles names no role (give `all` or some of executor, worker, scheduler, webserver)".into());
        }
        Ok(roles)
    }

    /// The roles as a list, for the nodes table and the API.
    pub fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.executes {
            out.extend(["executor", "worker"]);
        }
        if self.schedules {
            out.push("scheduler");
        }
        if self.serves {
            out.push("webserver");
        }
        out
    }
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// This process's id (a new one at every start).
    pub id: String,
    /// The node's name (`--node-name`, `host:port` by default): a restarted node keeps it.
    pub name: String,
    pub roles: Vec<String>,
    pub state: NodeState,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// When the state last changed.
    pub state_at: DateTime<Utc>,
}

/// Who runs a trigger.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// `namespace/flowId/triggerId`.
    pub trigger: String,
    pub node_id: String,
    /// Grows by one at every change of owner.
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// This node is still RUNNING or TERMINATING; `false`: the others declared it DISCONNECTED.
    pub alive: bool,
    /// Nodes this heartbeat declared DISCONNECTED.
    pub disconnected: Vec<String>,
}

/// A wake-up from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A flow was stored or deleted: reload it.
    Flow { namespace: String, id: String },
    /// Executions wait for a node to run them (created by a node that does not execute, or left
    /// by a node that stopped or died).
    Work,
    /// Kill this execution, if it runs here.
    Kill { execution_id: String },
    /// The connection that listens was lost and opened again: notices may have been missed.
    Reconnected,
}

impl Notice {
    pub const CHANNEL: &'static str = "swoop_cluster";

    /// The payload sent on [`Notice::CHANNEL`].
    pub fn payload(&self) -> String {
        match self {
            Notice::Flow { namespace, id } => format!("flow {namespace}/{id}"),
            Notice::Work => "work".into(),
            Notice::Kill { execution_id } => format!("kill {execution_id}"),
            Notice::Reconnected => "reconnected".into(),
        }
    }

    pub fn parse(payload: &str) -> Option<Notice> {
        let (kind, rest) = payload.split_once(' ').unwrap_or((payload, ""));
        match kind {
            "flow" => {
                let (namespace, id) = rest.split_once('/')?;
                Some(Notice::Flow {
                    namespace: namespace.into(),
                    id: id.into(),
                })
            }
            "work" => Some(Notice::Work),
            "kill" if !rest.is_empty() => Some(Notice::Kill {
                execution_id: rest.into(),
            }),
            _ => None,
        }
    }
}

/// What a node tells the store when it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub name: String,
    pub roles: Roles,
    /// How long without a heartbeat before a node is DISCONNECTED; also how long a lease lasts
    /// after its last renewal.
    pub liveness_timeout: Duration,
}

/// The nodes of a cluster, their executions and their trigger leases. Every method acts for the
/// node that [`ClusterStore::join`]ed.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Registers this process as a new RUNNING node and returns its id. An older node with the
    /// same name still shown alive is declared DISCONNECTED: the name is this node's now (its
    /// executions are claimed like any dead node's, its leases can be taken back at once).
    async fn join(&self, request: &JoinRequest) -> StoreResult<String>;
    /// Renews this node's heartbeat and its leases, and declares DISCONNECTED the nodes whose
    /// heartbeat is older than the liveness timeout (when `judge` is set: not in the
    /// `initialDelay` after start).
    async fn heartbeat(&self, judge: bool) -> StoreResult<Heartbeat>;
    async fn set_node_state(&self, state: NodeState) -> StoreResult<()>;
    /// Every node, newest first.
    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>>;

    /// Takes up to `limit` unfinished executions that no live node owns (created by a node that
    /// does not execute, or left by one that stopped or died), oldest first, skipping those
    /// another node is taking at the same moment. This node owns them from then on.
    async fn claim_orphans(&self, limit: usize) -> StoreResult<Vec<Execution>>;
    /// Makes this node the owner of an execution no live node runs (an ended one to restart, an
    /// orphan to kill); `false` when a live node other than this one owns it.
    async fn adopt_execution(&self, id: &str) -> StoreResult<bool>;
    /// The live node that runs an execution, if another one does.
    async fn execution_owner(&self, id: &str) -> StoreResult<Option<String>>;

    /// Takes the lease of a trigger when it is free, expired, this node's, or kept for this
    /// node's name by a graceful stop; returns its fencing token. From then on this node's
    /// creations with the trigger's dedup key are fenced by it.
    async fn acquire_lease(&self, trigger: &str) -> StoreResult<Option<i64>>;
    /// Gives a lease up: free at once, or kept for this node's name for `keep` (a graceful stop,
    /// so that a rolling restart takes it back without a gap).
    async fn release_lease(&self, trigger: &str, keep: Option<Duration>) -> StoreResult<()>;
    /// Every lease, by trigger.
    async fn leases(&self) -> StoreResult<Vec<LeaseRecord>>;

    /// Sends a notice to every node (this one included).
    async fn notify(&self, notice: &Notice) -> StoreResult<()>;
    /// Notices from now on. The stream opens its connection again when it is lost, and then
    /// yields [`Notice::Reconnected`].
    async fn listen(&self) -> StoreResult<tokio::sync::mpsc::Receiver<Notice>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_any_subset() {
        assert_eq!(Roles::parse("all").unwrap(), Roles::ALL);
        let r = Roles::parse("executor,webserver").unwrap();
        assert!(r.executes && r.serves && !r.schedules);
        assert_eq!(
            Roles::parse("worker").unwrap(),
            Roles::parse("executor").unwrap()
        );
        let e = Roles::parse("scheduler,indexer").unwrap_err();
        assert!(e.contains("`indexer`") && e.contains("webserver"), "{e}");
        assert!(Roles::parse("").is_err());
    }

    #[test]
    fn notices_round_trip() {
        for n in [
            Notice::Flow {
                namespace: "a.b".into(),
                id: "f".into(),
            },
            Notice::Work,
            Notice::Kill {
                execution_id: "x1".into(),
            },
        ] {
            assert_eq!(Notice::parse(&n.payload()), Some(n));
        }
        assert_eq!(Notice::parse("nonsense"), None);
        assert_eq!(Notice::parse("kill "), None);
    }

    #[test]
    fn node_states_round_trip() {
        for s in [
            NodeState::Running,
            NodeState::Terminating,
            NodeState::TerminatedGracefully,
            NodeState::TerminatedForced,
            NodeState::Disconnected,
        ] {
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
        }
        assert!(NodeState::Terminating.is_alive());
        assert!(!NodeState::Disconnected.is_alive());
    }
}
