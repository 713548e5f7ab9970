//! The trigger's properties (Kestra's `io.kestra.plugin.azure.eventhubs.RealtimeTrigger`),
//! checked when the flow is built, and the Kafka trigger they become: the event hub is the
//! topic, the consumer group the Kafka group, the credentials a SASL PLAIN login (see
//! [`super::connection`]). The Kafka configuration is checked whole (by librdkafka, without
//! connecting) when the flow is built too; credentials written as templates
//! (`{{ secret('EVENTHUBS_CONNECTION') }}`) are rendered each time the trigger connects.
//!
//! What Kestra has and the Kafka endpoint cannot do is refused with a reason: Azure AD
//! credentials, `partitionStartingPosition: INSTANT`, the ION body, the AMQP client's retry
//! and endpoint settings. `checkpointStoreProperties` is accepted (Kestra requires it) but
//! not used — over the Kafka endpoint the consumer group's committed offsets, kept by Event
//! Hubs itself, are the checkpoints — and the trigger logs so each time it connects.
//!
//! swoop extension: `kafkaProperties`, librdkafka client properties merged over the derived
//! ones (to reach the endpoint through another address, tune the client, or test against a
//! plain Kafka broker).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::connection::{ConnectionString, check_namespace, namespace_host};
use crate::kafka::KafkaTriggerConfig;
use crate::props::{DynamicText, optional_dynamic, optional_text, present, scalar};

/// How errors name this source.
const SOURCE: &str = "Event Hubs";

/// Kestra's default consumer group.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";

/// Client settings Microsoft recommends for Kafka clients of Event Hubs, used when the
/// trigger connects to Azure (not when `kafkaProperties.bootstrap.servers` points elsewhere).
/// Azure drops connections idle for 240 s; consumers need a session of 30 s or more there.
pub const AZURE_CLIENT_DEFAULTS: &[(&str, &str)] = &[
    ("metadata.max.age.ms", "180000"),
    ("connections.max.idle.ms", "180000"),
    ("socket.keepalive.enable", "true"),
    ("session.timeout.ms", "30000"),
    ("heartbeat.interval.ms", "3000"),
    // OpenSSL's default CA paths, then the usual places of other distributions.
    ("ssl.ca.location", "probe"),
];

/// Where a new consumer group starts (Kestra's `partitionStartingPosition`); a group that has
/// committed offsets goes on from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    Earliest,
    Latest,
}

/// How the body is decoded (Kestra's `bodyDeserializer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDeserializer {
    /// UTF-8 text.
    String,
    /// A JSON document, parsed.
    Json,
    /// Raw bytes, as base64 (as Kestra's JSON mapper writes a `byte[]`).
    Binary,
}

impl BodyDeserializer {
    /// The Kafka trigger's `valueDeserializer` doing the same.
    fn kafka_name(self) -> &'static str {
        match self {
            BodyDeserializer::String => "STRING",
            BodyDeserializer::Json => "JSON",
            BodyDeserializer::Binary => "BYTES",
        }
    }
}

/// The credentials of the SASL login.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `connectionString`: literal (checked) or a template (checked when rendered).
    ConnectionString(DynamicText),
    /// `sharedKeyAccountName` + `sharedKeyAccountAccessKey`.
    SharedKey { name: DynamicText, key: DynamicText },
    /// `sasToken`.
    SasToken(DynamicText),
    /// None: `kafkaProperties` sets `security.protocol` and whatever login goes with it.
    FromKafkaProperties,
}

/// A checked Event Hubs realtime trigger.
#[derive(Debug, Clone)]
pub struct EventHubsTriggerConfig {
    pub event_hub: String,
    /// `namespace` as written (a name or a host); required unless `connectionString` is given.
    pub namespace: Option<String>,
    pub credentials: Credentials,
    pub consumer_group: String,
    pub starting_position: StartingPosition,
    pub body: BodyDeserializer,
    /// `kafkaProperties` (swoop extension), as text.
    pub kafka_properties: BTreeMap<String, String>,
    /// What was accepted and is not used, logged each time the trigger connects.
    pub warnings: Vec<String>,
}

/// Kestra properties of the AMQP client that the Kafka endpoint has no use for.
const AMQP_ONLY: &[(&str, &str)] = &[
    (
        "customEndpointAddress",
        "the trigger connects to the namespace's Kafka endpoint; to go through another address, set `kafkaProperties.bootstrap.servers`",
    ),
    (
        "clientMaxRetries",
        "the trigger reconnects by itself with a capped exponential backoff; remove it",
    ),
    (
        "clientRetryDelay",
        "the trigger reconnects by itself with a capped exponential backoff; remove it",
    ),
];

