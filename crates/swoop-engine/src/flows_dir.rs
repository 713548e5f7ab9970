//! Loads the flows of a folder (`*.yml`, `*.yaml`, recursively) into the engine at start, and
//! again whenever a file changes: polled every `interval`, compared by content. A file that
//! disappears deletes the flow it held. A file that does not validate is reported with every
//! problem and leaves the flow it held as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, FlowKey};

/// What the folder held at the last look.
#[derive(Default)]
pub struct FlowsDir {
    /// file → (its content, the flow it holds)
    files: HashMap<PathBuf, (String, Option<FlowKey>)>,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            out.push(path);
        }
    }
}

impl FlowsDir {
    /// Applies what changed in `dir` since the last call; returns the number of flows stored.
    pub async fn sync(&mut self, engine: &Engine, dir: &Path) -> usize {
        let mut paths = Vec::new();
        yaml_files(dir, &mut paths);
        paths.sort();
        let mut stored = 0;
        for path in &paths {
            let Ok(source) = std::fs::read_to_string(path) else {
                continue;
            };
            if self.files.get(path).is_some_and(|(old, _)| *old == source) {
                continue;
            }
            match engine.put_flow(&source).await {
                Ok(flow) => {
                    stored += 1;
                    let key = (flow.namespace.clone(), flow.id.clone());
                    self.files.insert(path.clone(), (source, Some(key)));
                }
                Err(crate::EngineError::Invalid { details, message }) => {
                    for d in &details {
                        tracing::error!(file = %path.display(), line = d.line, column = d.column, "{}", d.message);
                    }
                    if details.is_empty() {
                        tracing::error!(file = %path.display(), "{message}");
                    }
                    let key = self.files.get(path).and_then(|(_, k)| k.clone());
                    self.files.insert(path.clone(), (source, key));
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot load flow file")
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !paths.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some((_, Some((ns, id)))) = self.files.remove(&path) {
                let still_held = self
                    .files
                    .values()
                    .any(|(_, k)| k.as_ref() == Some(&(ns.clone(), id.clone())));
                if !still_held {
                    match engine.delete_flow(&ns, &id).await {
                        Ok(()) => {
                            tracing::info!(file = %path.display(), namespace = %ns, flow = %id, "flow file removed: flow deleted")
                        }
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "flow file removed")
                        }
                    }
                }
            }
        }
        stored
    }

    /// Syncs now, then every `interval` until the engine shuts down.
    pub async fn watch(engine: Arc<Engine>, dir: PathBuf, interval: Duration) {
        let mut state = FlowsDir::default();
        loop {
            state.sync(&engine, &dir).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = engine.shutdown.cancelled() => return,
            }
        }
    }
}
