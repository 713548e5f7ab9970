//! The trigger's properties (Kestra's), checked when the flow is built, and the payload
//! decoding (`serdeType`).

use std::time::Duration;

use crate::props::{UserPassword, no_template, present, scalar};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

/// How errors name this source.
const SOURCE: &str = "MQTT";

/// How a payload is decoded (Kestra's MQTT `SerdeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerdeType {
    /// A JSON document, parsed (Kestra's default).
    Json,
    /// UTF-8 text.
    String,
    /// Raw bytes, shown as base64.
    Bytes,
}

pub const SERDE_TYPE_NAMES: &[&str] = &["JSON", "STRING", "BYTES"];

impl SerdeType {
    pub fn parse(name: &str) -> Result<SerdeType, String> {
        match name.trim().to_ascii_uppercase().as_str() {
            "JSON" => Ok(SerdeType::Json),
            "STRING" => Ok(SerdeType::String),
            "BYTES" => Ok(SerdeType::Bytes),
            other => Err(format!(
                "`serdeType` must be one of {}, got `{other}`",
                SERDE_TYPE_NAMES.join(", ")
            )),
        }
    }

    /// Decodes a payload. On failure, the raw payload (as text, lossily) and the error.
    pub fn decode(self, payload: &[u8]) -> Result<Value, (Value, String)> {
        let raw = || Value::String(String::from_utf8_lossy(payload).into_owned());
        match self {
            SerdeType::Bytes => Ok(Value::String(BASE64.encode(payload))),
            SerdeType::String => match std::str::from_utf8(payload) {
                Ok(s) => Ok(Value::String(s.to_string())),
                Err(e) => Err((raw(), format!("the payload is not UTF-8 text: {e}"))),
            },
            SerdeType::Json => serde_json::from_slice(payload)
                .map_err(|e| (raw(), format!("the payload is not JSON: {e}"))),
        }
    }
}

/// MQTT's quality of service levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Qos {
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }

    pub fn from_level(level: u8) -> Option<Qos> {
        match level {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            2 => Some(Qos::ExactlyOnce),
            _ => None,
        }
    }
}

/// The protocol version (`mqttVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (Kestra's default).
    #[default]
    V3,
    /// MQTT 5.
    V5,
}

/// The default `connectionTimeout`: how long connecting and subscribing may take.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;

/// A checked MQTT realtime trigger.
#[derive(Debug, Clone)]
pub struct MqttTriggerConfig {
    pub host: String,
    pub port: u16,
    /// The `clientId`; when unset, a stable id is derived from the trigger's uid when it
    /// connects (see [`default_client_id`]).
    pub client_id: Option<String>,
    pub version: MqttVersion,
    pub topics: Vec<String>,
    pub qos: Qos,
    /// `username` and `password` (they may be `secret()` templates, rendered at connect).
    pub credentials: Option<UserPassword>,
    pub serde_type: SerdeType,
    pub connection_timeout: Duration,
}

impl MqttTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<MqttTriggerConfig, String> {
        let server = match present(v, "server") {
            Some(s) => scalar(s, "server")?,
            None => return Err("`server` is required (such as `tcp://localhost:1883`)".into()),
        };
        no_template(SOURCE, "server", &server)?;
        let (host, port) = parse_server(&server)?;

        let version = match present(v, "mqttVersion") {
            None => MqttVersion::V3,
            Some(version) => {
                let version = scalar(version, "mqttVersion")?;
                match version.trim().to_ascii_uppercase().as_str() {
                    "V3" => MqttVersion::V3,
                    "V5" => MqttVersion::V5,
                    other => {
                        return Err(format!("`mqttVersion` must be V3 or V5, got `{other}`"));
                    }
                }
            }
        };
        for (name, why) in [
            ("crt", "TLS is not supported yet"),
            (
                "httpsHostnameVerificationEnabled",
                "TLS is not supported yet",
            ),
            (
                "authMethod",
                "MQTT 5 enhanced authentication is not supported yet",
            ),
        ] {
            if present(v, name).is_some() {
                return Err(format!("`{name}` is not supported: {why}"));
            }
        }

        let client_id = match present(v, "clientId") {
            Some(c) => {
                let c = scalar(c, "clientId")?;
                no_template(SOURCE, "clientId", &c)?;
                if c.trim().is_empty() {
                    return Err("`clientId` is empty".into());
                }
                Some(c)
            }
            None => None,
        };

