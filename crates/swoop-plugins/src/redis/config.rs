//! The trigger's properties (Kestra's `url`, `key`, `serdeType`), checked when the flow is
//! built, and how a popped element is decoded.

pub use crate::props::{SERDE_TYPE_NAMES, SerdeType};
use crate::props::{no_template, present, redact_url, scalar};
use serde_json::Value;

/// How errors name this source.
const SOURCE: &str = "Redis";

/// A checked Redis list realtime trigger.
#[derive(Debug, Clone)]
pub struct RedisTriggerConfig {
    /// The connection URL as written (it may hold a password: show [`Self::display_url`]).
    pub url: String,
    /// The list popped from.
    pub key: String,
    pub serde_type: SerdeType,
}

impl RedisTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<RedisTriggerConfig, String> {
        let url = match present(v, "url") {
            Some(u) => scalar(u, "url")?,
            None => return Err("`url` is required (such as `redis://localhost:6379/0`)".into()),
        };
        no_template(SOURCE, "url", &url)?;
        if url.trim().is_empty() {
            return Err("`url` is empty".into());
        }
        ::redis::Client::open(url.as_str()).map_err(|e| {
            format!(
                "`url` `{}` is not a valid Redis URL (such as `redis://localhost:6379/0`): {e}",
                redact_url(&url)
            )
        })?;

        let key = match present(v, "key") {
            Some(k) => scalar(k, "key")?,
            None => return Err("`key` (the list to pop from) is required".into()),
        };
        no_template(SOURCE, "key", &key)?;
        if key.is_empty() {
            return Err("`key` is empty".into());
        }

        let serde_type = match present(v, "serdeType") {
            Some(s) => SerdeType::parse(&scalar(s, "serdeType")?)?,
            None => SerdeType::String,
        };
        Ok(RedisTriggerConfig {
            url,
            key,
            serde_type,
        })
    }

    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The list holding the elements this trigger took and whose executions are not durable
    /// yet.
    pub fn processing_key(&self, consumer_name: &str) -> String {
        format!("{}:swoop:processing:{consumer_name}", self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(patch: Value) -> Value {
        let v = json!({
            "id": "t",
            "type": "io.kestra.plugin.redis.list.RealtimeTrigger",
            "url": "redis://localhost:6379/0",
            "key": "orders",
        });
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        RedisTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> RedisTriggerConfig {
        RedisTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert_eq!(c.url, "redis://localhost:6379/0");
        assert_eq!(c.key, "orders");
        assert_eq!(c.serde_type, SerdeType::String);
        assert_eq!(
            c.processing_key("ns/flow/events"),
            "orders:swoop:processing:ns/flow/events"
        );
    }

    #[test]
    fn url_and_key_are_required() {
        assert!(err(json!({"url": null})).contains("`url` is required"));
        assert!(err(json!({"key": null})).contains("`key` (the list to pop from) is required"));
        assert!(err(json!({"url": ""})).contains("empty"));
        assert!(err(json!({"key": ""})).contains("empty"));
        assert!(err(json!({"key": ["a"]})).contains("must be text"));
    }

    #[test]
    fn invalid_urls_are_refused_without_their_password() {
        let e = err(json!({"url": "http://u:hunter2@localhost:6379"}));
        assert!(e.contains("not a valid Redis URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(err(json!({"url": "localhost:6379"})).contains("not a valid Redis URL"));
        assert!(err(json!({"url": "{{ secret('REDIS') }}"})).contains("`url` is a template"));
    }

    #[test]
    fn serde_types() {
        assert_eq!(ok(json!({"serdeType": "JSON"})).serde_type, SerdeType::Json);
        assert_eq!(
            ok(json!({"serdeType": "string"})).serde_type,
            SerdeType::String
        );
        let e = err(json!({"serdeType": "AVRO"}));
        assert_eq!(e, "`serdeType` must be STRING or JSON, got `AVRO`");
    }

    #[test]
    fn decoding() {
        assert_eq!(
            SerdeType::String.decode(b"hello", "the element"),
            (json!("hello"), None)
        );
        assert_eq!(
            SerdeType::Json.decode(br#"{"n": 1}"#, "the element"),
            (json!({"n": 1}), None)
        );
        let (v, e) = SerdeType::Json.decode(b"this is { not json", "the element");
        assert_eq!(v, json!("this is { not json"));
        assert!(e.unwrap().contains("not valid JSON"));
        let (v, e) = SerdeType::String.decode(&[0xff, b'a'], "the element");
        assert_eq!(v, json!("\u{fffd}a"));
        assert!(e.is_none());
    }
}
