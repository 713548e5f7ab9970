//! The trigger's properties (Kestra's `url`, `host`, `port`, `username`, `password`,
//! `virtualHost`, `queue`, `consumerTag`, `serdeType`), checked when the flow is built, and the
//! decoding of a message body.

use crate::props::{
    DynamicText, no_template, optional_dynamic, optional_text, present, redact_url, scalar,
};
pub use crate::props::{SERDE_TYPE_NAMES, SerdeType};
use lapin::uri::{AMQPScheme, AMQPUri};
use serde_json::Value;

/// How errors name this source.
const SOURCE: &str = "AMQP";

/// The default AMQP port.
pub const DEFAULT_PORT: u16 = 5672;

/// A checked AMQP realtime trigger.
#[derive(Debug, Clone)]
pub struct AmqpTriggerConfig {
    /// Where to connect (host, port, credentials, virtual host), from `url` and the separate
    /// properties (which win, as in Kestra).
    pub uri: AMQPUri,
    /// The queue consumed (it must exist: the trigger does not declare it).
    pub queue: String,
    /// The consumer tag; when unset, one derived from the trigger's uid.
    pub consumer_tag: Option<String>,
    pub serde_type: SerdeType,
    /// `password`, over the URL's (it may be a `secret()` template, rendered at connect).
    pub password: Option<DynamicText>,
}

impl AmqpTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<AmqpTriggerConfig, String> {
        let mut uri = match present(v, "url") {
            Some(u) => {
                let url = scalar(u, "url")?;
                no_template(SOURCE, "url", &url)?;
                let url = url.trim();
                if url.is_empty() {
                    return Err("`url` is empty".into());
                }
                if url.starts_with("amqps://") {
                    return Err("`url`: `amqps://` (TLS) is not supported yet".into());
                }
                url.parse::<AMQPUri>().map_err(|e| {
                    format!(
                        "`url` `{}` is not a valid AMQP URI (such as `amqp://guest:guest@localhost:5672/%2f`): {e}",
                        redact_url(url)
                    )
                })?
            }
            None => {
                if present(v, "host").is_none() {
                    return Err(
                        "`url` (such as `amqp://guest:guest@localhost:5672/%2f`) or `host` is required"
                            .into(),
                    );
                }
                AMQPUri::default()
            }
        };
        if uri.scheme != AMQPScheme::AMQP {
            return Err("`url`: `amqps://` (TLS) is not supported yet".into());
        }
        if let Some(host) = optional_text(SOURCE, v, "host")? {
            if host.trim().is_empty() {
                return Err("`host` is empty".into());
            }
            uri.authority.host = host.trim().to_string();
        }
        if let Some(port) = optional_text(SOURCE, v, "port")? {
            uri.authority.port = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`port` must be a port number, got `{port}`"))?;
        }
        if let Some(username) = optional_text(SOURCE, v, "username")? {
            uri.authority.userinfo.username = username;
        }
        // The password may be a `secret()` template: it is set when the trigger connects.
        let password = optional_dynamic(v, "password")?;
        if let Some(vhost) = optional_text(SOURCE, v, "virtualHost")? {
            uri.vhost = vhost;
        }

        let queue = match present(v, "queue") {
            Some(q) => scalar(q, "queue")?,
            None => return Err("`queue` (the queue to consume) is required".into()),
        };
        no_template(SOURCE, "queue", &queue)?;
        if queue.is_empty() {
            return Err("`queue` is empty".into());
        }
        if queue.len() > 255 {
            return Err("`queue` is longer than 255 bytes".into());
        }

        let consumer_tag = optional_text(SOURCE, v, "consumerTag")?;
        if let Some(tag) = &consumer_tag {
            if tag.is_empty() {
                return Err("`consumerTag` is empty".into());
            }
            if tag.len() > 255 {
                return Err("`consumerTag` is longer than 255 bytes".into());
            }
        }

        if let Some(auto_ack) = present(v, "autoAck") {
            let on = match auto_ack {
                Value::Bool(b) => *b,
                other => scalar(other, "autoAck")?
                    .trim()
                    .eq_ignore_ascii_case("true"),
            };
            if on {
                return Err("`autoAck: true` is not supported: swoop acknowledges each message only once its execution is stored, so that nothing is lost if swoop stops (remove `autoAck`)".into());
            }
        }

