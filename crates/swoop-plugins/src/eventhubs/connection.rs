//! How a trigger reaches Event Hubs' Kafka endpoint: the namespace's host, and the SASL PLAIN
//! login every Event Hubs namespace (Standard tier and up) accepts on port 9093 over TLS —
//! username `$ConnectionString`, password a connection string. This module owns parsing
//! connection strings and turning Kestra's three kinds of credentials into that login:
//!
//! - `connectionString`: sent as it is (its `Endpoint` names the namespace);
//! - `sharedKeyAccountName` + `sharedKeyAccountAccessKey` (a SAS policy and its key): a
//!   connection string is made from them, the namespace and the event hub;
//! - `sasToken`: likewise, with `SharedAccessSignature=<token>`.
//!
//! Nothing here prints a secret: errors name the part of a connection string, never its value.

use std::collections::BTreeMap;

/// The port of Event Hubs' Kafka endpoint.
pub const KAFKA_PORT: u16 = 9093;
/// The Kafka port of the Event Hubs emulator (`UseDevelopmentEmulator=true`), plaintext.
pub const EMULATOR_KAFKA_PORT: u16 = 9092;
/// What a bare namespace name is completed with (Azure's public cloud).
pub const SERVICE_BUS_SUFFIX: &str = ".servicebus.windows.net";
/// The SASL username of a connection-string login.
pub const SASL_USERNAME: &str = "$ConnectionString";

/// How a connection string should look, for error messages.
const EXPECTED: &str = "expected `Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<policy>;SharedAccessKey=<key>`, as the Azure portal shows under the namespace's or the event hub's Shared access policies";

/// A connection string, checked. `Debug` hides the text (it holds a key).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The namespace's host, from `Endpoint` (`<namespace>.servicebus.windows.net`).
    pub host: String,
    /// `EntityPath`: the event hub the policy belongs to, when it is an event hub's policy.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: the emulator's plaintext Kafka port.
    pub emulator: bool,
    text: String,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("entity_path", &self.entity_path)
            .field("emulator", &self.emulator)
            .finish_non_exhaustive()
    }
}

