//! [`ClusterStore`] on PostgreSQL: the `nodes` and `trigger_leases` tables and the `owner`
//! column of `executions` (migration 2), and the [`Fence`] the writer checks.
//!
//! Every statement is one atomic statement on a read connection (no transaction spans two), and
//! every time is the server's `now()`. Lease tokens only grow: a released lease keeps its row
//! (expired), so a later owner's token is always higher than any earlier one's.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use swoop_core::Execution;
use tokio::sync::mpsc;

use super::{PostgresStore, executions_of, pg_error, redacted};
use crate::cluster::{
    ClusterStore, Heartbeat, JoinRequest, LeaseRecord, NodeRecord, NodeState, Notice,
};
use crate::write_queue::millis_to_date;
use crate::{StoreError, StoreResult};

/// The node this store writes for, and the leases it holds: read by the writer thread to fence
/// creations and saves.
#[derive(Default)]
pub(crate) struct Fence {
    me: RwLock<Option<Member>>,
    /// Trigger → token of the leases this node holds.
    leases: Mutex<HashMap<String, i64>>,
}

#[derive(Clone)]
struct Member {
    node_id: String,
    name: String,
    executes: bool,
    liveness_ms: f64,
}

impl Fence {
    /// The owner a new execution gets: this node if it runs executions, else none (a node that
    /// executes claims it).
    pub(crate) fn owner_of_new(&self) -> Option<String> {
        self.me
            .read()
            .as_ref()
            .filter(|m| m.executes)
            .map(|m| m.node_id.clone())
    }

    /// The node saves are fenced by, once joined.
    pub(crate) fn node_id(&self) -> Option<String> {
        self.me.read().as_ref().map(|m| m.node_id.clone())
    }

    /// (node, token) when this node holds the trigger's lease.
    pub(crate) fn lease_of(&self, trigger: &str) -> Option<(String, i64)> {
        let token = *self.leases.lock().get(trigger)?;
        Some((self.node_id()?, token))
    }

    fn member(&self) -> StoreResult<Member> {
        self.me.read().clone().ok_or_else(|| {
            StoreError::Data("this node has not joined the cluster (call join first)".into())
        })
    }
}

/// `now() + ms`, in SQL, for a float8 parameter.
const PLUS_MS: &str = "* interval '1 millisecond'";

fn node_record(row: &tokio_postgres::Row) -> StoreResult<NodeRecord> {
    let state: String = row.get(3);
    let roles: String = row.get(2);
    Ok(NodeRecord {
        id: row.get(0),
        name: row.get(1),
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        state: NodeState::parse(&state)
            .ok_or_else(|| StoreError::Data(format!("node state `{state}` is unknown")))?,
        started_at: millis_to_date(row.get(4))?,
        heartbeat_at: millis_to_date(row.get(5))?,
        state_at: millis_to_date(row.get(6))?,
    })
}

fn ms(column: &str) -> String {
    format!("(extract(epoch from {column}) * 1000)::bigint")
}

#[async_trait]
impl ClusterStore for PostgresStore {
    async fn join(&self, request: &JoinRequest) -> StoreResult<String> {
        let node_id = uuid::Uuid::new_v4().simple().to_string();
        let roles = request.roles.names().join(",");
        self.cluster_conn
            .query(
                "join the cluster",
                "WITH old AS (\
                   UPDATE nodes SET state = 'DISCONNECTED', state_at = now() \
                   WHERE name = $2 AND state IN ('RUNNING', 'TERMINATING') RETURNING 1\
                 ) INSERT INTO nodes (id, name, roles, state, started_at, heartbeat_at, state_at) \
                 VALUES ($1, $2, $3, 'RUNNING', now(), now(), now())",
                &[&node_id, &request.name, &roles],
            )
            .await?;
        *self.fence.me.write() = Some(Member {
            node_id: node_id.clone(),
            name: request.name.clone(),
            executes: request.roles.executes,
            liveness_ms: request.liveness_timeout.as_secs_f64() * 1000.0,
        });
        tracing::info!(node = %node_id, name = %request.name, roles = %roles, "joined the cluster");
        Ok(node_id)
    }