impl EventHubsTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map), including the Kafka client
    /// configuration they make.
    pub fn from_json(v: &Value) -> Result<EventHubsTriggerConfig, String> {
        let mut warnings = Vec::new();
        let event_hub = optional_text(SOURCE, v, "eventHubName")?
            .ok_or("`eventHubName` is required (the event hub to consume)")?;
        check_event_hub_name(&event_hub)?;
        let namespace = optional_text(SOURCE, v, "namespace")?;
        if let Some(ns) = &namespace {
            check_namespace(ns)?;
        }
        for (name, why) in AMQP_ONLY {
            if present(v, name).is_some() {
                return Err(format!(
                    "`{name}` is not supported: it configures Kestra's AMQP client; {why}"
                ));
            }
        }

        let kafka_properties = kafka_properties(v)?;
        let credentials = credentials(v, &kafka_properties)?;
        if namespace.is_none() && !matches!(credentials, Credentials::ConnectionString(_)) {
            return Err(
                "`namespace` is required (the Event Hubs namespace, such as `my-namespace`), unless `connectionString` is given"
                    .into(),
            );
        }

        let consumer_group = optional_text(SOURCE, v, "consumerGroup")?
            .unwrap_or_else(|| DEFAULT_CONSUMER_GROUP.to_string());
        if consumer_group.trim().is_empty() {
            return Err("`consumerGroup` is empty (leave it out for `$Default`)".into());
        }

        let starting_position = starting_position(v)?;
        let body = body_deserializer(v)?;

        if let Some(checkpoint) = present(v, "checkpointStoreProperties") {
            let Value::Object(entries) = checkpoint else {
                return Err("`checkpointStoreProperties` must be a map".into());
            };
            if !entries.is_empty() {
                let container = entries
                    .get("containerName")
                    .and_then(Value::as_str)
                    .map(|c| format!(" (container `{c}`)"))
                    .unwrap_or_default();
                warnings.push(format!(
                    "`checkpointStoreProperties` is not used: over Event Hubs' Kafka endpoint the checkpoints are consumer group `{consumer_group}`'s committed offsets, kept by Event Hubs itself; the blob store{container} is neither read nor written, so checkpoints Kestra's AMQP trigger left there are not picked up"
                ));
            }
        }

        let config = EventHubsTriggerConfig {
            event_hub,
            namespace,
            credentials,
            consumer_group,
            starting_position,
            body,
            kafka_properties,
            warnings,
        };
        // Everything but a templated secret is known now: check the Kafka side whole.
        config.kafka_trigger_with(config.login_for_validation()?)?;
        Ok(config)
    }

    /// The Kafka trigger to run, credentials rendered (templates are rendered each time the
    /// trigger connects: an unset secret fails it then).
    pub fn kafka_config(&self) -> Result<KafkaTriggerConfig, String> {
        self.kafka_trigger_with(self.login()?)
    }

    /// The Kafka trigger's properties (as a flow would write them), for the given login.
    fn kafka_trigger_with(
        &self,
        login: Option<ConnectionString>,
    ) -> Result<KafkaTriggerConfig, String> {
        let mut properties = Map::new();
        if let Some(login) = &login {
            for (key, value) in login.kafka_properties() {
                properties.insert(key.into(), Value::String(value));
            }
        } else if let Some(ns) = &self.namespace {
            properties.insert(
                "bootstrap.servers".into(),
                Value::String(format!(
                    "{}:{}",
                    namespace_host(ns),
                    super::connection::KAFKA_PORT
                )),
            );
        }
        let to_azure = !self.kafka_properties.contains_key("bootstrap.servers")
            && !login.as_ref().is_some_and(|l| l.emulator);
        if to_azure {
            for (key, value) in AZURE_CLIENT_DEFAULTS {
                properties.insert((*key).into(), Value::String((*value).into()));
            }
        }
        properties.insert(
            "auto.offset.reset".into(),
            Value::String(
                match self.starting_position {
                    StartingPosition::Earliest => "earliest",
                    StartingPosition::Latest => "latest",
                }
                .into(),
            ),
        );
        for (key, value) in &self.kafka_properties {
            properties.insert(key.clone(), Value::String(value.clone()));
        }
        let trigger = json!({
            "topic": self.event_hub,
            "groupId": self.consumer_group,
            "properties": properties,
            "keyDeserializer": "STRING",
            "valueDeserializer": self.body.kafka_name(),
        });
        let mut config = KafkaTriggerConfig::from_json(&trigger)
            // The only client properties a user wrote are `kafkaProperties`.
            .map_err(|e| e.replace("`properties.", "`kafkaProperties."))?;
        config.warnings.extend(self.warnings.iter().cloned());
        // Event Hubs' Kafka endpoint does not document static membership: dynamic members.
        config.static_membership = false;
        Ok(config)
    }

    /// The login, rendered; `None` when `kafkaProperties` carries it.
    fn login(&self) -> Result<Option<ConnectionString>, String> {
        let host = || {
            self.namespace
                .as_deref()
                .map(namespace_host)
                .unwrap_or_default()
        };
        let login = match &self.credentials {
            Credentials::FromKafkaProperties => return Ok(None),
            Credentials::ConnectionString(text) => {
                let c =
                    ConnectionString::parse(&text.resolve("connectionString")?).map_err(|e| {
                        format!("`connectionString` is not an Event Hubs connection string: {e}")
                    })?;
                c.check_scope(&self.event_hub, self.namespace.as_deref())?;
                c
            }
            Credentials::SharedKey { name, key } => ConnectionString::from_shared_key(
                &host(),
                &self.event_hub,
                &name.resolve("sharedKeyAccountName")?,
                &key.resolve("sharedKeyAccountAccessKey")?,
            )?,
            Credentials::SasToken(token) => ConnectionString::from_sas_token(
                &host(),
                &self.event_hub,
                &token.resolve("sasToken")?,
            )?,
        };
        Ok(Some(login))
    }

    /// The login when no credential is a template; else a stand-in of the same shape (the
    /// secret is only known when the trigger connects).
    fn login_for_validation(&self) -> Result<Option<ConnectionString>, String> {
        let templated = match &self.credentials {
            Credentials::FromKafkaProperties => false,
            Credentials::ConnectionString(t) | Credentials::SasToken(t) => is_template(t),
            Credentials::SharedKey { name, key } => is_template(name) || is_template(key),
        };
        if !templated {
            return self.login();
        }
        let host = self.namespace.as_deref().map_or_else(
            || "namespace-from-the-secret.servicebus.windows.net".to_string(),
            namespace_host,
        );
        ConnectionString::from_shared_key(&host, &self.event_hub, "stand-in", "stand-in").map(Some)
    }
}

