//! The core runnable tasks: Log, Return, Fail, Sleep. (The flowable core tasks — Sequential,
//! Parallel, ForEach, If, Switch, Subflow — are interpreted by the engine; their schemas live in
//! `swoop_core::flow`.)

mod fail;
mod labels;
mod log;
mod r#return;
mod sleep;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use swoop_core::Registry;
use swoop_core::registry::{RunnableTask, TaskKind};

/// Builds a runnable task from its validated properties.
fn runnable<T: RunnableTask + DeserializeOwned + 'static>(
    value: &Value,
) -> Result<TaskKind, String> {
    let task: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    Ok(TaskKind::Runnable(Arc::new(task)))
}

pub fn register(registry: &mut Registry) {
    registry.register_task(log::factory());
    registry.register_task(r#return::factory());
    registry.register_task(fail::factory());
    registry.register_task(sleep::factory());
    registry.register_task(labels::factory());
}
