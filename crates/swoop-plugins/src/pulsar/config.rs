//! The trigger's properties (Kestra's `uri`, `topic`, `subscriptionName`, `subscriptionType`,
//! `initialPosition`, `consumerName`, `consumerProperties`, `deserializer`,
//! `authenticationToken`, plus `topicPattern`), checked when the flow is built, every problem
//! at once; and how a payload is decoded. Kestra's properties swoop does not implement
//! (`encryptionKey`, `schemaType` AVRO/JSON, `schemaString`, `tlsOptions`, `pulsar+ssl://`)
//! are refused with the reason.

use base64::Engine;
use serde_json::Value;

use crate::props::{DynamicText, no_template, optional_dynamic, optional_text, present, scalar};

const SOURCE: &str = "Pulsar";

/// The port of a `pulsar://` host written without one.
pub const DEFAULT_PORT: u16 = 6650;

pub const SUBSCRIPTION_TYPE_NAMES: &[&str] = &["Exclusive", "Shared", "Failover", "Key_Shared"];
pub const INITIAL_POSITION_NAMES: &[&str] = &["Earliest", "Latest"];
pub const DESERIALIZER_NAMES: &[&str] = &["STRING", "JSON", "BYTES"];
pub const SCHEMA_TYPE_NAMES: &[&str] = &["NONE", "AVRO", "JSON"];

/// Pulsar's `SubscriptionType`, with its wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionType {
    Exclusive = 0,
    Shared = 1,
    Failover = 2,
    KeyShared = 3,
}

/// Where a new subscription starts, with its wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    Latest = 0,
    Earliest = 1,
}

/// How a payload becomes `trigger.value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deserializer {
    /// UTF-8 text (invalid sequences replaced).
    String,
    /// Parsed JSON; a payload that is not JSON makes a FAILED execution.
    Json,
    /// The bytes, base64-encoded (as Jackson writes Kestra's `byte[]`).
    Bytes,
}

impl Deserializer {
    /// The value of a payload, and why it does not decode if it does not.
    pub fn decode(self, raw: &[u8]) -> (Value, Option<String>) {
        let text = || Value::String(String::from_utf8_lossy(raw).into_owned());
        match self {
            Deserializer::String => (text(), None),
            Deserializer::Json => match serde_json::from_slice(raw) {
                Ok(v) => (v, None),
                Err(e) => (text(), Some(format!("the message is not valid JSON: {e}"))),
            },
            Deserializer::Bytes => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
                None,
            ),
        }
    }
}

/// What the trigger consumes.
#[derive(Debug, Clone)]
pub enum Topics {
    /// These topics (full names: `persistent://tenant/namespace/topic`).
    Names(Vec<String>),
    /// The topics of `namespace` (`tenant/namespace`) whose full names match `pattern`,
    /// listed at every connect.
    Pattern {
        namespace: String,
        persistent: bool,
        pattern: regex::Regex,
    },
}

/// A checked Pulsar realtime trigger.
#[derive(Debug, Clone)]
pub struct PulsarTriggerConfig {
    /// The service URL as written (`pulsar://host:6650[,host2:6651]`).
    pub uri: String,
    /// The brokers to try, in order (`host:port`).
    pub hosts: Vec<String>,
    pub topics: Topics,
    pub subscription_name: String,
    pub subscription_type: SubscriptionType,
    pub initial_position: InitialPosition,
    pub consumer_name: Option<String>,
    pub consumer_properties: Vec<(String, String)>,
    pub deserializer: Deserializer,
    pub authentication_token: Option<DynamicText>,
}