impl ConnectionString {
    /// Parses `Key=Value;Key=Value…` (keys case-insensitive, values may hold `=`, a trailing
    /// `;` is fine). `Endpoint` is required, and either `SharedAccessKeyName` with
    /// `SharedAccessKey` or `SharedAccessSignature`. Other parts are left to Event Hubs.
    pub fn parse(text: &str) -> Result<ConnectionString, String> {
        let mut parts: BTreeMap<String, String> = BTreeMap::new();
        for (i, part) in text.split(';').map(str::trim).enumerate() {
            if part.is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "part {} has no `=` (parts are `Key=Value`, separated by `;`); {EXPECTED}",
                    i + 1
                ));
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(format!("part {} has no key before `=`; {EXPECTED}", i + 1));
            }
            if parts
                .insert(key.clone(), value.trim().to_string())
                .is_some()
            {
                return Err(format!("it has `{key}` twice"));
            }
        }
        let endpoint = parts
            .get("endpoint")
            .ok_or_else(|| format!("it has no `Endpoint`; {EXPECTED}"))?;
        let host = endpoint_host(endpoint)?;
        let key_name = parts.get("sharedaccesskeyname").filter(|v| !v.is_empty());
        let key = parts.get("sharedaccesskey").filter(|v| !v.is_empty());
        let signature = parts.get("sharedaccesssignature").filter(|v| !v.is_empty());
        match (key_name, key, signature) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (Some(_), None, _) => {
                return Err("it has `SharedAccessKeyName` but no `SharedAccessKey`".into());
            }
            (None, Some(_), _) => {
                return Err("it has `SharedAccessKey` but no `SharedAccessKeyName`".into());
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(
                    "it has both a shared access key and a `SharedAccessSignature`: keep one"
                        .into(),
                );
            }
            (None, None, None) => {
                return Err(format!(
                    "it has no credentials (`SharedAccessKeyName` and `SharedAccessKey`, or `SharedAccessSignature`); {EXPECTED}"
                ));
            }
        }
        let entity_path = parts.get("entitypath").filter(|v| !v.is_empty()).cloned();
        let emulator = match parts.get("usedevelopmentemulator") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err("`UseDevelopmentEmulator` must be true or false".into()),
        };
        Ok(ConnectionString {
            host,
            entity_path,
            emulator,
            text: text.trim().to_string(),
        })
    }

    /// A connection string for a SAS policy's key, scoped to the event hub (which a namespace
    /// policy's key signs as well as an event hub policy's).
    pub fn from_shared_key(
        host: &str,
        event_hub: &str,
        key_name: &str,
        key: &str,
    ) -> Result<ConnectionString, String> {
        no_separator("sharedKeyAccountName", key_name)?;
        no_separator("sharedKeyAccountAccessKey", key)?;
        ConnectionString::parse(&format!(
            "Endpoint=sb://{host}/;SharedAccessKeyName={key_name};SharedAccessKey={key};EntityPath={event_hub}"
        ))
        .map_err(|e| format!("the connection string made from `sharedKeyAccountName`: {e}"))
    }

    /// A connection string for a SAS token (`SharedAccessSignature sr=…&sig=…&se=…&skn=…`; the
    /// leading `SharedAccessSignature ` is added when the token lacks it).
    pub fn from_sas_token(
        host: &str,
        event_hub: &str,
        token: &str,
    ) -> Result<ConnectionString, String> {
        no_separator("sasToken", token)?;
        let token = token.trim();
        let token = if token.starts_with("SharedAccessSignature ") {
            token.to_string()
        } else {
            format!("SharedAccessSignature {}", token.trim_start_matches('?'))
        };
        ConnectionString::parse(&format!(
            "Endpoint=sb://{host}/;SharedAccessSignature={token};EntityPath={event_hub}"
        ))
        .map_err(|e| format!("the connection string made from `sasToken`: {e}"))
    }

    /// The Kafka client properties of a login with this connection string.
    pub fn kafka_properties(&self) -> Vec<(&'static str, String)> {
        let (port, protocol) = if self.emulator {
            (EMULATOR_KAFKA_PORT, "SASL_PLAINTEXT")
        } else {
            (KAFKA_PORT, "SASL_SSL")
        };
        vec![
            ("bootstrap.servers", format!("{}:{port}", self.host)),
            ("security.protocol", protocol.to_string()),
            ("sasl.mechanism", "PLAIN".to_string()),
            ("sasl.username", SASL_USERNAME.to_string()),
            ("sasl.password", self.text.clone()),
        ]
    }

    /// Checks that the connection string belongs to this event hub (`EntityPath`) and to the
    /// trigger's `namespace`, when it has one.
    pub fn check_scope(&self, event_hub: &str, namespace: Option<&str>) -> Result<(), String> {
        if let Some(path) = &self.entity_path
            && path != event_hub
        {
            return Err(format!(
                "`connectionString` is for the event hub `{path}` (its `EntityPath`), not `eventHubName` `{event_hub}`"
            ));
        }
        if let Some(namespace) = namespace {
            let expected = namespace_host(namespace);
            if !self.host.eq_ignore_ascii_case(&expected) && !self.emulator {
                return Err(format!(
                    "`connectionString` is for the namespace `{}` (its `Endpoint`), not `namespace` `{namespace}`",
                    self.host
                ));
            }
        }
        Ok(())
    }
}

/// `<namespace>.servicebus.windows.net` for a bare name; a name with a dot is a host already
/// (another cloud's, such as `<namespace>.servicebus.chinacloudapi.cn`).
pub fn namespace_host(namespace: &str) -> String {
    let namespace = namespace.trim();
    if namespace.contains('.') {
        namespace.to_ascii_lowercase()
    } else {
        format!("{}{SERVICE_BUS_SUFFIX}", namespace.to_ascii_lowercase())
    }
}

