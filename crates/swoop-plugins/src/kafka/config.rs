//! The trigger's properties, checked and turned into librdkafka client configurations.
//!
//! Everything is checked when the flow is built (so the flow editor reports it): the topic
//! selection, the deserializers, the error handling, and the client configuration itself —
//! librdkafka is asked to accept every property without connecting.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use serde_json::Value;

use super::serde::Deserializer;
use crate::props::{no_template, present, scalar};

/// How errors name this source.
pub(crate) const SOURCE: &str = "Kafka";

/// What the consumer subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Every topic whose whole name matches this regular expression (as Kafka's Java client
    /// does), now and later.
    Pattern(String),
}

impl Subscription {
    /// The names given to librdkafka's subscribe: topics as they are, a pattern anchored at
    /// both ends (`^(…)$`; librdkafka treats a name starting with `^` as a regex, and its
    /// regex engine has no non-capturing groups).
    pub fn librdkafka_names(&self) -> Vec<String> {
        match self {
            Subscription::Topics(topics) => topics.clone(),
            Subscription::Pattern(pattern) => {
                let p = pattern.strip_prefix('^').unwrap_or(pattern);
                let p = match p.strip_suffix('$') {
                    Some(rest) if !rest.ends_with('\\') => rest,
                    _ => p,
                };
                vec![format!("^({p})$")]
            }
        }
    }

    /// For messages: `topic orders` / `topics a, b` / `topicPattern x`.
    pub fn describe(&self) -> String {
        match self {
            Subscription::Topics(t) if t.len() == 1 => format!("topic `{}`", t[0]),
            Subscription::Topics(t) => format!("topics `{}`", t.join("`, `")),
            Subscription::Pattern(p) => format!("topicPattern `{p}`"),
        }
    }
}

/// What happens to a record whose key or value cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnSerdeError {
    /// An execution is created FAILED with the error, holding the raw record (the default).
    #[default]
    Fail,
    /// The record is skipped (and its offset committed), with a warning.
    Skip,
    /// The raw record is produced to this topic, then skipped.
    Dlq { topic: String },
}

/// A checked Kafka realtime trigger.
#[derive(Debug, Clone)]
pub struct KafkaTriggerConfig {
    pub subscription: Subscription,
    pub group_id: String,
    /// The user's client properties, as text, less the Java-only ones.
    pub properties: BTreeMap<String, String>,
    pub key_deserializer: Deserializer,
    pub value_deserializer: Deserializer,
    /// Header name → exact value every record must carry to make an execution.
    pub header_filters: Vec<(String, String)>,
    pub on_serde_error: OnSerdeError,
    /// What was ignored, logged when the trigger connects.
    pub warnings: Vec<String>,
    /// May join the group as a static member when the trigger runs exclusively (see
    /// [`KafkaTriggerConfig::static_consumer_config`]); Event Hubs does not.
    pub static_membership: bool,
}

/// Java client properties that only configure Java classes; librdkafka would reject them.
const JAVA_ONLY_PROPERTIES: &[&str] = &[
    "key.deserializer",
    "value.deserializer",
    "key.serializer",
    "value.serializer",
];

/// Hints for Java client properties librdkafka names differently.
const JAVA_PROPERTY_HINTS: &[(&str, &str)] = &[
    (
        "sasl.jaas.config",
        "librdkafka takes `sasl.username` and `sasl.password` instead",
    ),
    (
        "ssl.truststore.location",
        "librdkafka takes a PEM file in `ssl.ca.location` instead",
    ),
    (
        "ssl.truststore.password",
        "librdkafka takes a PEM file in `ssl.ca.location` instead",
    ),
    (
        "max.poll.records",
        "`maxInFlight` bounds the records in flight instead",
    ),
    (
        "schema.registry.url",
        "it belongs in `serdeProperties`, and AVRO is not supported yet",
    ),
];

/// `serdeProperties` entries that configure a schema registry (for AVRO/PROTOBUF only).
pub(crate) fn is_schema_registry_key(key: &str) -> bool {
    key.starts_with("schema.registry.")
        || key.starts_with("basic.auth.")
        || matches!(
            key,
            "auto.register.schemas" | "use.latest.version" | "specific.avro.reader"
        )
}