        let serde_type = match present(v, "serdeType") {
            Some(s) => SerdeType::parse(&scalar(s, "serdeType")?)?,
            None => SerdeType::String,
        };
        Ok(AmqpTriggerConfig {
            uri,
            queue,
            consumer_tag,
            serde_type,
            password,
        })
    }

    /// The URI to connect to: [`Self::uri`] with `password` rendered over the URL's.
    pub fn connect_uri(&self) -> Result<AMQPUri, String> {
        let mut uri = self.uri.clone();
        if let Some(password) = &self.password {
            uri.authority.userinfo.password = password.resolve("password")?;
        }
        Ok(uri)
    }

    /// Where the trigger connects, without the password, for messages.
    pub fn display_address(&self) -> String {
        let a = &self.uri.authority;
        format!(
            "amqp://{}@{}:{}/{}",
            a.userinfo.username,
            a.host,
            a.port,
            percent_encode(&self.uri.vhost)
        )
    }

    /// The consumer tag: `consumerTag`, or `swoop:` and the trigger's uid.
    pub fn consumer_tag_for(&self, consumer_name: &str) -> String {
        match &self.consumer_tag {
            Some(tag) => tag.clone(),
            None => {
                let mut tag = format!("swoop:{consumer_name}");
                while tag.len() > 255 {
                    tag.pop();
                }
                tag
            }
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(patch: Value) -> Value {
        let v = json!({
            "id": "t",
            "type": "io.kestra.plugin.amqp.RealtimeTrigger",
            "url": "amqp://guest:guest@localhost:5672/%2f",
            "queue": "orders",
        });
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        AmqpTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> AmqpTriggerConfig {
        AmqpTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert_eq!(c.uri.authority.host, "localhost");
        assert_eq!(c.uri.authority.port, 5672);
        assert_eq!(c.uri.authority.userinfo.username, "guest");
        assert_eq!(c.uri.vhost, "/");
        assert_eq!(c.queue, "orders");
        assert_eq!(c.serde_type, SerdeType::String);
        assert_eq!(c.consumer_tag_for("ns/flow/t"), "swoop:ns/flow/t");
        assert_eq!(c.display_address(), "amqp://guest@localhost:5672/%2f");
    }

    #[test]
    fn separate_properties() {
        let c = ok(
            json!({"url": null, "host": "rabbit", "port": 5673, "username": "u",
            "password": "p", "virtualHost": "shop", "consumerTag": "me"}),
        );
        assert_eq!(c.uri.authority.host, "rabbit");
        assert_eq!(c.uri.authority.port, 5673);
        assert_eq!(c.uri.authority.userinfo.username, "u");
        assert_eq!(c.connect_uri().unwrap().authority.userinfo.password, "p");
        assert_eq!(c.uri.vhost, "shop");
        assert_eq!(c.consumer_tag_for("x"), "me");
        let c = ok(json!({"url": null, "host": "rabbit"}));
        assert_eq!(c.uri.authority.port, DEFAULT_PORT);
        assert_eq!(c.uri.vhost, "/");
        // The separate properties win over the URL.
        let c = ok(json!({"port": "6000"}));
        assert_eq!(c.uri.authority.port, 6000);
    }

    #[test]
    fn problems() {
        assert!(err(json!({"url": null})).contains("or `host` is required"));
        assert!(err(json!({"queue": null})).contains("`queue`"));
        assert!(err(json!({"queue": ""})).contains("empty"));
        assert!(err(json!({"port": "abc"})).contains("port number"));
        assert!(err(json!({"port": 0})).contains("port number"));
        assert!(err(json!({"url": "amqps://localhost"})).contains("TLS"));
        let e = err(json!({"url": "http://u:hunter2@localhost"}));
        assert!(e.contains("not a valid AMQP URI"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(err(json!({"url": "{{ secret('AMQP') }}"})).contains("template"));
        // A password may be a secret, rendered when the trigger connects.
        let secret = ok(json!({"password": "{{ secret('AMQP_TEST_NOT_SET') }}"}));
        let e = secret.connect_uri().unwrap_err();
        assert!(e.contains("SWOOP_SECRET_AMQP_TEST_NOT_SET"), "{e}");
        assert!(err(json!({"autoAck": true})).contains("`autoAck: true` is not supported"));
        assert!(ok(json!({"autoAck": false})).consumer_tag.is_none());
        assert_eq!(
            err(json!({"serdeType": "AVRO"})),
            "`serdeType` must be STRING or JSON, got `AVRO`"
        );
        assert_eq!(ok(json!({"serdeType": "json"})).serde_type, SerdeType::Json);
    }

    #[test]
    fn decoding() {
        assert_eq!(
            SerdeType::String.decode(b"hello", "the message"),
            (json!("hello"), None)
        );
        assert_eq!(
            SerdeType::Json.decode(br#"{"n": 1}"#, "the message"),
            (json!({"n": 1}), None)
        );
        let (v, e) = SerdeType::Json.decode(b"this is { not json", "the message");
        assert_eq!(v, json!("this is { not json"));
        assert!(e.unwrap().contains("not valid JSON"));
    }
}
