//! The trigger's properties (Kestra's `url`, `username`, `password`, `token`, `creds`,
//! `subject`, `durableId`, `since`, `deliverPolicy`, `batchSize`, and swoop's `serdeType`),
//! checked when the flow is built, and the payload decoding.

use std::str::FromStr;

use crate::props::{
    DynamicText, UserPassword, no_template, optional_dynamic, optional_text, present, redact_url,
    scalar,
};
pub use crate::props::{SERDE_TYPE_NAMES, SerdeType};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// How errors name this source.
const SOURCE: &str = "NATS";

/// Where a new durable consumer starts (Kestra's `deliverPolicy`; it only matters when the
/// consumer is created, later connects go on from its position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverPolicy {
    /// From the first message in the stream (the default).
    #[default]
    All,
    /// From the last message.
    Last,
    /// Only messages published after the consumer was created.
    New,
    /// The last message of each subject, then the new ones.
    LastPerSubject,
    /// From the first message published at or after `since`.
    ByStartTime(DateTime<Utc>),
}

/// The names `deliverPolicy` accepts (Kestra's; `ByStartSequence` is refused: Kestra has no
/// property for the sequence).
pub const DELIVER_POLICY_NAMES: &[&str] = &[
    "All",
    "Last",
    "New",
    "ByStartSequence",
    "ByStartTime",
    "LastPerSubject",
];

/// The default `batchSize` (Kestra's).
pub const DEFAULT_BATCH_SIZE: usize = 10;
/// The largest `batchSize`: at most this many messages are read ahead, so memory stays flat.
pub const MAX_BATCH_SIZE: usize = 64;

/// A checked NATS JetStream realtime trigger.
#[derive(Debug, Clone)]
pub struct NatsTriggerConfig {
    /// The server URLs (`url`, comma-separated), as written (they may hold a password: show
    /// [`Self::display_url`]).
    pub servers: Vec<String>,
    /// `username` and `password`, or `token` (they may be `secret()` templates, rendered at
    /// connect).
    pub credentials: Option<UserPassword>,
    pub token: Option<DynamicText>,
    pub subject: String,
    /// The durable consumer's name; when unset, a stable one is derived from the trigger's uid
    /// when it connects (see [`default_durable_id`]).
    pub durable_id: Option<String>,
    pub deliver_policy: DeliverPolicy,
    pub batch_size: usize,
    pub serde_type: SerdeType,
}

