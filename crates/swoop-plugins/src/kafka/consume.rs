//! `io.kestra.plugin.kafka.Consume`: reads one batch of records (see [`super::batch`] for the
//! end rules) into an ION file of the task run; outputs `uri` and `messagesCount`. With a group,
//! the offsets are committed once the file is stored: a run that fails or is killed before
//! commits nothing, and its records are read again by the next run (at least once).
//!
//! Every property may be a template; they are rendered when the task runs, then checked as the
//! flow validator checks literal ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use swoop_core::ion::IonWriter;
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, RunnableTask, TaskError, TaskFactory, TaskKind};

use super::batch::{BATCH_PROPERTIES, BatchConfig, BatchConsumer, BatchError, Reader};
use crate::props::has_template;

pub const CONSUME_TASK: &str = "io.kestra.plugin.kafka.Consume";

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[CONSUME_TASK],
        properties: BATCH_PROPERTIES,
        build: |_, v| {
            if !has_template(v) {
                BatchConfig::from_json(v, Reader::ConsumeTask)?;
            }
            Ok(TaskKind::Runnable(Arc::new(Consume { raw: v.clone() })))
        },
    }
}

pub struct Consume {
    raw: Value,
}

pub(crate) fn batch_error(e: BatchError) -> TaskError {
    match e {
        BatchError::Cancelled => {
            TaskError::new("the Kafka consumer was stopped (killed or timed out)")
        }
        BatchError::Transient(m) => TaskError::new(m),
        BatchError::Fatal(m) => TaskError::permanent(m),
    }
}

#[async_trait]
impl RunnableTask for Consume {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let rendered = ctx.render_value("properties", &self.raw)?;
        let config =
            BatchConfig::from_json(&rendered, Reader::ConsumeTask).map_err(TaskError::permanent)?;
        for w in &config.warnings {
            ctx.log(LogLevel::Warn, w.clone());
        }
        let info = ctx.info();
        let client_id = format!("swoop-{}-{}", info.flow_ref(), info.task_id);
        let consumer = BatchConsumer::open(&config, &client_id)
            .await
            .map_err(batch_error)?;
        let (uri, file) = ctx
            .storage()
            .create("consume.ion")
            .await
            .map_err(|e| TaskError::new(format!("cannot create the ION file: {e}")))?;
        let mut rows = IonWriter::new(file);
        let batch = consumer
            .read(&config, &mut rows, &BTreeMap::new(), ctx.cancellation())
            .await
            .map_err(batch_error)?;
        rows.finish()
            .await
            .map_err(|e| TaskError::new(format!("cannot store the ION file {uri}: {e}")))?;
        if config.group_id.is_some() {
            consumer
                .commit(&batch.next_offsets(&BTreeMap::new()))
                .await
                .map_err(batch_error)?;
        }
        let message = format!(
            "consumed {} records from {} ({} skipped)",
            batch.rows,
            config.describe(),
            batch.skipped
        );
        ctx.log(LogLevel::Info, message);
        let mut out = Map::new();
        out.insert("uri".into(), Value::String(uri));
        out.insert("messagesCount".into(), Value::from(batch.rows));
        Ok(out)
    }
}