impl PulsarTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map); every problem is reported.
    pub fn from_json(v: &Value) -> Result<PulsarTriggerConfig, String> {
        let mut problems = Vec::new();
        let mut check = |r: Result<(), String>| {
            if let Err(e) = r {
                problems.push(e);
            }
        };
        for (name, why) in UNSUPPORTED {
            if present(v, name).is_some() {
                check(Err(format!("`{name}` is not supported: {why}")));
            }
        }
        if let Some(t) = present(v, "schemaType") {
            match scalar(t, "schemaType").map(|t| t.to_ascii_uppercase()) {
                Ok(t) if t == "NONE" => {}
                Ok(t) => check(Err(format!(
                    "`schemaType: {t}` is not supported: swoop does not decode Avro; leave `schemaType` out (or NONE) and use `deserializer: JSON` for JSON payloads"
                ))),
                Err(e) => check(Err(e)),
            }
        }
        let hosts = match optional_text(SOURCE, v, "uri") {
            Ok(Some(uri)) => parse_uri(&uri).map(|h| (uri, h)),
            Ok(None) => Err("`uri` is required (such as `pulsar://localhost:6650`)".into()),
            Err(e) => Err(e),
        };
        let topics = topics(v);
        let subscription_name = match optional_text(SOURCE, v, "subscriptionName") {
            Ok(Some(s)) if !s.trim().is_empty() => Ok(s),
            Ok(_) => Err("`subscriptionName` is required (the subscription to consume on)".into()),
            Err(e) => Err(e),
        };
        let subscription_type =
            choice(v, "subscriptionType", SUBSCRIPTION_TYPE_NAMES, 0).map(|i| {
                [
                    SubscriptionType::Exclusive,
                    SubscriptionType::Shared,
                    SubscriptionType::Failover,
                    SubscriptionType::KeyShared,
                ][i]
            });
        let initial_position = choice(v, "initialPosition", INITIAL_POSITION_NAMES, 0)
            .map(|i| [InitialPosition::Earliest, InitialPosition::Latest][i]);
        let deserializer = choice(v, "deserializer", DESERIALIZER_NAMES, 0).map(|i| {
            [
                Deserializer::String,
                Deserializer::Json,
                Deserializer::Bytes,
            ][i]
        });
        let consumer_name = optional_text(SOURCE, v, "consumerName");
        let consumer_properties = string_map(v, "consumerProperties");
        let authentication_token = optional_dynamic(v, "authenticationToken");

        macro_rules! take {
            ($r:expr) => {
                match $r {
                    Ok(x) => Some(x),
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                }
            };
        }
        let hosts = take!(hosts);
        let topics = take!(topics);
        let subscription_name = take!(subscription_name);
        let subscription_type = take!(subscription_type);
        let initial_position = take!(initial_position);
        let deserializer = take!(deserializer);
        let consumer_name = take!(consumer_name);
        let consumer_properties = take!(consumer_properties);
        let authentication_token = take!(authentication_token);
        match (
            hosts,
            topics,
            subscription_name,
            subscription_type,
            initial_position,
            deserializer,
            consumer_name,
            consumer_properties,
            authentication_token,
        ) {
            (
                Some((uri, hosts)),
                Some(topics),
                Some(subscription_name),
                Some(subscription_type),
                Some(initial_position),
                Some(deserializer),
                Some(consumer_name),
                Some(consumer_properties),
                Some(authentication_token),
            ) if problems.is_empty() => Ok(PulsarTriggerConfig {
                uri,
                hosts,
                topics,
                subscription_name,
                subscription_type,
                initial_position,
                consumer_name,
                consumer_properties,
                deserializer,
                authentication_token,
            }),
            _ => Err(problems.join("; ")),
        }
    }
}

/// Kestra's properties swoop refuses, and why.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "encryptionKey",
        "swoop does not decrypt end-to-end encrypted messages; remove it (an encrypted message would make a FAILED execution)",
    ),
    (
        "schemaString",
        "swoop does not decode Avro (`schemaType` AVRO or JSON); remove it and use `deserializer: JSON` for JSON payloads",
    ),
    (
        "tlsOptions",
        "swoop's Pulsar client does not speak TLS yet; use a `pulsar://` URI",
    ),
];