impl NatsTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<NatsTriggerConfig, String> {
        let url = match present(v, "url") {
            Some(u) => scalar(u, "url")?,
            None => return Err("`url` is required (such as `nats://localhost:4222`)".into()),
        };
        no_template(SOURCE, "url", &url)?;
        let servers: Vec<String> = url
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err("`url` is empty".into());
        }
        for server in &servers {
            check_server(server)?;
        }

        if present(v, "creds").is_some() {
            return Err(
                "`creds` is not supported yet (credentials files and NKEYs): use `username`/`password` or `token`"
                    .into(),
            );
        }
        let credentials = UserPassword::from_json(v)?;
        let token = optional_dynamic(v, "token")?;
        if token.is_some() && credentials.is_some() {
            return Err("`token` and `username` are both set: use one of them".into());
        }

        let subject = match present(v, "subject") {
            Some(s) => scalar(s, "subject")?,
            None => return Err("`subject` is required (such as `orders.>`)".into()),
        };
        no_template(SOURCE, "subject", &subject)?;
        check_subject(&subject)?;

        let durable_id = match optional_text(SOURCE, v, "durableId")? {
            Some(d) => {
                check_durable(&d)?;
                Some(d)
            }
            None => None,
        };

        let since = match optional_text(SOURCE, v, "since")? {
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s.trim())
                    .map_err(|e| {
                        format!(
                            "`since` must be an ISO-8601 date-time with an offset, got `{s}`: {e}"
                        )
                    })?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let deliver_policy = match present(v, "deliverPolicy") {
            None => match since {
                Some(t) => DeliverPolicy::ByStartTime(t),
                None => DeliverPolicy::All,
            },
            Some(p) => {
                let name = scalar(p, "deliverPolicy")?;
                let policy = match name.trim().to_ascii_lowercase().as_str() {
                    "all" => DeliverPolicy::All,
                    "last" => DeliverPolicy::Last,
                    "new" => DeliverPolicy::New,
                    "lastpersubject" => DeliverPolicy::LastPerSubject,
                    "bystarttime" => match since {
                        Some(t) => DeliverPolicy::ByStartTime(t),
                        None => {
                            return Err("`deliverPolicy: ByStartTime` needs `since`".into());
                        }
                    },
                    "bystartsequence" => {
                        return Err(
                            "`deliverPolicy: ByStartSequence` is not supported (there is no property for the start sequence)"
                                .into(),
                        );
                    }
                    _ => {
                        return Err(format!(
                            "`deliverPolicy` must be one of {}, got `{name}`",
                            DELIVER_POLICY_NAMES.join(", ")
                        ));
                    }
                };
                if since.is_some() && !matches!(policy, DeliverPolicy::ByStartTime(_)) {
                    return Err(format!(
                        "`since` only goes with `deliverPolicy: ByStartTime`, not `{name}`"
                    ));
                }
                policy
            }
        };

        let batch_size = match present(v, "batchSize") {
            None => DEFAULT_BATCH_SIZE,
            Some(b) => {
                let text = scalar(b, "batchSize")?;
                let n: usize = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("`batchSize` must be a positive integer, got `{text}`"))?;
                if n == 0 || n > MAX_BATCH_SIZE {
                    return Err(format!(
                        "`batchSize` must be between 1 and {MAX_BATCH_SIZE} (messages read ahead), got {n}"
                    ));
                }
                n
            }
        };

        let serde_type = match present(v, "serdeType") {
            None => SerdeType::String,
            Some(s) => SerdeType::parse(&scalar(s, "serdeType")?)?,
        };

        Ok(NatsTriggerConfig {
            servers,
            credentials,
            token,
            subject,
            durable_id,
            deliver_policy,
            batch_size,
            serde_type,
        })
    }

    /// The durable consumer's name: `durableId`, or one derived from the trigger's uid.
    pub fn durable_for(&self, consumer_name: &str) -> String {
        self.durable_id
            .clone()
            .unwrap_or_else(|| default_durable_id(consumer_name))
    }

    /// The server URLs with any password hidden, for messages.
    pub fn display_url(&self) -> String {
        self.servers
            .iter()
            .map(|s| redact_url(s))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A stable durable consumer name for a trigger (`swoop-` and a 64-bit FNV-1a hash of its
/// uid, in hex), so its position survives restarts.
pub fn default_durable_id(consumer_name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in consumer_name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("swoop-{hash:016x}")
}

/// One server URL: `nats://host[:port]` (or `host[:port]`); TLS and websockets are refused.
fn check_server(server: &str) -> Result<(), String> {
    if let Some((scheme, _)) = server.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "nats" => {}
            "tls" | "ws" | "wss" => {
                return Err(format!(
                    "`url`: `{scheme}://` is not supported yet (only `nats://`)"
                ));
            }
            other => {
                return Err(format!(
                    "`url`: unknown scheme `{other}://` (use `nats://host:port`)"
                ));
            }
        }
    }
    async_nats::ServerAddr::from_str(server).map_err(|e| {
        format!(
            "`url` `{}` is not a valid NATS URL (such as `nats://localhost:4222`): {e}",
            redact_url(server)
        )
    })?;
    Ok(())
}

/// A subject (filter): dot-separated tokens, `*` a whole token, `>` only the last one.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("`subject` is empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("`subject` `{subject}` contains whitespace"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        let valid = match *token {
            "" => false,
            ">" => i == tokens.len() - 1,
            "*" => true,
            t => !t.contains('*') && !t.contains('>'),
        };
        if !valid {
            return Err(format!(
                "`subject` `{subject}` is not a valid NATS subject (no empty token; `*` and `>` fill a whole token, `>` only last)"
            ));
        }
    }
    Ok(())
}

