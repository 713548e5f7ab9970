//! `io.kestra.plugin.mongodb.Find`: `filter`, `projection`, `sort`, `limit`, `skip`; the
//! documents as `rows`, or with `store: true` as an ION file (`uri`) streamed from the cursor;
//! `size` either way.

use async_trait::async_trait;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use swoop_core::ion::IonWriter;
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, RunnableTask, TaskError, render_as};

use super::MongoTask;
use super::connection::Common;
use super::convert::{self, check_literal, to_json};
use super::write::outputs;

#[derive(Deserialize)]
pub struct Find {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    projection: Option<Value>,
    #[serde(default)]
    sort: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    skip: Option<Value>,
    #[serde(default)]
    store: Option<Value>,
}

impl MongoTask for Find {
    fn check(&self) -> Result<(), String> {
        check_literal("filter", self.filter.as_ref(), false)?;
        check_literal("projection", self.projection.as_ref(), false)?;
        check_literal("sort", self.sort.as_ref(), false)
    }
}

/// An optional non-negative integer property.
fn count(
    ctx: &dyn RunContext,
    prop: &str,
    value: Option<&Value>,
) -> Result<Option<u64>, TaskError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = render_as::<i64>(ctx, prop, v)?;
            u64::try_from(n).map(Some).map_err(|_| {
                TaskError::permanent(format!("property `{prop}` must be 0 or more, got {n}"))
            })
        }
    }
}

#[async_trait]
impl RunnableTask for Find {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let filter = convert::document(ctx, "filter", self.filter.as_ref())?;
        let limit = count(ctx, "limit", self.limit.as_ref())?;
        let skip = count(ctx, "skip", self.skip.as_ref())?;
        let store = match &self.store {
            None | Some(Value::Null) => false,
            Some(v) => render_as::<bool>(ctx, "store", v)?,
        };
        let mut projection = None;
        if self.projection.is_some() {
            projection = Some(convert::document(
                ctx,
                "projection",
                self.projection.as_ref(),
            )?);
        }
        let mut sort = None;
        if self.sort.is_some() {
            sort = Some(convert::document(ctx, "sort", self.sort.as_ref())?);
        }
        let target = self.common.open(ctx).await?;
        let mut find = target.collection.find(filter);
        if let Some(p) = projection {
            find = find.projection(p);
        }
        if let Some(s) = sort {
            find = find.sort(s);
        }
        if let Some(n) = limit {
            // A limit of 0 is MongoDB's "no limit", as in Kestra.
            find = find.limit(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(n) = skip {
            find = find.skip(n);
        }
        let mut cursor = find.await.map_err(|e| target.error("find", &e))?;
        let out = if store {
            let (uri, file) = ctx
                .storage()
                .create("find.ion")
                .await
                .map_err(|e| TaskError::new(format!("cannot create the ION file: {e}")))?;
            let mut writer = IonWriter::new(file);
            let write_error =
                |e: std::io::Error| TaskError::new(format!("cannot write the ION file {uri}: {e}"));
            while let Some(doc) = cursor
                .try_next()
                .await
                .map_err(|e| target.error("read the find cursor", &e))?
            {
                writer
                    .write_row(&to_json(bson::Bson::Document(doc)))
                    .await
                    .map_err(write_error)?;
            }
            let (size, _) = writer.finish().await.map_err(write_error)?;
            json!({"uri": uri, "size": size})
        } else {
            let mut rows = Vec::new();
            while let Some(doc) = cursor
                .try_next()
                .await
                .map_err(|e| target.error("read the find cursor", &e))?
            {
                rows.push(to_json(bson::Bson::Document(doc)));
            }
            json!({"size": rows.len(), "rows": rows})
        };
        let message = format!("found {} documents in {}", out["size"], target.label);
        tracing::debug!(task = %ctx.info().task_id, "{message}");
        ctx.log(LogLevel::Debug, message);
        Ok(outputs(out))
    }
}
