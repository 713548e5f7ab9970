//! The engine's flows: parsed and installed (newest revision by namespace and id, older
//! revisions on demand), stored, deleted, reloaded when another node changed them, and the
//! triggers each flow runs (through [`crate::triggers`]).

use super::*;

impl Engine {
    pub(super) fn parse_record(&self, record: &FlowRecord) -> Result<Flow, Vec<Diagnostic>> {
        let mut flow = Flow::parse(&record.source, &self.registry)?;
        flow.revision = record.revision;
        Ok(flow)
    }

    /// Every problem in a flow's source, without storing it.
    pub fn validate(&self, source: &str) -> Vec<Diagnostic> {
        match Flow::parse(source, &self.registry) {
            Ok(_) => Vec::new(),
            Err(d) => d,
        }
    }

    fn parse_source(&self, source: &str) -> EngineResult<Flow> {
        Flow::parse(source, &self.registry).map_err(|details| EngineError::Invalid {
            message: format!(
                "the flow is not valid: {}",
                details
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            details,
        })
    }

    pub(super) fn install_flow(&self, flow: Arc<Flow>) {
        let key = (flow.namespace.clone(), flow.id.clone());
        self.revisions
            .lock()
            .insert((key.clone(), flow.revision), flow.clone());
        self.flows.write().insert(key, flow.clone());
        self.triggers
            .restart_flow(&self.arc(), &flow, |trigger| self.may_run_trigger(trigger));
        if let Some(node) = &self.node {
            node.rebalance.notify_one();
        }
        // A new revision may use other connections: it re-registers as a user on first use,
        // and what only the old revision used is closed.
        self.release_flow_resources(&flow.namespace, &flow.id);
    }

    /// On one node every trigger runs; in a cluster, those whose lease this node holds.
    pub(super) fn may_run_trigger(&self, trigger: &str) -> bool {
        !self.trigger_disabled(trigger) && self.node.as_ref().is_none_or(|n| n.holds(trigger))
    }

    /// Starts a trigger of a flow's newest revision (its lease was just taken).
    pub(crate) fn start_trigger(&self, flow: &Arc<Flow>, trigger_id: &str) {
        let flow = self.flow(&flow.namespace, &flow.id).unwrap_or(flow.clone());
        if let Some(trigger) = flow.triggers.iter().find(|t| t.id == trigger_id) {
            self.triggers.start(&self.arc(), &flow, trigger);
        }
    }

    /// Stops a trigger and waits until it has (at most `within`).
    pub(crate) async fn stop_trigger(&self, trigger: &str, within: Duration) -> bool {
        self.triggers.stop_and_wait(trigger, within).await
    }

    /// Tells the other nodes a flow changed.
    pub(super) async fn announce_flow(&self, namespace: &str, id: &str) {
        if self.node.is_some() {
            let notice = Notice::Flow {
                namespace: namespace.into(),
                id: id.into(),
            };
            if let Err(e) = cluster::cluster_of(self).notify(&notice).await {
                tracing::warn!(namespace, flow = id, error = %e, "cannot tell the other nodes a flow changed: they see it when they listen again");
            }
        }
    }

    /// Loads a flow as the store has it now (another node stored or deleted it).
    pub(crate) async fn reload_flow(&self, namespace: &str, id: &str) -> EngineResult<()> {
        self.reload_disabled_triggers().await?;
        match self.store.get_flow(namespace, id).await? {
            Some(record) => self.apply_record(&record),
            None => {
                if self.uninstall_flow(namespace, id) {
                    tracing::info!(namespace, flow = id, "flow deleted on another node");
                }
                Ok(())
            }
        }
    }

    /// Installs a stored revision unless it is the one installed already.
    fn apply_record(&self, record: &FlowRecord) -> EngineResult<()> {
        let (namespace, id) = (&record.namespace, &record.id);
        if self.flow(namespace, id).map(|f| f.revision) == Some(record.revision) {
            return Ok(());
        }
        let flow = self
            .parse_record(record)
            .map_err(|details| EngineError::Invalid {
                message: format!("flow `{namespace}.{id}` no longer validates"),
                details,
            })?;
        tracing::info!(namespace = %namespace, flow = %id, revision = record.revision, "flow changed on another node: reloaded");
        self.install_flow(Arc::new(flow));
        Ok(())
    }

    /// Drops a flow from memory: its triggers stop and what only it used is closed. `false`
    /// when it was not installed.
    fn uninstall_flow(&self, namespace: &str, id: &str) -> bool {
        let key = (namespace.to_string(), id.to_string());
        if self.flows.write().remove(&key).is_none() {
            return false;
        }
        self.triggers.stop_flow(&key);
        self.release_flow_resources(namespace, id);
        if let Some(node) = &self.node {
            node.rebalance.notify_one();
        }
        true
    }

    /// Reloads every flow from one listing (notices may have been missed).
    pub(crate) async fn reload_all_flows(&self) -> EngineResult<()> {
        self.reload_disabled_triggers().await?;
        let stored = self.store.list_flows().await?;
        let mut gone: std::collections::HashSet<FlowKey> =
            self.flows.read().keys().cloned().collect();
        for record in &stored {
            gone.remove(&(record.namespace.clone(), record.id.clone()));
            self.apply_record(record)?;
        }
        for (namespace, id) in gone {
            if self.uninstall_flow(&namespace, &id) {
                tracing::info!(namespace = %namespace, flow = %id, "flow deleted on another node");
            }
        }
        Ok(())
    }

    /// Rereads the triggers disabled from the API (another node may have switched one); the
    /// lease pass then stops or takes what changed.
    async fn reload_disabled_triggers(&self) -> EngineResult<()> {
        if self.load_disabled_triggers().await?
            && let Some(node) = &self.node
        {
            node.rebalance.notify_one();
        }
        Ok(())
    }

    fn release_flow_resources(&self, namespace: &str, id: &str) {
        self.resources.release_flow(&format!("{namespace}/{id}"));
    }

    /// The clients and pools shared by this node's executions.
    pub fn resources(&self) -> &Arc<SharedResources> {
        &self.resources
    }

    /// Internal storage.
    pub fn storage(&self) -> &Arc<dyn InternalStorage> {
        &self.storage
    }

    async fn store_flow(&self, flow: Flow) -> EngineResult<Arc<Flow>> {
        let record = self
            .store
            .put_flow(&flow.namespace, &flow.id, &flow.source)
            .await?;
        let mut flow = flow;
        flow.revision = record.revision;
        let unchanged = self
            .flow(&flow.namespace, &flow.id)
            .is_some_and(|f| f.revision == flow.revision);
        let flow = Arc::new(flow);
        if !unchanged {
            tracing::info!(namespace = %flow.namespace, flow = %flow.id, revision = flow.revision, "flow stored");
            self.install_flow(flow.clone());
            self.announce_flow(&flow.namespace, &flow.id).await;
        }
        Ok(self.flow(&flow.namespace, &flow.id).unwrap_or(flow))
    }

    /// Creates a new flow; fails if one with the same namespace and id exists.
    pub async fn create_flow(&self, source: &str) -> EngineResult<Arc<Flow>> {
        let flow = self.parse_source(source)?;
        if self.flow(&flow.namespace, &flow.id).is_some() {
            return Err(EngineError::Conflict(format!(
                "flow `{}.{}` exists already: update it with PUT /api/v1/flows/{}/{}",
                flow.namespace, flow.id, flow.namespace, flow.id
            )));
        }
        self.store_flow(flow).await
    }

    /// Replaces an existing flow (a new revision when the source changed).
    pub async fn update_flow(
        &self,
        namespace: &str,
        id: &str,
        source: &str,
    ) -> EngineResult<Arc<Flow>> {
        let flow = self.parse_source(source)?;
        if flow.namespace != namespace || flow.id != id {
            return Err(EngineError::invalid(format!(
                "the source describes flow `{}.{}` but the request is for `{namespace}.{id}`: namespace and id cannot change",
                flow.namespace, flow.id
            )));
        }
        if self.flow(namespace, id).is_none() {
            return Err(not_found_flow(namespace, id));
        }
        self.store_flow(flow).await
    }

    /// Creates or updates a flow (used when loading flow files).
    pub async fn put_flow(&self, source: &str) -> EngineResult<Arc<Flow>> {
        let flow = self.parse_source(source)?;
        self.store_flow(flow).await
    }

    pub async fn delete_flow(&self, namespace: &str, id: &str) -> EngineResult<()> {
        if !self.store.delete_flow(namespace, id).await? {
            return Err(not_found_flow(namespace, id));
        }
        self.uninstall_flow(namespace, id);
        tracing::info!(namespace, flow = id, "flow deleted");
        self.announce_flow(namespace, id).await;
        Ok(())
    }

    /// The newest revision of a flow.
    pub fn flow(&self, namespace: &str, id: &str) -> Option<Arc<Flow>> {
        self.flows
            .read()
            .get(&(namespace.to_string(), id.to_string()))
            .cloned()
    }

    /// Every flow, by namespace then id.
    pub fn flows(&self) -> Vec<Arc<Flow>> {
        let mut flows: Vec<_> = self.flows.read().values().cloned().collect();
        flows.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        flows
    }

    /// Every stored revision of a flow, oldest first (a deleted flow's too).
    pub async fn flow_revisions(&self, namespace: &str, id: &str) -> EngineResult<Vec<FlowRecord>> {
        let newest = match self.flow(namespace, id) {
            Some(flow) => flow.revision,
            None => return Err(not_found_flow(namespace, id)),
        };
        let mut revisions = Vec::with_capacity(newest as usize);
        for revision in 1..=newest {
            if let Some(record) = self
                .store
                .get_flow_revision(namespace, id, revision)
                .await?
            {
                revisions.push(record);
            }
        }
        Ok(revisions)
    }

    /// A given revision of a flow (an execution keeps running the revision it started on).
    pub async fn flow_revision(
        &self,
        namespace: &str,
        id: &str,
        revision: u32,
    ) -> EngineResult<Arc<Flow>> {
        let key = ((namespace.to_string(), id.to_string()), revision);
        if let Some(f) = self.revisions.lock().get(&key) {
            return Ok(f.clone());
        }
        let record = self
            .store
            .get_flow_revision(namespace, id, revision)
            .await?
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "flow `{namespace}.{id}` has no revision {revision}"
                ))
            })?;
        let flow =
            Arc::new(
                self.parse_record(&record)
                    .map_err(|details| EngineError::Invalid {
                        message: format!(
                            "revision {revision} of flow `{namespace}.{id}` no longer validates"
                        ),
                        details,
                    })?,
            );
        self.revisions.lock().insert(key, flow.clone());
        Ok(flow)
    }
}
