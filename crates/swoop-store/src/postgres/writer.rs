//! The PostgreSQL writer: the [`BatchBackend`] that runs each batch of the group-commit loop
//! in one transaction on the writer thread's synchronous connection (see the parent module's
//! comment for the design).

use super::*;

pub(super) struct Writer {
    pub(super) fence: Arc<Fence>,
    pub(super) url: String,
    pub(super) client: postgres::Client,
    /// The connection failed mid-transaction: open it again before the next batch.
    pub(super) broken: bool,
    /// A statement failed: the transaction is aborted.
    pub(super) failed: bool,
    /// This batch runs each message in a savepoint (after a first try failed).
    pub(super) careful: bool,
    /// Statements prepared on this connection.
    pub(super) statements: std::collections::HashMap<&'static str, postgres::Statement>,
}

impl BatchBackend for Writer {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn begin(&mut self) -> StoreResult<()> {
        if self.broken || self.client.is_closed() {
            self.client = connect_sync(&self.url)?;
            self.statements.clear();
            self.broken = false;
            tracing::info!(url = %redacted(&self.url), "postgres writer reconnected");
        }
        self.failed = false;
        self.exec("BEGIN")
    }

    fn apply(&mut self, op: &mut WriteOp) {
        match op {
            WriteOp::Create { row, dedup, done } => {
                done.result = Some(self.in_savepoint(|w| w.create(row, dedup.as_ref())));
            }
            WriteOp::Save { row, done } => done.result = Some(self.in_savepoint(|w| w.save(row))),
            WriteOp::Logs { rows, done } => {
                done.result = Some(self.in_savepoint(|w| w.append_logs(rows)));
            }
            WriteOp::PutFlow {
                namespace,
                id,
                source,
                now_ms,
                done,
            } => {
                done.result =
                    Some(self.in_savepoint(|w| w.put_flow(namespace, id, source, *now_ms)));
            }
            WriteOp::DeleteFlow {
                namespace,
                id,
                done,
            } => done.result = Some(self.in_savepoint(|w| w.delete_flow(namespace, id))),
            WriteOp::DeleteExecution { id, done } => {
                done.result = Some(self.in_savepoint(|w| w.delete_execution(id)));
            }
            WriteOp::PutTriggerState {
                trigger,
                value,
                done,
            } => done.result = Some(self.in_savepoint(|w| w.put_trigger_state(trigger, value))),
            WriteOp::Flush { .. } => {}
        }
    }

    fn aborted(&mut self) -> bool {
        self.failed || self.broken || self.client.is_closed()
    }

    /// Creations one by one, then every save of the batch in one statement and every log line
    /// in another — when the batch holds only those and no save comes before a creation of
    /// the same execution (else, and in a careful batch, one by one in order).
    fn apply_all(&mut self, batch: &mut [WriteOp], plan: &[Option<usize>]) -> Option<usize> {
        if self.careful || !groupable(batch, plan) {
            return apply_in_order(self, batch, plan);
        }
        for (i, op) in batch.iter_mut().enumerate() {
            if plan[i].is_none() && matches!(op, WriteOp::Create { .. }) {
                self.apply(op);
                if self.aborted() {
                    return Some(i);
                }
            }
        }
        let grouped = match self.save_all(batch, plan) {
            Ok(()) => self.logs_all(batch),
            Err(e) => Err(e),
        };
        if let Err(e) = grouped {
            self.failed = true;
            // The batch fails: say why on the first message it has.
            let first = (0..batch.len()).find(|i| plan[*i].is_none())?;
            batch[first].fail(&e);
            return Some(first);
        }
        None
    }

    fn commit(&mut self) -> StoreResult<()> {
        self.exec("COMMIT")
    }

    fn rollback(&mut self) {
        if !self.broken && !self.client.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    fn committed(&mut self) {
        self.careful = false;
    }

    fn retry_carefully(&mut self) -> bool {
        if self.careful || self.broken || self.client.is_closed() {
            return false;
        }
        self.careful = true;
        true
    }
}

impl Writer {
    /// The prepared statement of `sql`, prepared once per connection.
    fn prepared(&mut self, sql: &'static str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn run(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.execute(&s, params)
    }

    fn one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<postgres::Row, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query_one(&s, params)
    }