        let topics: Vec<String> = match present(v, "topic") {
            None => return Err("`topic` is required (a topic filter or a list of them)".into()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| scalar(i, "topic"))
                .collect::<Result<_, _>>()?,
            Some(other) => vec![scalar(other, "topic")?],
        };
        if topics.is_empty() {
            return Err("`topic` is an empty list".into());
        }
        for t in &topics {
            no_template(SOURCE, "topic", t)?;
            check_topic_filter(t)?;
        }
        let mut unique = topics.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != topics.len() {
            return Err("`topic` lists a topic twice".into());
        }

        let qos = match present(v, "qos") {
            None => Qos::AtLeastOnce,
            Some(q) => {
                let text = scalar(q, "qos")?;
                text.trim()
                    .parse::<u8>()
                    .ok()
                    .and_then(Qos::from_level)
                    .ok_or_else(|| format!("`qos` must be 0, 1 or 2, got `{text}`"))?
            }
        };

        let credentials = UserPassword::from_json(v)?;

        let serde_type = match present(v, "serdeType") {
            None => SerdeType::Json,
            Some(s) => SerdeType::parse(&scalar(s, "serdeType")?)?,
        };

        let connection_timeout = match present(v, "connectionTimeout") {
            None => DEFAULT_CONNECTION_TIMEOUT,
            Some(d) => {
                let text = scalar(d, "connectionTimeout")?;
                let d = swoop_core::duration::parse_duration(&text)
                    .map_err(|e| format!("`connectionTimeout`: {e}"))?;
                if d < Duration::from_secs(1) {
                    return Err("`connectionTimeout` must be at least 1 second".into());
                }
                d
            }
        };

        Ok(MqttTriggerConfig {
            host,
            port,
            client_id,
            version,
            topics,
            qos,
            credentials,
            serde_type,
            connection_timeout,
        })
    }

    /// The client id to connect with: `clientId`, or one derived from the trigger's uid.
    pub fn client_id_for(&self, consumer_name: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| default_client_id(consumer_name))
    }
}

/// A stable client id for a trigger (`swoop-` and a 64-bit FNV-1a hash of its uid, in hex:
/// 22 characters, within MQTT 3.1.1's guaranteed 23), so its persistent session survives
/// restarts.
pub fn default_client_id(consumer_name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in consumer_name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("swoop-{hash:016x}")
}

/// `tcp://host:port` (or `mqtt://`) → host and port.
pub fn parse_server(server: &str) -> Result<(String, u16), String> {
    let server = server.trim();
    let Some((scheme, rest)) = server.split_once("://") else {
        return Err(format!(
            "`server` must be a URI such as `tcp://localhost:1883`, got `{server}`"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => {}
        "ssl" | "mqtts" | "tls" | "ws" | "wss" => {
            return Err(format!(
                "`server`: `{scheme}://` is not supported yet (only `tcp://`)"
            ));
        }
        other => {
            return Err(format!(
                "`server`: unknown scheme `{other}://` (use `tcp://host:port`)"
            ));
        }
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(format!(
            "`server` must be `tcp://host:port` only, got `{server}`"
        ));
    }
    let bad_port = |p: &str| format!("`server`: `{p}` is not a port number");
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`server`: unclosed `[` in `{server}`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(format!("`server`: unexpected `{after}` in `{server}`")),
        };
        (host.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, p)) => (host.to_string(), p.parse().map_err(|_| bad_port(p))?),
            None => (rest.to_string(), DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err(format!("`server` has no host: `{server}`"));
    }
    if port == 0 {
        return Err("`server`: the port must not be 0".into());
    }
    Ok((host, port))
}