/// The default `fetch.wait.max.ms`: how long a broker may hold a fetch waiting for data.
/// Lower means lower latency when records arrive one by one (and some brokers — tansu, the
/// test broker — hold a fetch for the whole wait even when records are ready); the cost is
/// more idle fetch requests on a real cluster (at most one per partition leader every 10 ms
/// while a topic is idle). Set `fetch.wait.max.ms` in `properties` to trade the other way.
pub const DEFAULT_FETCH_WAIT_MAX_MS: &str = "10";

/// librdkafka's prefetch queue, per consumer (its default is 64 MiB): records read ahead
/// while the runtime is busy wait there; 16 MiB keeps many triggers' memory modest and is
/// still far ahead of what executions consume.
pub const DEFAULT_QUEUED_MAX_MESSAGES_KBYTES: &str = "16384";

/// How often librdkafka reports statistics, from which the backlog is read.
pub const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";

impl KafkaTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<KafkaTriggerConfig, String> {
        let mut warnings = Vec::new();

        let subscription = subscription(v)?;

        let group_id = match present(v, "groupId") {
            Some(g) => scalar(g, "groupId")?,
            None => return Err("`groupId` is required".into()),
        };
        no_template(SOURCE, "groupId", &group_id)?;
        if group_id.trim().is_empty() {
            return Err("`groupId` is empty".into());
        }

        for unsupported in ["partitions", "since"] {
            if present(v, unsupported).is_some() {
                return Err(format!(
                    "`{unsupported}` is not supported yet (the trigger consumes every partition of its topics as a consumer group; set `auto.offset.reset` in `properties` to choose where a new group starts)"
                ));
            }
        }
        if let Some(group_type) = present(v, "groupType") {
            let group_type = scalar(group_type, "groupType")?;
            if group_type.trim().eq_ignore_ascii_case("SHARE") {
                return Err(super::batch::SHARE_GROUPS_REFUSED.into());
            }
            if !group_type.trim().eq_ignore_ascii_case("CONSUMER") {
                return Err(format!(
                    "`groupType` must be CONSUMER or SHARE, got `{group_type}`"
                ));
            }
        }

        let properties = client_properties(v, &group_id, &mut warnings)?;

        let (key_deserializer, value_deserializer) = deserializers(v, &mut warnings)?;

        let header_filters: Vec<(String, String)> =
            string_map(v, "headerFilters")?.into_iter().collect();
        for (name, value) in &header_filters {
            no_template(SOURCE, &format!("headerFilters.{name}"), value)?;
        }

        let on_serde_error = on_serde_error(present(v, "onSerdeError"))?;
        if let OnSerdeError::Dlq { topic } = &on_serde_error
            && let Subscription::Topics(topics) = &subscription
            && topics.contains(topic)
        {
            return Err(format!(
                "`onSerdeError.topic` `{topic}` is a topic the trigger consumes: records that fail would come back forever"
            ));
        }

        let config = KafkaTriggerConfig {
            subscription,
            group_id,
            properties,
            key_deserializer,
            value_deserializer,
            header_filters,
            on_serde_error,
            warnings,
            static_membership: true,
        };
        // librdkafka checks every property now, without connecting.
        check_client_config(&config.consumer_config("swoop"))?;
        if matches!(config.on_serde_error, OnSerdeError::Dlq { .. }) {
            check_client_config(&config.producer_config("swoop"))?;
        }
        Ok(config)
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.properties
            .get("bootstrap.servers")
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The consumer's configuration: the user's properties, swoop's defaults where the user
    /// set nothing, and what swoop needs whatever the user says (no automatic commit).
    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = base_config(&self.properties, client_id);
        c.set("group.id", &self.group_id);
        // Offsets are committed by swoop, once each event's execution is durable.
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        let defaults = [
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", DEFAULT_FETCH_WAIT_MAX_MS),
            ("fetch.min.bytes", "1"),
            ("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS),
            (
                "queued.max.messages.kbytes",
                DEFAULT_QUEUED_MAX_MESSAGES_KBYTES,
            ),
            // After a broker outage the trigger reconnects with a new consumer, which joins the
            // group once the old member's session has expired: 10 s instead of librdkafka's
            // 45 s bounds that wait (brokers accept 6 s and up by default).
            ("session.timeout.ms", "10000"),
            // Frequent heartbeats are how members learn of a rebalance: after a `kill -9`, the
            // test broker (tansu) only hands the dead member's partitions to the restarted one
            // when heartbeats come this often (at 2 s the new member was assigned nothing).
            ("heartbeat.interval.ms", "500"),
        ];
        for (key, value) in defaults {
            if !self.properties.contains_key(key) {
                c.set(key, value);
            }
        }
        c
    }