fn check_durable(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("`durableId` is empty".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!(
            "`durableId` `{name}` must not contain whitespace, `.`, `*`, `>`, `/` or `\\`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(patch: Value) -> Value {
        let v = json!({
            "id": "t",
            "type": "io.kestra.plugin.nats.core.RealtimeTrigger",
            "url": "nats://localhost:4222",
            "subject": "orders.>",
        });
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        NatsTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> NatsTriggerConfig {
        NatsTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert_eq!(c.servers, vec!["nats://localhost:4222"]);
        assert_eq!(c.subject, "orders.>");
        assert_eq!(c.durable_id, None);
        assert_eq!(c.deliver_policy, DeliverPolicy::All);
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(c.serde_type, SerdeType::String);
        assert_eq!(c.durable_for("ns/flow/t"), default_durable_id("ns/flow/t"));
        assert!(default_durable_id("a").starts_with("swoop-"));
        assert_ne!(default_durable_id("a"), default_durable_id("b"));
    }

    #[test]
    fn all_properties() {
        let c = ok(json!({
            "url": "nats://u:secret@a:4222, nats://b:4223",
            "username": "me",
            "password": "pw",
            "durableId": "natsTrigger",
            "deliverPolicy": "new",
            "batchSize": 64,
            "serdeType": "json",
        }));
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.display_url(), "nats://u:***@a:4222,nats://b:4223");
        assert_eq!(c.durable_for("x"), "natsTrigger");
        assert_eq!(c.deliver_policy, DeliverPolicy::New);
        assert_eq!(c.batch_size, 64);
        assert_eq!(c.serde_type, SerdeType::Json);
        assert_eq!(
            ok(json!({"deliverPolicy": "LastPerSubject"})).deliver_policy,
            DeliverPolicy::LastPerSubject
        );
        assert_eq!(
            ok(json!({"deliverPolicy": "Last"})).deliver_policy,
            DeliverPolicy::Last
        );
        let since = ok(json!({"since": "2024-01-02T03:04:05Z"}));
        assert!(matches!(
            since.deliver_policy,
            DeliverPolicy::ByStartTime(_)
        ));
        let since =
            ok(json!({"since": "2024-01-02T03:04:05+01:00", "deliverPolicy": "ByStartTime"}));
        assert!(matches!(
            since.deliver_policy,
            DeliverPolicy::ByStartTime(_)
        ));
        assert_eq!(
            ok(json!({"token": "t"}))
                .token
                .unwrap()
                .resolve("token")
                .unwrap(),
            "t"
        );
        assert_eq!(
            ok(json!({"url": "localhost:4222"})).servers,
            vec!["localhost:4222"]
        );
    }

    #[test]
    fn problems() {
        assert!(err(json!({"url": null})).contains("`url` is required"));
        assert!(err(json!({"subject": null})).contains("`subject` is required"));
        assert!(err(json!({"creds": "x"})).contains("not supported yet"));
        assert!(err(json!({"url": "tls://a:4222"})).contains("not supported yet"));
        assert!(err(json!({"url": "http://a"})).contains("unknown scheme"));
        assert!(err(json!({"password": "p"})).contains("without `username`"));
        assert!(err(json!({"token": "t", "username": "u"})).contains("both"));
        assert!(err(json!({"subject": "a..b"})).contains("not a valid NATS subject"));
        assert!(err(json!({"subject": "a.>.b"})).contains("not a valid NATS subject"));
        assert!(err(json!({"subject": "a b"})).contains("whitespace"));
        assert!(err(json!({"subject": "{{ x }}"})).contains("template"));
        assert!(err(json!({"durableId": "a.b"})).contains("must not contain"));
        assert!(err(json!({"deliverPolicy": "ByStartSequence"})).contains("not supported"));
        assert!(err(json!({"deliverPolicy": "ByStartTime"})).contains("needs `since`"));
        assert!(err(json!({"deliverPolicy": "Sometimes"})).contains("must be one of"));
        assert!(
            err(json!({"deliverPolicy": "New", "since": "2024-01-02T03:04:05Z"}))
                .contains("only goes with")
        );
        assert!(err(json!({"since": "yesterday"})).contains("ISO-8601"));
        assert!(err(json!({"batchSize": 0})).contains("between 1 and 64"));
        assert!(err(json!({"batchSize": 65})).contains("between 1 and 64"));
        assert!(err(json!({"serdeType": "AVRO"})).contains("STRING or JSON"));
    }

    #[test]
    fn decoding() {
        assert_eq!(
            SerdeType::String.decode(br#"{"n": 1}"#, "the message data"),
            (json!(r#"{"n": 1}"#), None)
        );
        assert_eq!(
            SerdeType::Json.decode(br#"{"n": 1}"#, "the message data"),
            (json!({"n": 1}), None)
        );
        let (v, e) = SerdeType::Json.decode(b"this is { not json", "the message data");
        assert_eq!(v, json!("this is { not json"));
        assert!(e.unwrap().contains("not valid JSON"));
    }
}