/// A subscription's topic filter: not empty, wildcards only as whole levels.
fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("`topic` has an empty topic".into());
    }
    if filter.contains('\0') {
        return Err(format!("`topic` `{filter}` contains a NUL character"));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let valid = match *level {
            "#" => i == levels.len() - 1,
            "+" => true,
            l => !l.contains('#') && !l.contains('+'),
        };
        if !valid {
            return Err(format!(
                "`topic` `{filter}` is not a valid MQTT topic filter (`+` and `#` must fill a whole level, `#` only last)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "id": "t",
            "type": "io.kestra.plugin.mqtt.RealtimeTrigger",
            "server": "tcp://localhost:1883",
            "clientId": "me",
            "topic": "sensors/temp",
        })
    }

    fn with(patch: Value) -> Value {
        let v = base();
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        MqttTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> MqttTriggerConfig {
        MqttTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert_eq!(c.host, "localhost");
        assert_eq!(c.port, 1883);
        assert_eq!(c.client_id.as_deref(), Some("me"));
        assert_eq!(c.topics, vec!["sensors/temp"]);
        assert_eq!(c.qos, Qos::AtLeastOnce);
        assert_eq!(c.version, MqttVersion::V3);
        assert_eq!(c.serde_type, SerdeType::Json);
        assert_eq!(c.connection_timeout, DEFAULT_CONNECTION_TIMEOUT);
        assert!(c.credentials.is_none());
    }

    #[test]
    fn all_properties() {
        let c = ok(json!({
            "server": "mqtt://[::1]:1884",
            "topic": ["a/+/c", "d/#"],
            "qos": 2,
            "username": "u",
            "password": "p",
            "serdeType": "bytes",
            "mqttVersion": "V3",
            "connectionTimeout": "PT5S",
        }));
        assert_eq!((c.host.as_str(), c.port), ("::1", 1884));
        assert_eq!(c.topics, vec!["a/+/c", "d/#"]);
        assert_eq!(c.qos, Qos::ExactlyOnce);
        assert_eq!(
            c.credentials.unwrap().resolve().unwrap(),
            ("u".into(), "p".into())
        );
        assert_eq!(c.serde_type, SerdeType::Bytes);
        assert_eq!(c.version, MqttVersion::V3);
        assert_eq!(ok(json!({"mqttVersion": "v5"})).version, MqttVersion::V5);
        assert_eq!(c.connection_timeout, Duration::from_secs(5));
        assert_eq!(ok(json!({"qos": "0"})).qos, Qos::AtMostOnce);
        assert_eq!(ok(json!({"server": "tcp://broker"})).port, 1883);
    }

    #[test]
    fn server_and_topic_are_required() {
        assert!(err(json!({"server": null})).contains("`server` is required"));
        assert!(err(json!({"topic": null})).contains("`topic` is required"));
        assert!(err(json!({"topic": []})).contains("empty list"));
        assert!(err(json!({"topic": ["a", "a"]})).contains("twice"));
        assert!(err(json!({"topic": "a/#/b"})).contains("not a valid MQTT topic filter"));
        assert!(err(json!({"topic": "a+"})).contains("not a valid MQTT topic filter"));
        assert!(err(json!({"server": "localhost:1883"})).contains("must be a URI"));
        assert!(err(json!({"server": "ssl://h:8883"})).contains("not supported yet"));
        assert!(err(json!({"server": "tcp://h:port"})).contains("not a port number"));
        assert!(err(json!({"server": "tcp://:1883"})).contains("no host"));
    }

    #[test]
    fn client_id_defaults_to_a_stable_id() {
        let c = ok(json!({"clientId": null}));
        assert!(c.client_id.is_none());
        let id = c.client_id_for("ns/flow/trigger");
        assert_eq!(id, default_client_id("ns/flow/trigger"));
        assert_ne!(id, default_client_id("ns/flow/other"));
        assert!(id.starts_with("swoop-") && id.len() <= 23, "{id}");
        assert_eq!(ok(json!({})).client_id_for("x"), "me");
        assert!(err(json!({"clientId": ""})).contains("empty"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(err(json!({"qos": 3})).contains("`qos` must be 0, 1 or 2"));
        assert!(err(json!({"qos": "high"})).contains("`qos` must be 0, 1 or 2"));
        assert!(err(json!({"serdeType": "AVRO"})).contains("`serdeType` must be one of"));
        assert!(err(json!({"mqttVersion": "V4"})).contains("must be V3 or V5"));
        assert!(err(json!({"connectionTimeout": "soon"})).contains("connectionTimeout"));
        assert!(err(json!({"crt": "x"})).contains("TLS is not supported yet"));
        assert!(err(json!({"authMethod": "x"})).contains("`authMethod` is not supported"));
        assert!(err(json!({"password": "p"})).contains("without `username`"));
        let secret = ok(json!({"password": "{{ secret('P') }}", "username": "u"}));
        assert!(secret.credentials.is_some());
    }

    #[test]
    fn decoding() {
        assert_eq!(
            SerdeType::Json.decode(br#"{"n": 1}"#).unwrap(),
            json!({"n": 1})
        );
        let (raw, e) = SerdeType::Json.decode(b"this is { not json").unwrap_err();
        assert_eq!(raw, json!("this is { not json"));
        assert!(e.contains("not JSON"), "{e}");
        assert_eq!(SerdeType::String.decode(b"hi").unwrap(), json!("hi"));
        assert!(SerdeType::String.decode(&[0xff, 0xfe]).is_err());
        assert_eq!(SerdeType::Bytes.decode(&[0, 1, 2]).unwrap(), json!("AAEC"));
    }
}