/// Checks a `namespace` property: a name, or a host.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    let valid = !namespace.is_empty()
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !namespace.starts_with(['-', '.'])
        && !namespace.ends_with(['-', '.']);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`namespace` `{namespace}` is not an Event Hubs namespace (its name, such as `my-namespace`, or its host, such as `my-namespace.servicebus.windows.net`)"
        ))
    }
}

/// The host of an `Endpoint` such as `sb://name.servicebus.windows.net/`.
fn endpoint_host(endpoint: &str) -> Result<String, String> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "its `Endpoint` `{endpoint}` has no host name (expected `sb://<namespace>.servicebus.windows.net/`)"
        ));
    }
    Ok(host.to_ascii_lowercase())
}

/// A value placed into a connection string must not split it.
fn no_separator(name: &str, value: &str) -> Result<(), String> {
    if value.contains(';') || value.trim().is_empty() {
        Err(format!("`{name}` is empty or holds a `;`"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Ab3+/c9dEfGhIjKlMnOpQrStUvWxYz0123456789ab=";

    fn props(c: &ConnectionString) -> BTreeMap<&'static str, String> {
        c.kafka_properties().into_iter().collect()
    }

    #[test]
    fn a_namespace_connection_string_becomes_the_kafka_login() {
        let text = format!(
            "Endpoint=sb://my-ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"
        );
        let c = ConnectionString::parse(&text).expect("parses");
        assert_eq!(c.host, "my-ns.servicebus.windows.net");
        assert_eq!(c.entity_path, None);
        let p = props(&c);
        assert_eq!(p["bootstrap.servers"], "my-ns.servicebus.windows.net:9093");
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "PLAIN");
        assert_eq!(p["sasl.username"], "$ConnectionString");
        // The password is the connection string itself, `=` in the key included.
        assert_eq!(p["sasl.password"], text);
        c.check_scope("orders", Some("my-ns"))
            .expect("same namespace");
        c.check_scope("orders", Some("my-ns.servicebus.windows.net"))
            .expect("same namespace, as a host");
        c.check_scope("orders", None)
            .expect("no namespace to compare");
    }

    #[test]
    fn entity_path_must_name_the_event_hub() {
        let c = ConnectionString::parse(&format!(
            "endpoint=sb://My-Ns.servicebus.windows.net/;sharedaccesskeyname=listen;sharedaccesskey={KEY};entitypath=orders;"
        ))
        .expect("keys are case-insensitive and a trailing `;` is fine");
        assert_eq!(c.host, "my-ns.servicebus.windows.net");
        assert_eq!(c.entity_path.as_deref(), Some("orders"));
        c.check_scope("orders", None).expect("the right event hub");
        let e = c.check_scope("refunds", None).unwrap_err();
        assert_eq!(
            e,
            "`connectionString` is for the event hub `orders` (its `EntityPath`), not `eventHubName` `refunds`"
        );
        let e = c.check_scope("orders", Some("other-ns")).unwrap_err();
        assert!(
            e.contains("for the namespace `my-ns.servicebus.windows.net`"),
            "{e}"
        );
        assert!(e.contains("not `namespace` `other-ns`"), "{e}");
    }

    #[test]
    fn bad_connection_strings_are_explained_without_the_secret() {
        let err = |t: &str| ConnectionString::parse(t).unwrap_err();
        let e = err("just-a-key-abc123");
        assert!(e.starts_with("part 1 has no `=`"), "{e}");
        assert!(!e.contains("abc123"), "the secret is not repeated: {e}");
        let e = err(&format!("SharedAccessKeyName=p;SharedAccessKey={KEY}"));
        assert!(e.starts_with("it has no `Endpoint`"), "{e}");
        let e = err("Endpoint=sb://ns.servicebus.windows.net/");
        assert!(e.starts_with("it has no credentials"), "{e}");
        let e = err("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=p");
        assert_eq!(e, "it has `SharedAccessKeyName` but no `SharedAccessKey`");
        let e = err(&format!(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey={KEY}"
        ));
        assert_eq!(e, "it has `SharedAccessKey` but no `SharedAccessKeyName`");
        let e = err(&format!(
            "Endpoint=sb:///;SharedAccessKeyName=p;SharedAccessKey={KEY}"
        ));
        assert!(e.contains("has no host name"), "{e}");
        let e = err(&format!(
            "Endpoint=sb://a/;Endpoint=sb://b/;SharedAccessKeyName=p;SharedAccessKey={KEY}"
        ));
        assert_eq!(e, "it has `endpoint` twice");
        let e = err(&format!(
            "Endpoint=sb://a/;SharedAccessKeyName=p;SharedAccessKey={KEY};SharedAccessSignature=x"
        ));
        assert!(e.contains("keep one"), "{e}");
        let e = err(&format!(
            "Endpoint=sb://a/;SharedAccessKeyName=p;SharedAccessKey={KEY};UseDevelopmentEmulator=yes"
        ));
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn shared_key_and_sas_token_make_connection_strings() {
        let host = namespace_host("my-ns");
        assert_eq!(host, "my-ns.servicebus.windows.net");
        let c = ConnectionString::from_shared_key(&host, "orders", "listen", KEY).expect("made");
        assert_eq!(
            props(&c)["sasl.password"],
            format!(
                "Endpoint=sb://my-ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey={KEY};EntityPath=orders"
            )
        );
        assert_eq!(
            props(&c)["bootstrap.servers"],
            "my-ns.servicebus.windows.net:9093"
        );

        let c = ConnectionString::from_sas_token(&host, "orders", "sr=x&sig=y&se=1&skn=listen")
            .expect("made");
        assert_eq!(
            props(&c)["sasl.password"],
            "Endpoint=sb://my-ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1&skn=listen;EntityPath=orders"
        );
        let c =
            ConnectionString::from_sas_token(&host, "orders", "SharedAccessSignature sr=x&sig=y")
                .expect("made");
        assert!(props(&c)["sasl.password"].contains("=SharedAccessSignature sr=x&sig=y;"));

        let e = ConnectionString::from_shared_key(&host, "orders", "a;b", KEY).unwrap_err();
        assert_eq!(e, "`sharedKeyAccountName` is empty or holds a `;`");
        let e = ConnectionString::from_sas_token(&host, "orders", " ").unwrap_err();
        assert_eq!(e, "`sasToken` is empty or holds a `;`");
    }

    #[test]
    fn other_clouds_and_the_emulator() {
        assert_eq!(
            namespace_host("ns.servicebus.chinacloudapi.cn"),
            "ns.servicebus.chinacloudapi.cn"
        );
        check_namespace("my-ns").expect("a name");
        check_namespace("my-ns.servicebus.windows.net").expect("a host");
        assert!(
            check_namespace("my ns")
                .unwrap_err()
                .contains("not an Event Hubs namespace")
        );
        assert!(check_namespace("").is_err());

        let c = ConnectionString::parse(
            "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
        )
        .expect("the emulator's connection string");
        let p = props(&c);
        assert_eq!(p["bootstrap.servers"], "localhost:9092");
        assert_eq!(p["security.protocol"], "SASL_PLAINTEXT");
        c.check_scope("eh1", Some("anything"))
            .expect("the emulator has no namespace");
    }

    #[test]
    fn debug_hides_the_key() {
        let c = ConnectionString::parse(&format!(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=p;SharedAccessKey={KEY}"
        ))
        .expect("parses");
        assert!(!format!("{c:?}").contains(KEY));
    }
}
