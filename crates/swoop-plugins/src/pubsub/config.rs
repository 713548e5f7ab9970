//! The trigger's properties (Kestra's `projectId`, `topic`, `subscription`,
//! `autoCreateSubscription`, `serdeType`, `serviceAccount`, `impersonatedServiceAccount`,
//! `scopes`, and swoop's `emulatorHost`), checked when the flow is built. The project, names and
//! credentials may be templates (`{{ secret('GCP_SERVICE_ACCOUNT') }}`), rendered each time the
//! trigger connects.

use crate::props::{DynamicText, optional_dynamic, present, scalar};
pub use crate::props::{SERDE_TYPE_NAMES, SerdeType};
use serde_json::Value;

/// The OAuth scope used when `scopes` is not given (Kestra's default).
pub const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The environment variable Google's clients read for the emulator's `host:port`.
pub const EMULATOR_HOST_VARIABLE: &str = "PUBSUB_EMULATOR_HOST";

/// A checked Pub/Sub realtime trigger.
#[derive(Debug, Clone)]
pub struct PubSubTriggerConfig {
    /// The project; when unset, the `project_id` of the service account key, else
    /// `GOOGLE_CLOUD_PROJECT`. Not needed when `topic` and `subscription` are full names.
    pub project_id: Option<DynamicText>,
    /// The topic: a name, or `projects/P/topics/T`.
    pub topic: DynamicText,
    /// The subscription: a name, or `projects/P/subscriptions/S`.
    pub subscription: DynamicText,
    /// Create the subscription (on `topic`) when it does not exist (Kestra's default: true).
    pub auto_create_subscription: bool,
    pub serde_type: SerdeType,
    /// A service account key (its JSON); when unset, Application Default Credentials.
    pub service_account: Option<DynamicText>,
    /// A service account to impersonate with those credentials.
    pub impersonated_service_account: Option<DynamicText>,
    pub scopes: Vec<String>,
    /// The emulator's `host:port` (swoop's addition); when unset, `PUBSUB_EMULATOR_HOST`.
    /// With the emulator no credentials are sent.
    pub emulator_host: Option<DynamicText>,
}

impl PubSubTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<PubSubTriggerConfig, String> {
        let required = |name: &str, example: &str| -> Result<DynamicText, String> {
            let text = optional_dynamic(v, name)?
                .ok_or_else(|| format!("`{name}` (such as `{example}`) is required"))?;
            if text.as_written().trim().is_empty() {
                return Err(format!("`{name}` is empty"));
            }
            Ok(text)
        };
        let topic = required("topic", "orders")?;
        let subscription = required("subscription", "swoop-orders")?;
        for (name, kind, text) in [
            ("topic", "topics", &topic),
            ("subscription", "subscriptions", &subscription),
        ] {
            let written = text.as_written();
            if !written.contains("{{") && !written.contains("{%") {
                check_name(kind, written.trim()).map_err(|e| format!("`{name}`: {e}"))?;
            }
        }
        let auto_create_subscription = match present(v, "autoCreateSubscription") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => match scalar(other, "autoCreateSubscription")?
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "true" => true,
                "false" => false,
                text => {
                    return Err(format!(
                        "`autoCreateSubscription` must be true or false, got `{text}`"
                    ));
                }
            },
        };
        let serde_type = match present(v, "serdeType") {
            Some(s) => SerdeType::parse(&scalar(s, "serdeType")?)?,
            None => SerdeType::String,
        };
        let scopes = match present(v, "scopes") {
            None => vec![DEFAULT_SCOPE.to_string()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| scalar(s, "scopes"))
                .collect::<Result<Vec<_>, _>>()?,
            Some(one) => vec![scalar(one, "scopes")?],
        };
        if scopes.is_empty() {
            return Err(format!(
                "`scopes` is empty; leave it out for `{DEFAULT_SCOPE}`"
            ));
        }
        Ok(PubSubTriggerConfig {
            project_id: optional_dynamic(v, "projectId")?,
            topic,
            subscription,
            auto_create_subscription,
            serde_type,
            service_account: optional_dynamic(v, "serviceAccount")?,
            impersonated_service_account: optional_dynamic(v, "impersonatedServiceAccount")?,
            scopes,
            emulator_host: optional_dynamic(v, "emulatorHost")?,
        })
    }
}