/// `pulsar://host[:port][,host2[:port]]` → `host:port` each.
fn parse_uri(uri: &str) -> Result<Vec<String>, String> {
    let rest = if let Some(rest) = uri.strip_prefix("pulsar://") {
        rest
    } else if uri.starts_with("pulsar+ssl://") {
        return Err(format!(
            "`uri` `{uri}`: TLS (`pulsar+ssl://`) is not supported yet; use `pulsar://`"
        ));
    } else {
        return Err(format!(
            "`uri` `{uri}` is not a Pulsar service URL (such as `pulsar://localhost:6650`)"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let mut hosts = Vec::new();
    for host in rest.split(',') {
        let host = host.trim();
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(format!(
                "`uri` `{uri}`: `{host}` is not a host or host:port (such as `pulsar://localhost:6650`)"
            ));
        }
        // `host:port`, `[::1]:port`, or a host alone (the default port).
        match host.rsplit_once(':') {
            Some((name, port))
                if !name.is_empty() && (!name.contains(':') || name.ends_with(']')) =>
            {
                port.parse::<u16>()
                    .map_err(|_| format!("`uri` `{uri}`: `{port}` is not a port number"))?;
                hosts.push(host.to_string());
            }
            _ => hosts.push(format!("{host}:{DEFAULT_PORT}")),
        }
    }
    Ok(hosts)
}

/// A topic as a full name: `t` → `persistent://public/default/t`, `tenant/ns/t` →
/// `persistent://tenant/ns/t`.
pub fn full_topic_name(topic: &str) -> Result<String, String> {
    if let Some((domain, rest)) = topic.split_once("://") {
        if domain != "persistent" && domain != "non-persistent" {
            return Err(format!(
                "topic `{topic}`: the domain must be persistent:// or non-persistent://"
            ));
        }
        if rest.split('/').count() != 3 || rest.split('/').any(str::is_empty) {
            return Err(format!(
                "topic `{topic}` must be `{domain}://tenant/namespace/topic`"
            ));
        }
        return Ok(topic.to_string());
    }
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok(format!("persistent://public/default/{t}")),
        [tenant, ns, t] if parts.iter().all(|p| !p.is_empty()) => {
            Ok(format!("persistent://{tenant}/{ns}/{t}"))
        }
        _ => Err(format!(
            "topic `{topic}` must be a name (`orders`), `tenant/namespace/topic` or `persistent://tenant/namespace/topic`"
        )),
    }
}

fn topics(v: &Value) -> Result<Topics, String> {
    match (present(v, "topic"), present(v, "topicPattern")) {
        (Some(_), Some(_)) => Err("give `topic` or `topicPattern`, not both".into()),
        (None, None) => Err(
            "`topic` (a topic or a list of topics) or `topicPattern` (a regular expression) is required"
                .into(),
        ),
        (Some(t), None) => {
            let names: Vec<String> = match t {
                Value::Array(items) => items
                    .iter()
                    .map(|i| scalar(i, "topic"))
                    .collect::<Result<_, _>>()?,
                other => vec![scalar(other, "topic")?],
            };
            if names.is_empty() {
                return Err("`topic` is an empty list".into());
            }
            let mut full = Vec::new();
            for name in &names {
                no_template(SOURCE, "topic", name)?;
                let name = full_topic_name(name.trim()).map_err(|e| format!("`topic`: {e}"))?;
                if !full.contains(&name) {
                    full.push(name);
                }
            }
            Ok(Topics::Names(full))
        }
        (None, Some(p)) => {
            let pattern = scalar(p, "topicPattern")?;
            no_template(SOURCE, "topicPattern", &pattern)?;
            // The namespace is the pattern's prefix up to its last `/`; a pattern without one
            // is in public/default.
            let full = if pattern.contains("://") || pattern.matches('/').count() >= 2 {
                full_topic_name(&pattern).map_err(|e| format!("`topicPattern`: {e}"))?
            } else {
                format!("persistent://public/default/{pattern}")
            };
            let (domain, rest) = full.split_once("://").unwrap_or(("persistent", &full));
            let mut parts = rest.splitn(3, '/');
            let (tenant, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if tenant.contains(['*', '.', '[', '(', '+', '?']) || ns.contains(['*', '[', '(', '+', '?']) {
                return Err(format!(
                    "`topicPattern` `{pattern}`: the tenant and namespace must be written out, only the topic part may be a pattern"
                ));
            }
            let pattern = regex::Regex::new(&format!("^(?:{full})$"))
                .map_err(|e| format!("`topicPattern` `{pattern}` is not a regular expression: {e}"))?;
            Ok(Topics::Pattern {
                namespace: format!("{tenant}/{ns}"),
                persistent: domain == "persistent",
                pattern,
            })
        }
    }
}

/// The index in `names` of the property's value (case-insensitive), `default` when absent.
fn choice(v: &Value, name: &str, names: &[&str], default: usize) -> Result<usize, String> {
    let Some(x) = present(v, name) else {
        return Ok(default);
    };
    let text = scalar(x, name)?;
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| format!("`{name}` must be {}, got `{text}`", names.join(", ")))
}

fn string_map(v: &Value, name: &str) -> Result<Vec<(String, String)>, String> {
    match present(v, name) {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, x)| Ok((k.clone(), scalar(x, &format!("{name}.{k}"))?)))
            .collect(),
        Some(other) => Err(format!(
            "`{name}` must be a map of text values, got {other}"
        )),
    }
}