    /// [`KafkaTriggerConfig::consumer_config`] for a trigger that runs `exclusive`ly (under
    /// its lease, on several nodes): a static member named after the trigger, unless the user
    /// set `group.instance.id`. The node that takes the trigger over (after a failover or a
    /// hand-over) joins under the same name and gets the partitions at once instead of waiting
    /// for the old member's session to expire (BENCHMARKS.md: a failover took 62 s without, 8 s
    /// with), and an old member that comes back is fenced by the broker. Not on one node, where
    /// two processes may share a group on purpose: they would fence each other.
    pub fn static_consumer_config(&self, client_id: &str, exclusive: bool) -> ClientConfig {
        let mut c = self.consumer_config(client_id);
        if exclusive && self.static_membership && !self.properties.contains_key("group.instance.id")
        {
            c.set("group.instance.id", static_instance_id(client_id));
        }
        c
    }

    /// The dead-letter producer's configuration: the same connection properties (librdkafka
    /// ignores consumer-only ones, with a log line).
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = base_config(&self.properties, client_id);
        if !self.properties.contains_key("linger.ms") {
            c.set("linger.ms", "0");
        }
        c
    }
}

/// A valid `group.instance.id` (letters, digits, `.`, `_`, `-`) from a trigger's key.
fn static_instance_id(client_id: &str) -> String {
    let name: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("swoop.{name}")
}

/// `topic` (one or a list) or `topicPattern`, exactly one of them.
pub(crate) fn subscription(v: &Value) -> Result<Subscription, String> {
    Ok(match (present(v, "topic"), present(v, "topicPattern")) {
        (None, None) => {
            return Err("set one of `topic` (a topic or a list of topics) or `topicPattern` (a regular expression)".into());
        }
        (Some(_), Some(_)) => {
            return Err("set only one of `topic` and `topicPattern`, not both".into());
        }
        (Some(topic), None) => {
            let topics: Vec<String> = match topic {
                Value::Array(items) => items
                    .iter()
                    .map(|i| scalar(i, "topic"))
                    .collect::<Result<_, _>>()?,
                other => vec![scalar(other, "topic")?],
            };
            if topics.is_empty() {
                return Err("`topic` is an empty list".into());
            }
            for t in &topics {
                no_template(SOURCE, "topic", t)?;
                check_topic_name(t, "topic")?;
            }
            let mut unique = topics.clone();
            unique.sort();
            unique.dedup();
            if unique.len() != topics.len() {
                return Err("`topic` lists a topic twice".into());
            }
            Subscription::Topics(topics)
        }
        (None, Some(pattern)) => {
            let pattern = scalar(pattern, "topicPattern")?;
            no_template(SOURCE, "topicPattern", &pattern)?;
            if pattern.trim().is_empty() {
                return Err("`topicPattern` is empty".into());
            }
            Subscription::Pattern(pattern)
        }
    })
}

/// `keyDeserializer` and `valueDeserializer`, also where Kestra's own examples put them (in
/// `serdeProperties`); the other `serdeProperties` are reported as ignored.
pub(crate) fn deserializers(
    v: &Value,
    warnings: &mut Vec<String>,
) -> Result<(Deserializer, Deserializer), String> {
    let serde_properties = string_map(v, "serdeProperties")?;
    let mut from_serde = BTreeMap::new();
    for (key, value) in &serde_properties {
        match key.as_str() {
            "keyDeserializer" | "valueDeserializer" => {
                from_serde.insert(key.as_str(), value.clone());
            }
            k if is_schema_registry_key(k) => warnings.push(format!(
                "`serdeProperties.{k}` is ignored: no AVRO or PROTOBUF deserializer is used"
            )),
            k => warnings.push(format!(
                "`serdeProperties.{k}` is ignored (it configures Kafka's Java deserializers)"
            )),
        }
    }
    let key_deserializer = deserializer(v, "keyDeserializer", from_serde.get("keyDeserializer"))?;
    let value_deserializer =
        deserializer(v, "valueDeserializer", from_serde.get("valueDeserializer"))?;
    Ok((key_deserializer, value_deserializer))
}