    fn opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query_opt(&s, params)
    }
    fn exec(&mut self, sql: &str) -> StoreResult<()> {
        match self.client.batch_execute(sql) {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.client.is_closed() || e.as_db_error().is_none() {
                    self.broken = true;
                }
                Err(pg_error(sql, e))
            }
        }
    }

    /// Runs one message: directly, or in a savepoint in a careful batch. A database error
    /// outside a savepoint aborts the transaction (the batch is run again carefully).
    fn in_savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        if !self.careful {
            let result = f(self);
            if let Err(StoreError::Backend(_)) = &result {
                self.failed = true;
            }
            return result;
        }
        self.exec("SAVEPOINT op")?;
        let result = f(self);
        if result.is_err()
            && let Err(e) = self.exec("ROLLBACK TO SAVEPOINT op")
        {
            // Never commit half a message: give the whole transaction up.
            tracing::error!(error = %e, "cannot roll a savepoint back; the batch fails");
            self.broken = true;
            return result;
        }
        self.exec("RELEASE SAVEPOINT op")?;
        result
    }

    /// Every save of the batch (`plan` skips the coalesced ones) in one statement; a save of an
    /// execution never created fails alone.
    fn save_all(&mut self, batch: &mut [WriteOp], plan: &[Option<usize>]) -> StoreResult<()> {
        let mut ids = Vec::new();
        let mut states = Vec::new();
        let mut finished = Vec::new();
        let mut updated = Vec::new();
        let mut docs = Vec::new();
        for (i, op) in batch.iter().enumerate() {
            if let (WriteOp::Save { row, .. }, None) = (op, plan[i]) {
                ids.push(row.id.as_str());
                states.push(row.state);
                finished.push(row.finished);
                updated.push(row.updated_at);
                docs.push(row.doc.as_str());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let node = self.fence.node_id();
        let rows = {
            let s = self
                .prepared(
                    "UPDATE executions e SET state = v.state, finished = v.finished, \
                     updated_at = v.updated_at, doc = v.doc \
                     FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::bigint[], $5::text[]) \
                     AS v(id, state, finished, updated_at, doc) \
                     WHERE e.id = v.id AND ($6::text IS NULL OR e.owner = $6) RETURNING e.id",
                )
                .ctx("prepare saves")?;
            self.client
                .query(&s, &[&ids, &states, &finished, &updated, &docs, &node])
                .ctx("update executions")?
        };
        let saved: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        for (i, op) in batch.iter_mut().enumerate() {
            if let (WriteOp::Save { row, done }, None) = (op, plan[i]) {
                done.result = Some(if saved.contains(&row.id) {
                    Ok(())
                } else {
                    Err(not_saved(&row.id, node.is_some()))
                });
            }
        }
        Ok(())
    }

    /// Every log line of the batch, in order, in one statement.
    fn logs_all(&mut self, batch: &mut [WriteOp]) -> StoreResult<()> {
        let (ids, docs): (Vec<&str>, Vec<&str>) = batch
            .iter()
            .filter_map(|op| match op {
                WriteOp::Logs { rows, .. } => Some(rows.iter()),
                _ => None,
            })
            .flatten()
            .map(|r| (r.execution_id.as_str(), r.doc.as_str()))
            .unzip();
        if !ids.is_empty() {
            self.insert_logs(&ids, &docs)?;
        }
        for op in batch.iter_mut() {
            if let WriteOp::Logs { done, .. } = op {
                done.result = Some(Ok(()));
            }
        }
        Ok(())
    }

    fn create(&mut self, row: &ExecRow, dedup: Option<&DedupKey>) -> StoreResult<Created> {
        let exists = || StoreError::Data(format!("execution {} already exists", row.id));
        let owner = self.fence.owner_of_new();
        let columns: [&(dyn postgres::types::ToSql + Sync); 9] = [
            &row.id,
            &row.namespace,
            &row.flow_id,
            &row.state,
            &row.finished,
            &row.created_at,
            &row.updated_at,
            &row.doc,
            &owner,
        ];
        let Some(key) = dedup else {
            let inserted = self
                .run(
                    "INSERT INTO executions \
                     (id, namespace, flow_id, state, finished, created_at, updated_at, doc, owner) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                    &columns,
                )
                .ctx("insert execution")?;
            return if inserted == 1 {
                Ok(Created::Created)
            } else {
                Err(exists())
            };
        };
        // The key and the execution in one statement: the execution only if the key was new,
        // and, for a trigger this node leased, only while it still holds the lease. The lease
        // row is read, not locked (a frozen node would hold the lock and stall the takeover):
        // a creation whose statement ran just before the takeover commits, and the new owner
        // finds its dedup key (waiting at most for this transaction) and creates nothing.
        let lease = self.fence.lease_of(&key.trigger);
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = columns.to_vec();
        params.push(&key.trigger);
        params.push(&key.key);
        let row_out = match &lease {
            None => self.one(
                "WITH d AS (\
                   INSERT INTO dedup (trigger, key, execution_id) VALUES ($10, $11, $1) \
                   ON CONFLICT DO NOTHING RETURNING 1\
                 ), e AS (\
                   INSERT INTO executions \
                   (id, namespace, flow_id, state, finished, created_at, updated_at, doc, owner) \
                   SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM d) \
                   ON CONFLICT (id) DO NOTHING RETURNING 1\
                 ) SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM e), TRUE",
                &params,
            ),
            Some((node, token)) => {
                params.push(node);
                params.push(token);
                self.one(
                    "WITH l AS (\
                       SELECT 1 FROM trigger_leases l JOIN nodes n ON n.id = l.node_id \
                       WHERE l.trigger = $10 AND l.node_id = $12 AND l.token = $13 \
                       AND n.state IN ('RUNNING', 'TERMINATING')\
                     ), d AS (\
                       INSERT INTO dedup (trigger, key, execution_id) \
                       SELECT $10, $11, $1 WHERE EXISTS (SELECT 1 FROM l) \
                       ON CONFLICT DO NOTHING RETURNING 1\
                     ), e AS (\
                       INSERT INTO executions \
                       (id, namespace, flow_id, state, finished, created_at, updated_at, doc, owner) \
                       SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM d) \
                       ON CONFLICT (id) DO NOTHING RETURNING 1\
                     ) SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM e), \
                       EXISTS (SELECT 1 FROM l)",
                    &params,
                )
            }
        }
        .ctx("insert execution and dedup key")?;
        let (key_new, created, leased): (bool, bool, bool) =
            (row_out.get(0), row_out.get(1), row_out.get(2));
        if !leased {
            return Err(StoreError::Fenced(format!(
                "trigger `{}` is run by another node now (this node's lease, token {}, was taken over): event `{}` is left to the new owner",
                key.trigger,
                lease.map_or(0, |(_, t)| t),
                key.key
            )));
        }
        match (key_new, created) {
            (true, true) => Ok(Created::Created),
            (true, false) => {
                // The id is taken: take the key back.
                self.run(
                    "DELETE FROM dedup WHERE trigger = $1 AND key = $2 AND execution_id = $3",
                    &[&key.trigger, &key.key, &row.id],
                )
                .ctx("take the dedup key back")?;
                Err(exists())
            }
            (false, _) => {
                // A new statement sees the holder, committed by then (also by another node).
                let existing_id: String = self
                    .one(
                        "SELECT execution_id FROM dedup WHERE trigger = $1 AND key = $2",
                        &[&key.trigger, &key.key],
                    )
                    .ctx("read dedup key")?
                    .get(0);
                Ok(Created::Duplicate { existing_id })
            }
        }
    }

    fn save(&mut self, row: &ExecRow) -> StoreResult<()> {
        let node = self.fence.node_id();
        let changed = self
            .run(
                "UPDATE executions SET state = $2, finished = $3, updated_at = $4, doc = $5 \
                 WHERE id = $1 AND ($6::text IS NULL OR owner = $6)",
                &[
                    &row.id,
                    &row.state,
                    &row.finished,
                    &row.updated_at,
                    &row.doc,
                    &node,
                ],
            )
            .ctx("update execution")?;
        if changed == 0 {
            return Err(not_saved(&row.id, node.is_some()));
        }
        Ok(())
    }

    /// Inserts log lines in order (`seq` follows the arrays' order), in one statement.
    fn insert_logs(&mut self, ids: &[&str], docs: &[&str]) -> StoreResult<()> {
        self.run(
            "INSERT INTO logs (execution_id, doc) \
             SELECT e, d FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS t(e, d, n) \
             ORDER BY n",
            &[&ids, &docs],
        )
        .map(drop)
        .ctx("insert logs")
    }

    fn append_logs(&mut self, rows: &[LogRow]) -> StoreResult<()> {
        let ids: Vec<&str> = rows.iter().map(|r| r.execution_id.as_str()).collect();
        let docs: Vec<&str> = rows.iter().map(|r| r.doc.as_str()).collect();
        self.insert_logs(&ids, &docs)
    }

    fn put_flow(
        &mut self,
        namespace: &str,
        id: &str,
        source: &str,
        now_ms: i64,
    ) -> StoreResult<FlowRecord> {
        let latest = self
            .opt(
                "SELECT revision, source, deleted, updated FROM flows \
                 WHERE namespace = $1 AND id = $2 ORDER BY revision DESC LIMIT 1",
                &[&namespace, &id],
            )
            .ctx("latest flow")?;
        let mut revision = 1i32;
        if let Some(row) = latest {
            let (rev, old, deleted): (i32, String, bool) = (row.get(0), row.get(1), row.get(2));
            if !deleted && old == source {
                return Ok(FlowRecord {
                    namespace: namespace.to_string(),
                    id: id.to_string(),
                    revision: flow_revision(namespace, id, rev)?,
                    source: old,
                    updated: millis_to_date(row.get(3))?,
                });
            }
            revision = rev.checked_add(1).ok_or_else(|| {
                StoreError::Data(format!("flow {namespace}.{id}: too many revisions"))
            })?;
        }
        self.run(
            "INSERT INTO flows (namespace, id, revision, source, deleted, updated) \
                 VALUES ($1, $2, $3, $4, FALSE, $5)",
            &[&namespace, &id, &revision, &source, &now_ms],
        )
        .ctx("insert flow")?;
        Ok(FlowRecord {
            namespace: namespace.to_string(),
            id: id.to_string(),
            revision: flow_revision(namespace, id, revision)?,
            source: source.to_string(),
            updated: millis_to_date(now_ms)?,
        })
    }

    fn delete_flow(&mut self, namespace: &str, id: &str) -> StoreResult<bool> {
        let changed = self
            .run(
                "UPDATE flows SET deleted = TRUE WHERE namespace = $1 AND id = $2 AND NOT deleted",
                &[&namespace, &id],
            )
            .ctx("delete flow")?;
        Ok(changed > 0)
    }

    /// Deletes the execution and its logs; its dedup keys stay.
    fn delete_execution(&mut self, id: &str) -> StoreResult<bool> {
        self.run("DELETE FROM logs WHERE execution_id = $1", &[&id])
            .ctx("delete execution logs")?;
        let changed = self
            .run("DELETE FROM executions WHERE id = $1", &[&id])
            .ctx("delete execution")?;
        Ok(changed > 0)
    }

    fn put_trigger_state(&mut self, trigger: &str, value: &str) -> StoreResult<()> {
        self.run(
            "INSERT INTO trigger_state (trigger, value) VALUES ($1, $2) \
                 ON CONFLICT (trigger) DO UPDATE SET value = excluded.value",
            &[&trigger, &value],
        )
        .map(drop)
        .ctx("put trigger state")
    }
}

/// Whether a batch may run as creations, then saves, then logs: nothing else in it, and no
/// save of an execution before its creation or twice (those keep their order one by one).
/// Why a save changed no row: the execution was never created, or (once a node joined) another
/// node runs it now.
fn not_saved(id: &str, fenced: bool) -> StoreError {
    if fenced {
        StoreError::Fenced(format!(
            "cannot save execution {id}: this node does not run it (another node took it over after this one missed its heartbeats, or it was never created)"
        ))
    } else {
        StoreError::Data(format!("cannot save execution {id}: it was never created"))
    }
}

fn groupable(batch: &[WriteOp], plan: &[Option<usize>]) -> bool {
    let mut created = std::collections::HashSet::new();
    let mut saved = std::collections::HashSet::new();
    for (i, op) in batch.iter().enumerate().rev() {
        match op {
            WriteOp::Create { row, .. } => {
                created.insert(row.id.as_str());
            }
            WriteOp::Save { row, .. } => {
                if plan[i].is_some() {
                    continue;
                }
                if created.contains(row.id.as_str()) || !saved.insert(row.id.as_str()) {
                    return false;
                }
            }
            WriteOp::Logs { .. } | WriteOp::Flush { .. } => {}
            _ => return false,
        }
    }
    true
}