fn is_template(text: &DynamicText) -> bool {
    let t = text.as_written();
    t.contains("{{") || t.contains("{%")
}

/// Letters, digits, `.`, `_` and `-` (Event Hubs' rule; Kafka allows at most 249 of them).
fn check_event_hub_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`eventHubName` `{name}` is not a valid event hub name (letters, digits, `.`, `_` and `-`, at most 249 through the Kafka endpoint)"
        ))
    }
}

/// `kafkaProperties`: scalars as text. The group and the starting position have their own
/// properties.
fn kafka_properties(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let Some(map) = present(v, "kafkaProperties") else {
        return Ok(out);
    };
    let Value::Object(map) = map else {
        return Err("`kafkaProperties` must be a map of librdkafka client properties".into());
    };
    for (key, value) in map {
        let hint = match key.as_str() {
            "group.id" => Some("set `consumerGroup` instead"),
            "auto.offset.reset" => {
                Some("set `partitionStartingPosition` (EARLIEST or LATEST) instead")
            }
            _ => None,
        };
        if let Some(hint) = hint {
            return Err(format!("`kafkaProperties.{key}` is not allowed: {hint}"));
        }
        if value.is_null() {
            return Err(format!("`kafkaProperties.{key}` has no value"));
        }
        out.insert(
            key.clone(),
            scalar(value, &format!("kafkaProperties.{key}"))?,
        );
    }
    Ok(out)
}