pub(crate) fn base_config(properties: &BTreeMap<String, String>, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (key, value) in properties {
        c.set(key, value);
    }
    if !properties.contains_key("client.id") {
        c.set("client.id", client_id);
    }
    // librdkafka's log lines go to tracing (see the client context); debug contexts, when
    // asked for, need the debug level.
    c.set_log_level(if properties.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Info
    });
    c
}

/// Asks librdkafka to accept every property (no connection is made).
pub fn check_client_config(config: &ClientConfig) -> Result<(), String> {
    config
        .create_native_config()
        .map(drop)
        .map_err(|e| config_error(&e))
}

/// A rejected client property, named, with a hint for Java client names.
pub fn config_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, description, key, _) => {
            let hint = JAVA_PROPERTY_HINTS
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, h)| format!(" ({h})"))
                .unwrap_or_default();
            format!("`properties.{key}` is rejected by librdkafka: {description}{hint}")
        }
        other => format!("the Kafka client configuration is rejected: {other}"),
    }
}

pub(crate) fn check_topic_name(topic: &str, what: &str) -> Result<(), String> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{what}` `{topic}` is not a valid Kafka topic name (letters, digits, `.`, `_` and `-`, at most 249)"
        ))
    }
}

/// A map of scalars as text, in the order given.
pub(crate) fn string_map(v: &Value, name: &str) -> Result<BTreeMap<String, String>, String> {
    match present(v, name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, x)| match x {
                Value::Null => Err(format!("`{name}.{k}` has no value")),
                x => scalar(x, &format!("{name}.{k}")).map(|s| (k.clone(), s)),
            })
            .collect(),
        Some(other) => Err(format!("`{name}` must be a map, got {other}")),
    }
}

pub(crate) fn client_properties(
    v: &Value,
    group_id: &str,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut properties = string_map(v, "properties")?;
    for key in JAVA_ONLY_PROPERTIES {
        if properties.remove(*key).is_some() {
            warnings.push(format!(
                "`properties.{key}` is ignored: it names a Java class; use `keyDeserializer` and `valueDeserializer`"
            ));
        }
    }
    for (key, value) in &properties {
        no_template(SOURCE, &format!("properties.{key}"), value)?;
    }
    match properties.get("bootstrap.servers") {
        None => {
            return Err(
                "`properties` needs `bootstrap.servers` (such as `bootstrap.servers: localhost:9092`)"
                    .into(),
            );
        }
        Some(s) if s.trim().is_empty() => {
            return Err("`properties.bootstrap.servers` is empty".into());
        }
        Some(_) => {}
    }
    if let Some(g) = properties.remove("group.id")
        && g != group_id
    {
        return Err(format!(
            "`properties.group.id` (`{g}`) differs from `groupId` (`{group_id}`): set the group in `groupId` only"
        ));
    }
    for key in ["enable.auto.commit", "enable.auto.offset.store"] {
        if let Some(value) = properties.remove(key)
            && !value.eq_ignore_ascii_case("false")
        {
            return Err(format!(
                "`properties.{key}: {value}` is not supported: swoop commits each offset itself, once the record's execution is stored"
            ));
        }
    }
    Ok(properties)
}

pub(crate) fn deserializer(
    v: &Value,
    name: &str,
    from_serde_properties: Option<&String>,
) -> Result<Deserializer, String> {
    let top = match present(v, name) {
        Some(x) => Some(scalar(x, name)?),
        None => None,
    };
    let chosen = match (top, from_serde_properties) {
        (Some(top), Some(serde)) => {
            if !top.trim().eq_ignore_ascii_case(serde.trim()) {
                return Err(format!(
                    "`{name}` is `{top}` but `serdeProperties.{name}` is `{serde}`: set it in one place"
                ));
            }
            top
        }
        (Some(top), None) => top,
        (None, Some(serde)) => serde.clone(),
        (None, None) => return Ok(Deserializer::String),
    };
    Deserializer::parse(&chosen).map_err(|e| format!("`{name}`: {e}"))
}

pub(crate) fn on_serde_error(v: Option<&Value>) -> Result<OnSerdeError, String> {
    const EXPECTED: &str = "`onSerdeError` must be SKIPPED, or `{type: DLQ, topic: <topic>}` (by default an undecodable record makes a FAILED execution holding the raw record)";
    let (kind, topic) = match v {
        None => return Ok(OnSerdeError::Fail),
        Some(Value::String(s)) => (s.clone(), None),
        Some(Value::Object(m)) => {
            if let Some(unknown) = m.keys().find(|k| *k != "type" && *k != "topic") {
                return Err(format!(
                    "unknown property `{unknown}` in `onSerdeError` (properties are type and topic)"
                ));
            }
            let topic = match m.get("topic").filter(|t| !t.is_null()) {
                Some(t) => Some(scalar(t, "onSerdeError.topic")?),
                None => None,
            };
            match m.get("type").filter(|t| !t.is_null()) {
                Some(t) => (scalar(t, "onSerdeError.type")?, topic),
                // Kestra's default type.
                None if topic.is_none() => ("SKIPPED".to_string(), None),
                None => {
                    return Err(
                        "`onSerdeError` has a `topic` but no `type`: write `type: DLQ`".into(),
                    );
                }
            }
        }
        Some(_) => return Err(EXPECTED.into()),
    };
    match kind.trim().to_ascii_uppercase().as_str() {
        "SKIPPED" | "SKIP" => {
            if topic.is_some() {
                return Err("`onSerdeError.topic` is only for `type: DLQ`".into());
            }
            Ok(OnSerdeError::Skip)
        }
        "DLQ" => {
            let topic = topic.ok_or(
                "`onSerdeError: DLQ` needs a `topic`: write `onSerdeError: {type: DLQ, topic: <topic>}`",
            )?;
            no_template(SOURCE, "onSerdeError.topic", &topic)?;
            check_topic_name(&topic, "onSerdeError.topic")?;
            Ok(OnSerdeError::Dlq { topic })
        }
        "STORE" => Err(
            "`onSerdeError: STORE` is not supported yet (without `onSerdeError`, an undecodable record makes a FAILED execution holding the raw record)"
                .into(),
        ),
        _ => Err(format!("{EXPECTED}, got `{kind}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "id": "t",
            "type": "io.kestra.plugin.kafka.RealtimeTrigger",
            "topic": "orders",
            "groupId": "g",
            "properties": {"bootstrap.servers": "localhost:9092"},
        })
    }

    fn with(patch: Value) -> Value {
        let v = base();
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        KafkaTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> KafkaTriggerConfig {
        KafkaTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert_eq!(c.subscription, Subscription::Topics(vec!["orders".into()]));
        assert_eq!(c.group_id, "g");
        assert_eq!(c.key_deserializer, Deserializer::String);
        assert_eq!(c.value_deserializer, Deserializer::String);
        assert_eq!(c.on_serde_error, OnSerdeError::Fail);
        assert!(c.header_filters.is_empty());
        assert!(c.warnings.is_empty());
        let cc = c.consumer_config("ns/flow/trigger");
        assert_eq!(cc.get("group.id"), Some("g"));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cc.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(cc.get("fetch.min.bytes"), Some("1"));
        assert_eq!(cc.get("client.id"), Some("ns/flow/trigger"));
        assert_eq!(cc.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(cc.get("group.instance.id"), None);
        let exclusive = c.static_consumer_config("ns/flow/trigger", true);
        assert_eq!(
            exclusive.get("group.instance.id"),
            Some("swoop.ns.flow.trigger")
        );
    }

    #[test]
    fn user_settings_win_over_defaults() {
        let c = ok(json!({"properties": {
            "bootstrap.servers": "a:1,b:2",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 500,
            "client.id": "mine",
            "enable.auto.commit": false,
            "group.id": "g",
        }}));
        let cc = c.consumer_config("x");
        assert_eq!(cc.get("auto.offset.reset"), Some("latest"));
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(cc.get("client.id"), Some("mine"));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.bootstrap_servers(), "a:1,b:2");
    }

    #[test]
    fn topic_or_pattern_exactly_one() {
        assert!(err(json!({"topic": null})).contains("set one of `topic`"));
        assert!(
            err(json!({"topicPattern": "orders.*"}))
                .contains("only one of `topic` and `topicPattern`")
        );
        let c = ok(json!({"topic": ["a", "b.c"]}));
        assert_eq!(
            c.subscription,
            Subscription::Topics(vec!["a".into(), "b.c".into()])
        );
        let c = ok(json!({"topic": null, "topicPattern": "orders-.*"}));
        assert_eq!(c.subscription, Subscription::Pattern("orders-.*".into()));
        assert!(err(json!({"topic": []})).contains("empty list"));
        assert!(err(json!({"topic": ["a", "a"]})).contains("twice"));
        assert!(err(json!({"topic": "bad topic"})).contains("not a valid Kafka topic name"));
        assert!(err(json!({"topic": null, "topicPattern": " "})).contains("empty"));
    }

    #[test]
    fn patterns_are_anchored_for_librdkafka() {
        let names = |p: &str| Subscription::Pattern(p.into()).librdkafka_names();
        assert_eq!(names("orders-.*"), vec!["^(orders-.*)$"]);
        assert_eq!(names("^orders-.*$"), vec!["^(orders-.*)$"]);
        assert_eq!(names("a|b"), vec!["^(a|b)$"]);
        assert_eq!(names("price\\$"), vec!["^(price\\$)$"]);
        assert_eq!(
            Subscription::Topics(vec!["a".into()]).librdkafka_names(),
            vec!["a"]
        );
    }

    #[test]
    fn group_and_bootstrap_are_required() {
        assert_eq!(err(json!({"groupId": null})), "`groupId` is required");
        assert!(err(json!({"groupId": ""})).contains("empty"));
        assert!(err(json!({"properties": {}})).contains("needs `bootstrap.servers`"));
        assert!(err(json!({"properties": null})).contains("needs `bootstrap.servers`"));
        assert!(err(json!({"properties": {"bootstrap.servers": ""}})).contains("empty"));
        assert!(err(json!({"properties": "x"})).contains("must be a map"));
    }

    #[test]
    fn java_only_properties_are_dropped_with_a_warning() {
        let c = ok(json!({"properties": {
            "bootstrap.servers": "localhost:9092",
            "key.deserializer": "org.apache.kafka.common.serialization.StringDeserializer",
            "value.deserializer": "x",
        }}));
        assert!(!c.properties.contains_key("key.deserializer"));
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings[0].contains("key.deserializer"));
    }

    #[test]
    fn properties_librdkafka_rejects_are_named() {
        let e = err(json!({"properties": {"bootstrap.servers": "x:1", "no.such.thing": "1"}}));
        assert!(
            e.contains("`properties.no.such.thing` is rejected by librdkafka"),
            "{e}"
        );
        let e = err(json!({"properties": {"bootstrap.servers": "x:1", "sasl.jaas.config": "x"}}));
        assert!(e.contains("sasl.username"), "{e}");
        let e =
            err(json!({"properties": {"bootstrap.servers": "x:1", "fetch.wait.max.ms": "soon"}}));
        assert!(e.contains("`properties.fetch.wait.max.ms`"), "{e}");
        let e = err(json!({"properties": {"bootstrap.servers": "x:1", "nested": {"a": 1}}}));
        assert!(e.contains("`properties.nested` must be text"), "{e}");
    }

    #[test]
    fn auto_commit_and_other_groups_are_refused() {
        let e =
            err(json!({"properties": {"bootstrap.servers": "x:1", "enable.auto.commit": true}}));
        assert!(e.contains("enable.auto.commit: true"), "{e}");
        let e = err(json!({"properties": {"bootstrap.servers": "x:1", "group.id": "other"}}));
        assert!(e.contains("differs from `groupId`"), "{e}");
    }

    #[test]
    fn deserializers_top_level_or_serde_properties() {
        let c = ok(json!({"serdeProperties": {"valueDeserializer": "JSON"}}));
        assert_eq!(c.value_deserializer, Deserializer::Json);
        let c = ok(json!({"keyDeserializer": "LONG", "valueDeserializer": "bytes"}));
        assert_eq!(c.key_deserializer, Deserializer::Long);
        assert_eq!(c.value_deserializer, Deserializer::Bytes);
        let c = ok(
            json!({"valueDeserializer": "JSON", "serdeProperties": {"valueDeserializer": "json"}}),
        );
        assert_eq!(c.value_deserializer, Deserializer::Json);
        let e = err(
            json!({"valueDeserializer": "JSON", "serdeProperties": {"valueDeserializer": "STRING"}}),
        );
        assert!(e.contains("set it in one place"), "{e}");
    }

    #[test]
    fn avro_and_protobuf_are_rejected() {
        let e = err(json!({"valueDeserializer": "AVRO"}));
        assert_eq!(
            e,
            "`valueDeserializer`: AVRO is not supported yet (use BYTES or STRING and decode in a task)"
        );
        let e = err(json!({"serdeProperties": {"keyDeserializer": "PROTOBUF"}}));
        assert!(e.contains("PROTOBUF is not supported yet"), "{e}");
    }

    #[test]
    fn schema_registry_settings_are_ignored_with_a_warning() {
        let c = ok(json!({"serdeProperties": {
            "schema.registry.url": "http://localhost:8085",
            "keyDeserializer": "STRING",
        }}));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("schema.registry.url"));
    }

    #[test]
    fn header_filters() {
        let c = ok(json!({"headerFilters": {"type": "order", "version": 2}}));
        assert_eq!(
            c.header_filters,
            vec![
                ("type".to_string(), "order".to_string()),
                ("version".to_string(), "2".to_string())
            ]
        );
        assert!(err(json!({"headerFilters": ["x"]})).contains("must be a map"));
        assert!(err(json!({"headerFilters": {"a": null}})).contains("has no value"));
    }

    #[test]
    fn on_serde_error_forms() {
        assert_eq!(
            ok(json!({"onSerdeError": "SKIPPED"})).on_serde_error,
            OnSerdeError::Skip
        );
        assert_eq!(
            ok(json!({"onSerdeError": {"type": "skipped"}})).on_serde_error,
            OnSerdeError::Skip
        );
        assert_eq!(
            ok(json!({"onSerdeError": {}})).on_serde_error,
            OnSerdeError::Skip
        );
        assert_eq!(
            ok(json!({"onSerdeError": {"type": "DLQ", "topic": "orders-dlq"}})).on_serde_error,
            OnSerdeError::Dlq {
                topic: "orders-dlq".into()
            }
        );
        assert!(err(json!({"onSerdeError": "DLQ"})).contains("needs a `topic`"));
        assert!(err(json!({"onSerdeError": {"topic": "x"}})).contains("write `type: DLQ`"));
        assert!(err(json!({"onSerdeError": "STORE"})).contains("STORE` is not supported"));
        assert!(err(json!({"onSerdeError": "IGNORE"})).contains("must be SKIPPED"));
        assert!(err(json!({"onSerdeError": 3})).contains("must be SKIPPED"));
        assert!(
            err(json!({"onSerdeError": {"type": "DLQ", "topic": "x", "color": 1}}))
                .contains("unknown property `color`")
        );
        assert!(
            err(json!({"onSerdeError": {"type": "DLQ", "topic": "orders"}})).contains("consumes")
        );
        assert!(
            err(json!({"onSerdeError": {"type": "SKIPPED", "topic": "x"}}))
                .contains("only for `type: DLQ`")
        );
    }

    #[test]
    fn unsupported_kestra_properties_are_refused() {
        assert!(err(json!({"partitions": [0, 1]})).contains("`partitions` is not supported yet"));
        assert!(
            err(json!({"since": "2024-01-01T00:00:00Z"})).contains("`since` is not supported yet")
        );
        assert!(err(json!({"groupType": "SHARE"})).contains("needs an Apache Kafka broker 4.2"));
        ok(json!({"groupType": "CONSUMER"}));
    }

    #[test]
    fn templates_are_refused() {
        assert!(err(json!({"groupId": "{{ flow.id }}"})).contains("`groupId` is a template"));
        let e = err(json!({"properties": {"bootstrap.servers": "{{ secret('KAFKA') }}"}}));
        assert!(
            e.contains("`properties.bootstrap.servers` is a template"),
            "{e}"
        );
    }
}