    async fn heartbeat(&self, judge: bool) -> StoreResult<Heartbeat> {
        let me = self.fence.member()?;
        let sql = format!(
            "WITH me AS (\
               UPDATE nodes SET heartbeat_at = now() \
               WHERE id = $1 AND state IN ('RUNNING', 'TERMINATING') RETURNING 1\
             ), renew AS (\
               UPDATE trigger_leases SET expires_at = now() + $2::float8 {PLUS_MS} \
               WHERE node_id = $1 AND expires_at > now() AND EXISTS (SELECT 1 FROM me) RETURNING 1\
             ), dead AS (\
               UPDATE nodes SET state = 'DISCONNECTED', state_at = now() \
               WHERE $3 AND id <> $1 AND state IN ('RUNNING', 'TERMINATING') \
               AND heartbeat_at < now() - $2::float8 {PLUS_MS} RETURNING id\
             ), gone AS (\
               DELETE FROM nodes WHERE id <> $1 AND state NOT IN ('RUNNING', 'TERMINATING') \
               AND state_at < now() - interval '1 day' RETURNING 1\
             ) SELECT EXISTS (SELECT 1 FROM me), \
               COALESCE((SELECT array_agg(id) FROM dead), '{{}}'::text[])"
        );
        let rows = self
            .readers
            .query("heartbeat", &sql, &[&me.node_id, &me.liveness_ms, &judge])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Data("heartbeat: no row".into()))?;
        let alive: bool = row.get(0);
        let disconnected: Vec<String> = row.get(1);
        if !alive {
            self.fence.leases.lock().clear();
        }
        Ok(Heartbeat {
            alive,
            disconnected,
        })
    }

    async fn set_node_state(&self, state: NodeState) -> StoreResult<()> {
        let me = self.fence.member()?;
        self.cluster_conn
            .query(
                "set the node's state",
                "UPDATE nodes SET state = $2, state_at = now() \
                 WHERE id = $1 AND state IN ('RUNNING', 'TERMINATING')",
                &[&me.node_id, &state.as_str()],
            )
            .await?;
        Ok(())
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let sql = format!(
            "SELECT id, name, roles, state, {}, {}, {} FROM nodes ORDER BY started_at DESC, id",
            ms("started_at"),
            ms("heartbeat_at"),
            ms("state_at")
        );
        let rows = self.cluster_conn.query("list nodes", &sql, &[]).await?;
        rows.iter().map(node_record).collect()
    }

    async fn claim_orphans(&self, limit: usize) -> StoreResult<Vec<Execution>> {
        let me = self.fence.member()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .readers
            .query(
                "claim executions",
                // No join in the locking query: a row another node claimed meanwhile is
                // re-checked with its new owner (a LEFT JOIN would be re-checked against the old
                // owner's node row, find no match, and claim it a second time).
                "UPDATE executions e SET owner = $1 FROM (\
                   SELECT x.id FROM executions x WHERE NOT x.finished AND (x.owner IS NULL \
                   OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = x.owner \
                                  AND n.state IN ('RUNNING', 'TERMINATING'))) \
                   AND EXISTS (SELECT 1 FROM nodes m WHERE m.id = $1 AND m.state = 'RUNNING') \
                   ORDER BY x.created_at, x.id LIMIT $2 FOR UPDATE OF x SKIP LOCKED\
                 ) c WHERE e.id = c.id RETURNING e.id, e.doc",
                &[&me.node_id, &limit],
            )
            .await?;
        let mut claimed = executions_of(&rows)?;
        claimed.sort_by_key(|e| e.state.start_date());
        Ok(claimed)
    }

    async fn adopt_execution(&self, id: &str) -> StoreResult<bool> {
        let me = self.fence.member()?;
        let rows = self
            .readers
            .query(
                "adopt an execution",
                "UPDATE executions e SET owner = $1 WHERE e.id = $2 AND (\
                   e.finished OR e.owner IS NULL OR e.owner = $1 OR NOT EXISTS (\
                     SELECT 1 FROM nodes n WHERE n.id = e.owner \
                     AND n.state IN ('RUNNING', 'TERMINATING'))\
                 ) RETURNING 1",
                &[&me.node_id, &id],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn execution_owner(&self, id: &str) -> StoreResult<Option<String>> {
        let me = self.fence.member()?;
        let rows = self
            .readers
            .query(
                "read an execution's owner",
                "SELECT e.owner FROM executions e JOIN nodes n ON n.id = e.owner \
                 WHERE e.id = $1 AND e.owner <> $2 AND n.state IN ('RUNNING', 'TERMINATING')",
                &[&id, &me.node_id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn acquire_lease(&self, trigger: &str) -> StoreResult<Option<i64>> {
        let me = self.fence.member()?;
        let sql = format!(
            "INSERT INTO trigger_leases AS l (trigger, node_id, token, expires_at) \
             SELECT $1, $2, 1, now() + $3::float8 {PLUS_MS} \
             WHERE EXISTS (SELECT 1 FROM nodes m WHERE m.id = $2 AND m.state = 'RUNNING') \
             ON CONFLICT (trigger) DO UPDATE SET node_id = EXCLUDED.node_id, \
               token = l.token + CASE WHEN l.node_id = EXCLUDED.node_id THEN 0 ELSE 1 END, \
               expires_at = EXCLUDED.expires_at \
             WHERE l.node_id = EXCLUDED.node_id OR l.expires_at < now() OR EXISTS (\
               SELECT 1 FROM nodes o WHERE o.id = l.node_id AND o.name = $4 \
               AND o.state NOT IN ('RUNNING', 'TERMINATING')) \
             RETURNING token"
        );
        let rows = self
            .readers
            .query(
                "acquire a trigger lease",
                &sql,
                &[&trigger, &me.node_id, &me.liveness_ms, &me.name],
            )
            .await?;
        let token: Option<i64> = rows.first().map(|r| r.get(0));
        if let Some(token) = token {
            self.fence.leases.lock().insert(trigger.to_string(), token);
        }
        Ok(token)
    }

    async fn release_lease(&self, trigger: &str, keep: Option<Duration>) -> StoreResult<()> {
        let me = self.fence.member()?;
        self.fence.leases.lock().remove(trigger);
        let keep_ms = keep.map_or(0.0, |k| k.as_secs_f64() * 1000.0);
        let sql = format!(
            "UPDATE trigger_leases SET expires_at = now() + $3::float8 {PLUS_MS} \
             WHERE trigger = $1 AND node_id = $2"
        );
        self.cluster_conn
            .query(
                "release a trigger lease",
                &sql,
                &[&trigger, &me.node_id, &keep_ms],
            )
            .await?;
        Ok(())
    }

    async fn leases(&self) -> StoreResult<Vec<LeaseRecord>> {
        let sql = format!(
            "SELECT trigger, node_id, token, {} FROM trigger_leases WHERE expires_at > now() \
             ORDER BY trigger",
            ms("expires_at")
        );
        let rows = self.cluster_conn.query("list leases", &sql, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRecord {
                    trigger: r.get(0),
                    node_id: r.get(1),
                    token: r.get(2),
                    expires_at: millis_to_date(r.get(3))?,
                })
            })
            .collect()
    }

    async fn notify(&self, notice: &Notice) -> StoreResult<()> {
        self.cluster_conn
            .query(
                "send a notice",
                "SELECT pg_notify($1, $2)",
                &[&Notice::CHANNEL, &notice.payload()],
            )
            .await?;
        Ok(())
    }

    async fn listen(&self) -> StoreResult<mpsc::Receiver<Notice>> {
        let (tx, rx) = mpsc::channel(1024);
        // The first connection is opened here, so that an unreachable database is an error.
        let first = listen_once(&self.url).await?;
        tokio::spawn(keep_listening(self.url.clone(), first, tx));
        Ok(rx)
    }
}

type Listening = (
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
);

/// A connection of its own, with `LISTEN` sent.
async fn listen_once(url: &str) -> StoreResult<Listening> {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_error(&format!("listen on {}", redacted(url)), e))?;
    // The connection must be polled for the LISTEN to complete.
    let sql = format!("LISTEN {}", Notice::CHANNEL);
    {
        let listen = client.batch_execute(&sql);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => {
                    done.map_err(|e| pg_error("LISTEN", e))?;
                    break;
                }
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                    if message.is_none() {
                        return Err(StoreError::Backend("postgres: the listening connection closed".into()));
                    }
                }
            }
        }
    }
    Ok((client, connection))
}

/// Forwards notices until the receiver goes; opens the connection again (with backoff) when it
/// is lost.
async fn keep_listening(url: String, first: Listening, tx: mpsc::Sender<Notice>) {
    let mut current = Some(first);
    let mut attempt = 0u32;
    loop {
        let (client, mut connection) = match current.take() {
            Some(c) => c,
            None => match listen_once(&url).await {
                Ok(c) => {
                    attempt = 0;
                    if tx.send(Notice::Reconnected).await.is_err() {
                        return;
                    }
                    c
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot listen for cluster notices; retrying");
                    let wait = Duration::from_millis(100 * u64::from(attempt.min(50)));
                    tokio::time::sleep(wait).await;
                    continue;
                }
            },
        };
        loop {
            let message = tokio::select! {
                m = std::future::poll_fn(|cx| connection.poll_message(cx)) => m,
                _ = tx.closed() => return,
            };
            match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if let Some(notice) = Notice::parse(n.payload()) {
                        if tx.send(notice).await.is_err() {
                            return;
                        }
                    } else {
                        tracing::debug!(payload = n.payload(), "unknown cluster notice ignored");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the listening connection failed");
                    break;
                }
                None => break,
            }
        }
        drop(client);
    }
}