/// Exactly one kind of credentials, or a `kafkaProperties.security.protocol` that takes over.
fn credentials(v: &Value, kafka: &BTreeMap<String, String>) -> Result<Credentials, String> {
    let connection_string = optional_dynamic(v, "connectionString")?;
    let key_name = optional_dynamic(v, "sharedKeyAccountName")?;
    let key = optional_dynamic(v, "sharedKeyAccountAccessKey")?;
    let sas_token = optional_dynamic(v, "sasToken")?;
    let shared_key = match (key_name, key) {
        (Some(name), Some(key)) => Some(Credentials::SharedKey { name, key }),
        (Some(_), None) => {
            return Err("`sharedKeyAccountName` is set without `sharedKeyAccountAccessKey`".into());
        }
        (None, Some(_)) => {
            return Err("`sharedKeyAccountAccessKey` is set without `sharedKeyAccountName`".into());
        }
        (None, None) => None,
    };
    let mut given: Vec<Credentials> = [
        connection_string.map(Credentials::ConnectionString),
        shared_key,
        sas_token.map(Credentials::SasToken),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(
            "set one kind of credentials: `connectionString`, `sharedKeyAccountName` with `sharedKeyAccountAccessKey`, or `sasToken`"
                .into(),
        );
    }
    if let Some(credentials) = given.pop() {
        for key in [
            "sasl.username",
            "sasl.password",
            "sasl.mechanism",
            "sasl.mechanisms",
        ] {
            if kafka.contains_key(key) {
                return Err(format!(
                    "`kafkaProperties.{key}` conflicts with the trigger's credentials: set the login in one place"
                ));
            }
        }
        return Ok(credentials);
    }
    if kafka.contains_key("security.protocol") {
        return Ok(Credentials::FromKafkaProperties);
    }
    Err("give `connectionString` (a namespace's or an event hub's, from its Shared access policies), `sharedKeyAccountName` with `sharedKeyAccountAccessKey`, or `sasToken`: Azure AD credentials (Kestra's default when none is given) are not supported, as Event Hubs' Kafka endpoint would need OAUTHBEARER tokens for them".into())
}

fn starting_position(v: &Value) -> Result<StartingPosition, String> {
    let position = optional_text(SOURCE, v, "partitionStartingPosition")?;
    let position = match position.as_deref().map(str::trim) {
        None => StartingPosition::Earliest,
        Some(p) if p.eq_ignore_ascii_case("EARLIEST") => StartingPosition::Earliest,
        Some(p) if p.eq_ignore_ascii_case("LATEST") => StartingPosition::Latest,
        Some(p) if p.eq_ignore_ascii_case("INSTANT") => {
            return Err("`partitionStartingPosition: INSTANT` is not supported yet (through Event Hubs' Kafka endpoint a new consumer group starts at EARLIEST or LATEST)".into());
        }
        Some(p) => {
            return Err(format!(
                "`partitionStartingPosition` must be EARLIEST or LATEST, got `{p}`"
            ));
        }
    };
    if present(v, "enqueueTime").is_some() {
        return Err(
            "`enqueueTime` is only for `partitionStartingPosition: INSTANT`, which is not supported yet: remove it"
                .into(),
        );
    }
    Ok(position)
}