/// `name` as a full resource name of `kind` (`topics`, `subscriptions`) in `project`, unless it
/// is one already (`projects/P/topics/T`).
pub fn full_name(project: Option<&str>, kind: &str, name: &str) -> Result<String, String> {
    let name = name.trim();
    check_name(kind, name)?;
    if name.starts_with("projects/") {
        return Ok(name.to_string());
    }
    let project = project.ok_or_else(|| {
        format!("no project for `{name}`: set `projectId` (or GOOGLE_CLOUD_PROJECT), or give `projects/my-project/{kind}/{name}`")
    })?;
    Ok(format!("projects/{project}/{kind}/{name}"))
}

/// Checks a topic or subscription name, short (`orders`) or full (`projects/P/topics/orders`),
/// against Pub/Sub's rules: 3 to 255 characters, starting with a letter, letters, digits and
/// `-_.~+%` only, not starting with `goog`.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let id = match name.strip_prefix("projects/") {
        Some(rest) => match rest.split('/').collect::<Vec<_>>().as_slice() {
            [p, k, id] if !p.is_empty() && *k == kind => *id,
            _ => {
                return Err(format!(
                    "`{name}` is not a name such as `projects/my-project/{kind}/name`"
                ));
            }
        },
        None => name,
    };
    let valid = (3..=255).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
        && !id.starts_with("goog");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid Pub/Sub name: 3 to 255 characters, starting with a letter, made of letters, digits and `-_.~+%`, not starting with `goog`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(patch: Value) -> Value {
        let v = json!({
            "id": "t",
            "type": "io.kestra.plugin.gcp.pubsub.RealtimeTrigger",
            "projectId": "my-project",
            "topic": "orders",
            "subscription": "swoop-orders",
        });
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        PubSubTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> PubSubTriggerConfig {
        PubSubTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert!(c.auto_create_subscription);
        assert_eq!(c.serde_type, SerdeType::String);
        assert_eq!(c.scopes, vec![DEFAULT_SCOPE.to_string()]);
        assert!(c.service_account.is_none());
        assert!(c.emulator_host.is_none());
    }

    #[test]
    fn every_property() {
        let c = ok(json!({
            "autoCreateSubscription": false,
            "serdeType": "JSON",
            "serviceAccount": "{{ secret('GCP_SERVICE_ACCOUNT') }}",
            "impersonatedServiceAccount": "robot@my-project.iam.gserviceaccount.com",
            "scopes": ["https://www.googleapis.com/auth/pubsub"],
            "emulatorHost": "127.0.0.1:8085",
        }));
        assert!(!c.auto_create_subscription);
        assert_eq!(c.serde_type, SerdeType::Json);
        assert_eq!(
            c.scopes,
            vec!["https://www.googleapis.com/auth/pubsub".to_string()]
        );
        assert_eq!(
            c.emulator_host.unwrap().resolve("emulatorHost").unwrap(),
            "127.0.0.1:8085"
        );
        assert!(!ok(json!({"autoCreateSubscription": "false"})).auto_create_subscription);
    }

    #[test]
    fn problems() {
        assert!(err(json!({"topic": null})).contains("`topic`"));
        assert!(err(json!({"subscription": null})).contains("`subscription`"));
        assert!(err(json!({"subscription": ""})).contains("empty"));
        assert!(err(json!({"topic": "t"})).starts_with("`topic`: `t` is not a valid Pub/Sub name"));
        assert!(
            ok(json!({"topic": "{{ secret('TOPIC') }}"}))
                .topic
                .as_written()
                .contains("secret")
        );
        assert!(err(json!({"autoCreateSubscription": "maybe"})).contains("true or false"));
        assert!(err(json!({"serdeType": "AVRO"})).contains("STRING or JSON"));
        assert!(err(json!({"scopes": []})).contains("`scopes` is empty"));
        assert!(err(json!({"serviceAccount": "{{ oops"})).starts_with("`serviceAccount`: "));
    }

    #[test]
    fn names() {
        assert_eq!(
            full_name(Some("p"), "topics", "orders").unwrap(),
            "projects/p/topics/orders"
        );
        assert_eq!(
            full_name(None, "subscriptions", "projects/q/subscriptions/sub").unwrap(),
            "projects/q/subscriptions/sub"
        );
        assert!(
            full_name(None, "topics", "orders")
                .unwrap_err()
                .contains("`projectId`")
        );
        assert!(full_name(Some("p"), "topics", "projects/q/subscriptions/sub").is_err());
        assert!(full_name(Some("p"), "topics", "a/b").is_err());
        assert!(check_name("topics", "t").unwrap_err().contains("3 to 255"));
        assert!(check_name("topics", "1abc").is_err());
        assert!(check_name("topics", "google-x").is_err());
        assert!(check_name("topics", "orders.v1~eu+x%2").is_ok());
    }
}
