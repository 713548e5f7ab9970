//! [`StoreState`]: a realtime trigger's durable key-value space ([`SourceState`]), kept in the
//! store's trigger state under `realtime/<namespace>/<flowId>/<triggerId>#<key>`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use swoop_core::realtime::SourceState;
use swoop_store::Store;

pub(crate) struct StoreState {
    store: Arc<dyn Store>,
    /// `namespace/flowId/triggerId`.
    trigger: String,
}

impl StoreState {
    pub(crate) fn new(store: Arc<dyn Store>, trigger: &str) -> StoreState {
        StoreState {
            store,
            trigger: trigger.to_string(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("realtime/{}#{key}", self.trigger)
    }
}

#[async_trait]
impl SourceState for StoreState {
    async fn load(&self, key: &str) -> Result<Option<String>, String> {
        let key = self.key(key);
        match self.store.get_trigger_state(&key).await {
            Ok(None) => Ok(None),
            Ok(Some(Value::String(text))) => Ok(Some(text)),
            Ok(Some(other)) => Err(format!("the trigger state `{key}` is not a text: {other}")),
            Err(e) => Err(format!("cannot read the trigger state `{key}`: {e}")),
        }
    }

    async fn save(&self, key: &str, value: &str) -> Result<(), String> {
        let key = self.key(key);
        self.store
            .put_trigger_state(&key, &Value::String(value.to_string()))
            .await
            .map_err(|e| format!("cannot save the trigger state `{key}`: {e}"))
    }
}