fn body_deserializer(v: &Value) -> Result<BodyDeserializer, String> {
    let name = optional_text(SOURCE, v, "bodyDeserializer")?;
    let body = match name.as_deref().map(str::trim) {
        None => BodyDeserializer::String,
        Some(n) if n.eq_ignore_ascii_case("STRING") => BodyDeserializer::String,
        Some(n) if n.eq_ignore_ascii_case("JSON") => BodyDeserializer::Json,
        Some(n) if n.eq_ignore_ascii_case("BINARY") => BodyDeserializer::Binary,
        Some(n) if n.eq_ignore_ascii_case("ION") => {
            return Err("`bodyDeserializer: ION` is not supported yet (use BINARY or STRING and decode in a task)".into());
        }
        Some(n) => {
            return Err(format!(
                "`bodyDeserializer` must be STRING, JSON or BINARY, got `{n}`"
            ));
        }
    };
    match present(v, "bodyDeserializerProperties") {
        None => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(Value::Object(_)) => {
            return Err("`bodyDeserializerProperties` is not supported: swoop's STRING, JSON and BINARY deserializers take no settings; remove it".into());
        }
        Some(_) => return Err("`bodyDeserializerProperties` must be a map".into()),
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::Deserializer;

    const CONNECTION: &str = "Endpoint=sb://my-ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0LWtleQ==;EntityPath=orders";

    fn base() -> Value {
        json!({
            "id": "t",
            "type": super::super::REALTIME_TRIGGER,
            "eventHubName": "orders",
            "namespace": "my-ns",
            "connectionString": CONNECTION,
        })
    }

    fn ok(patch: Value) -> EventHubsTriggerConfig {
        EventHubsTriggerConfig::from_json(&crate::props::patched(base(), patch))
            .unwrap_or_else(|e| panic!("accepted: {e}"))
    }

    fn err(patch: Value) -> String {
        EventHubsTriggerConfig::from_json(&crate::props::patched(base(), patch)).unwrap_err()
    }

    fn kafka(patch: Value) -> KafkaTriggerConfig {
        ok(patch).kafka_config().expect("the Kafka configuration")
    }

    #[test]
    fn kestras_defaults_become_a_kafka_consumer_of_the_namespace() {
        let c = ok(json!({}));
        assert_eq!(c.consumer_group, "$Default");
        assert_eq!(c.starting_position, StartingPosition::Earliest);
        assert_eq!(c.body, BodyDeserializer::String);
        assert!(c.warnings.is_empty());
        let k = c.kafka_config().expect("kafka");
        assert_eq!(
            k.subscription,
            crate::kafka::Subscription::Topics(vec!["orders".into()])
        );
        assert_eq!(k.group_id, "$Default");
        assert_eq!(k.key_deserializer, Deserializer::String);
        assert_eq!(k.value_deserializer, Deserializer::String);
        let cc = k.consumer_config("dev/flow/t");
        let expected = [
            ("bootstrap.servers", "my-ns.servicebus.windows.net:9093"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "$ConnectionString"),
            ("sasl.password", CONNECTION),
            ("auto.offset.reset", "earliest"),
            ("group.id", "$Default"),
            ("enable.auto.commit", "false"),
            // Microsoft's recommendations for Kafka clients of Event Hubs.
            ("session.timeout.ms", "30000"),
            ("connections.max.idle.ms", "180000"),
        ];
        for (key, value) in expected {
            assert_eq!(cc.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn kestra_properties_map_onto_the_kafka_trigger() {
        let k = kafka(json!({
            "consumerGroup": "swoop",
            "partitionStartingPosition": "LATEST",
            "bodyDeserializer": "JSON",
            "bodyDeserializerProperties": {},
        }));
        assert_eq!(k.group_id, "swoop");
        assert_eq!(k.value_deserializer, Deserializer::Json);
        assert_eq!(
            k.consumer_config("x").get("auto.offset.reset"),
            Some("latest")
        );
        assert_eq!(
            kafka(json!({"bodyDeserializer": "BINARY"})).value_deserializer,
            Deserializer::Bytes
        );
    }

    #[test]
    fn shared_key_and_sas_token_logins() {
        let k = kafka(json!({
            "connectionString": null,
            "sharedKeyAccountName": "listen",
            "sharedKeyAccountAccessKey": "c2VjcmV0",
        }));
        let cc = k.consumer_config("x");
        assert_eq!(
            cc.get("sasl.password"),
            Some(
                "Endpoint=sb://my-ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0;EntityPath=orders"
            )
        );
        let k = kafka(json!({"connectionString": null, "sasToken": "sr=a&sig=b&se=1&skn=listen"}));
        assert!(
            k.consumer_config("x")
                .get("sasl.password")
                .unwrap_or_default()
                .contains("SharedAccessSignature=SharedAccessSignature sr=a")
        );
    }

    #[test]
    fn templated_secrets_are_rendered_when_the_trigger_connects() {
        let c = ok(json!({
            "connectionString": "{{ secret('SWOOP_TEST_EVENTHUBS_UNSET') }}",
        }));
        let e = c.kafka_config().unwrap_err();
        assert!(e.contains("connectionString"), "{e}");
        assert!(e.contains("SWOOP_TEST_EVENTHUBS_UNSET"), "{e}");
        // A templated connection string needs no namespace until it is rendered.
        ok(json!({"namespace": null, "connectionString": "{{ secret('X') }}"}));
        assert!(err(json!({"connectionString": "{{ secret('X') "})).contains("connectionString"));
    }

    #[test]
    fn credentials_are_one_kind_and_required() {
        let e = err(json!({"connectionString": null}));
        assert!(e.starts_with("give `connectionString`"), "{e}");
        assert!(e.contains("Azure AD credentials"), "{e}");
        let e = err(json!({"sasToken": "x"}));
        assert!(e.starts_with("set one kind of credentials"), "{e}");
        let e = err(json!({"connectionString": null, "sharedKeyAccountName": "p"}));
        assert_eq!(
            e,
            "`sharedKeyAccountName` is set without `sharedKeyAccountAccessKey`"
        );
        let e = err(json!({"connectionString": "Endpoint=sb://my-ns.servicebus.windows.net/"}));
        assert!(
            e.starts_with(
                "`connectionString` is not an Event Hubs connection string: it has no credentials"
            ),
            "{e}"
        );
        let e = err(json!({"eventHubName": "refunds"}));
        assert!(e.contains("its `EntityPath`"), "{e}");
        let e = err(json!({"namespace": "other"}));
        assert!(e.contains("not `namespace` `other`"), "{e}");
        let e = err(json!({"connectionString": null, "sasToken": "t", "namespace": null}));
        assert!(e.starts_with("`namespace` is required"), "{e}");
        let e = err(json!({"kafkaProperties": {"sasl.password": "x"}}));
        assert!(e.contains("set the login in one place"), "{e}");
    }

    #[test]
    fn kafka_properties_override_the_derived_connection() {
        let c = ok(json!({
            "connectionString": null,
            "kafkaProperties": {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "plaintext", "fetch.wait.max.ms": 50},
        }));
        assert!(matches!(c.credentials, Credentials::FromKafkaProperties));
        let cc = c.kafka_config().expect("kafka").consumer_config("x");
        assert_eq!(cc.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(cc.get("security.protocol"), Some("plaintext"));
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(cc.get("sasl.username"), None);
        // Not Azure: the Kafka trigger's own defaults, not Microsoft's recommendations.
        assert_eq!(cc.get("session.timeout.ms"), Some("10000"));

        let e = err(json!({"kafkaProperties": {"group.id": "g"}}));
        assert!(e.contains("set `consumerGroup` instead"), "{e}");
        let e = err(json!({"kafkaProperties": {"auto.offset.reset": "latest"}}));
        assert!(e.contains("`partitionStartingPosition`"), "{e}");
        let e = err(json!({"kafkaProperties": {"no.such.thing": "1"}}));
        assert!(
            e.contains("`kafkaProperties.no.such.thing` is rejected by librdkafka"),
            "{e}"
        );
        let e = err(json!({"kafkaProperties": {"enable.auto.commit": "true"}}));
        assert!(
            e.contains("`kafkaProperties.enable.auto.commit: true` is not supported"),
            "{e}"
        );
        let e = err(json!({"kafkaProperties": ["x"]}));
        assert!(e.contains("must be a map"), "{e}");
    }

    #[test]
    fn what_the_kafka_endpoint_cannot_do_is_refused() {
        let e = err(
            json!({"partitionStartingPosition": "INSTANT", "enqueueTime": "2024-01-01T00:00:00.000"}),
        );
        assert!(e.contains("INSTANT` is not supported yet"), "{e}");
        let e = err(json!({"enqueueTime": "2024-01-01T00:00:00.000"}));
        assert!(
            e.contains("only for `partitionStartingPosition: INSTANT`"),
            "{e}"
        );
        let e = err(json!({"partitionStartingPosition": "NEWEST"}));
        assert!(e.contains("must be EARLIEST or LATEST"), "{e}");
        let e = err(json!({"bodyDeserializer": "ION"}));
        assert!(e.contains("ION` is not supported yet"), "{e}");
        let e = err(json!({"bodyDeserializerProperties": {"a": 1}}));
        assert!(e.contains("take no settings"), "{e}");
        for (name, value) in [
            ("clientMaxRetries", json!(5)),
            ("clientRetryDelay", json!(500)),
            ("customEndpointAddress", json!("https://gw:443")),
        ] {
            let e = err(json!({name: value}));
            assert!(e.starts_with(&format!("`{name}` is not supported")), "{e}");
        }
        let e = err(json!({"eventHubName": "bad name"}));
        assert!(e.contains("not a valid event hub name"), "{e}");
        let e = err(json!({"consumerGroup": "{{ flow.id }}"}));
        assert!(e.contains("is a template"), "{e}");
    }

    #[test]
    fn checkpoint_store_properties_are_accepted_and_said_unused() {
        let c = ok(json!({"checkpointStoreProperties": {
            "containerName": "kestra",
            "connectionString": "{{ secret('BLOB_CONNECTION') }}",
        }}));
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("`checkpointStoreProperties` is not used"),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[0].contains("container `kestra`"),
            "{:?}",
            c.warnings
        );
        // The Kafka source logs its warnings each time it connects.
        assert_eq!(c.kafka_config().expect("kafka").warnings, c.warnings);
        assert!(
            ok(json!({"checkpointStoreProperties": {}}))
                .warnings
                .is_empty()
        );
        assert!(err(json!({"checkpointStoreProperties": "x"})).contains("must be a map"));
    }
}
