//! Reading a trigger's properties (already checked against its schema by validation) in the
//! plugins' `config.rs` files: what every source needs the same way.

use serde_json::Value;

/// The property, unless absent or null.
pub fn present<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|x| !x.is_null())
}

/// A scalar as text (numbers and booleans too).
pub fn scalar(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("`{what}` must be text, got {other}")),
    }
}

/// Trigger properties are not rendered (a trigger fires before any execution exists), so a
/// template would be taken literally: refuse it.
pub fn no_template(source: &str, what: &str, value: &str) -> Result<(), String> {
    if value.contains("{{") || value.contains("{%") {
        Err(format!(
            "`{what}` is a template; the {source} trigger's properties are not rendered, write the value itself"
        ))
    } else {
        Ok(())
    }
}

/// An optional text property (not a template).
pub fn optional_text(source: &str, v: &Value, name: &str) -> Result<Option<String>, String> {
    match present(v, name) {
        None => Ok(None),
        Some(x) => {
            let text = scalar(x, name)?;
            no_template(source, name, &text)?;
            Ok(Some(text))
        }
    }
}

/// A text property that may be a template, as Kestra's "dynamic" properties are: credentials
/// are usually written `{{ secret('AWS_ACCESS_KEY_ID') }}`. The syntax is checked when the flow
/// is built; the text is rendered each time the trigger connects, with `secret()` and no
/// variables (a trigger fires before any execution exists), so a wrong or missing secret shows
/// as the trigger's status. `Debug` never shows the text: it may be a secret written as is.
#[derive(Clone, PartialEq, Eq)]
pub struct DynamicText(String);

impl DynamicText {
    /// Checks the template syntax of `text`, the value of the property `name`.
    pub fn parse(name: &str, text: String) -> Result<DynamicText, String> {
        swoop_core::template::check_syntax(&text).map_err(|e| format!("`{name}`: {e}"))?;
        Ok(DynamicText(text))
    }

    /// The text as written (a template or a plain value).
    pub fn as_written(&self) -> &str {
        &self.0
    }

    /// The value: the text, rendered when it is a template. `name` names the property in the
    /// error.
    pub fn resolve(&self, name: &str) -> Result<String, String> {
        swoop_core::template::Templates::global()
            .render(&self.0, &Value::Object(Default::default()))
            .map_err(|e| format!("`{name}`: {e}"))
    }
}

impl std::fmt::Debug for DynamicText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynamicText(..)")
    }
}

/// An optional text property that may be a template (see [`DynamicText`]).
pub fn optional_dynamic(v: &Value, name: &str) -> Result<Option<DynamicText>, String> {
    match present(v, name) {
        None => Ok(None),
        Some(x) => DynamicText::parse(name, scalar(x, name)?).map(Some),
    }
}

/// `username` and `password`, either of which may be a `secret()` template (see
/// [`DynamicText`]): the MQTT and NATS triggers' credentials.
#[derive(Debug, Clone)]
pub struct UserPassword {
    pub username: DynamicText,
    pub password: Option<DynamicText>,
}

impl UserPassword {
    /// Reads `username` and `password`; a password without a username is refused.
    pub fn from_json(v: &Value) -> Result<Option<UserPassword>, String> {
        let username = optional_dynamic(v, "username")?;
        let password = optional_dynamic(v, "password")?;
        match (username, password) {
            (Some(username), password) => Ok(Some(UserPassword { username, password })),
            (None, Some(_)) => Err("`password` is set without `username`".into()),
            (None, None) => Ok(None),
        }
    }

    /// The username and the password (empty when unset), rendered.
    pub fn resolve(&self) -> Result<(String, String), String> {
        let password = match &self.password {
            Some(p) => p.resolve("password")?,
            None => String::new(),
        };
        Ok((self.username.resolve("username")?, password))
    }
}

/// A URL fit for messages: `scheme://user:secret@host/…` → `scheme://user:***@host/…`. A lone
/// userinfo (`redis://secret@host`, `nats://token@host`) is hidden whole: for Redis it is the
/// password, for NATS a token.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None if !userinfo.is_empty() => "***".to_string(),
        None => String::new(),
    };
    format!(
        "{}{redacted}{}{}",
        &url[..scheme_end],
        &authority[at..],
        &rest[authority_end..]
    )
}

/// An error and its sources, each once, joined by `: ` (SDK errors say little at the top: the
/// reason is in their sources).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// How a text payload becomes its trigger variable (`serdeType` of the sources that offer
/// STRING and JSON: AMQP, NATS, Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerdeType {
    /// UTF-8 text, invalid bytes replaced (the default).
    #[default]
    String,
    /// Parsed as JSON; a payload that is not JSON makes a FAILED execution holding the raw text.
    Json,
}

/// The names `serdeType` accepts.
pub const SERDE_TYPE_NAMES: &[&str] = &["STRING", "JSON"];

impl SerdeType {
    pub fn parse(name: &str) -> Result<SerdeType, String> {
        match name.trim().to_ascii_uppercase().as_str() {
            "STRING" => Ok(SerdeType::String),
            "JSON" => Ok(SerdeType::Json),
            _ => Err(format!("`serdeType` must be STRING or JSON, got `{name}`")),
        }
    }

    /// The payload as its variable, and the decode error when it does not decode (the raw text
    /// is then the value). `subject` names the payload in the error (`the message`).
    pub fn decode(self, raw: &[u8], subject: &str) -> (Value, Option<String>) {
        let text = || Value::String(String::from_utf8_lossy(raw).into_owned());
        match self {
            SerdeType::String => (text(), None),
            SerdeType::Json => match serde_json::from_slice(raw) {
                Ok(v) => (v, None),
                Err(e) => (text(), Some(format!("{subject} is not valid JSON: {e}"))),
            },
        }
    }
}

/// Whether any string in `v` is a template (then it is checked when rendered).
pub fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{") || s.contains("{%"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(m) => m.values().any(has_template),
        _ => false,
    }
}

/// For tests: `base` with `patch` applied (a null in `patch` removes the property).
#[cfg(test)]
#[allow(dead_code)] // used by the realtime source families' tests, absent in some feature sets
pub(crate) fn patched(mut base: Value, patch: Value) -> Value {
    if let (Some(target), Some(changes)) = (base.as_object_mut(), patch.as_object()) {
        for (k, x) in changes {
            if x.is_null() {
                target.remove(k);
            } else {
                target.insert(k.clone(), x.clone());
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_scalars_and_refuses_templates() {
        let v = json!({"a": 5, "b": "x", "c": null, "d": "{{ secret('X') }}", "e": [1]});
        assert_eq!(
            optional_text("Test", &v, "a").unwrap().as_deref(),
            Some("5")
        );
        assert_eq!(
            optional_text("Test", &v, "b").unwrap().as_deref(),
            Some("x")
        );
        assert_eq!(optional_text("Test", &v, "c").unwrap(), None);
        assert!(
            optional_text("Test", &v, "d")
                .unwrap_err()
                .contains("the Test trigger")
        );
        assert!(optional_text("Test", &v, "e").is_err());
    }

    #[test]
    fn user_and_password_may_be_secrets() {
        // SAFETY: the variable's name is used by this test alone.
        unsafe { std::env::set_var("SWOOP_SECRET_PROPS_TEST_PASSWORD", "pw") };
        let v = json!({"username": "me", "password": "{{ secret('PROPS_TEST_PASSWORD') }}"});
        let credentials = UserPassword::from_json(&v).unwrap().unwrap();
        assert_eq!(credentials.resolve().unwrap(), ("me".into(), "pw".into()));
        let alone = UserPassword::from_json(&json!({"username": "me"}))
            .unwrap()
            .unwrap();
        assert_eq!(alone.resolve().unwrap(), ("me".into(), String::new()));
        assert!(UserPassword::from_json(&json!({})).unwrap().is_none());
        assert!(
            UserPassword::from_json(&json!({"password": "x"}))
                .unwrap_err()
                .contains("without `username`")
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://user:secret@host:5672/v"),
            "amqp://user:***@host:5672/v"
        );
        assert_eq!(redact_url("redis://:secret@host/0"), "redis://:***@host/0");
        assert_eq!(redact_url("redis://secret@host"), "redis://***@host");
        assert_eq!(redact_url("nats://token@a:4222"), "nats://***@a:4222");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("amqp://host"), "amqp://host");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "dispatch failure: connection refused");
    }

    #[test]
    fn dynamic_text_renders_secrets_when_resolved() {
        // SAFETY: the variable's name is used by this test alone.
        unsafe { std::env::set_var("SWOOP_SECRET_PROPS_TEST_KEY", "AKIA-test") };
        let v = json!({"a": "{{ secret('PROPS_TEST_KEY') }}", "b": "plain", "c": "{{ oops"});
        let a = optional_dynamic(&v, "a").unwrap().unwrap();
        assert_eq!(a.resolve("a").unwrap(), "AKIA-test");
        assert_eq!(format!("{a:?}"), "DynamicText(..)");
        let b = optional_dynamic(&v, "b").unwrap().unwrap();
        assert_eq!(b.resolve("b").unwrap(), "plain");
        assert_eq!(b.as_written(), "plain");
        assert!(optional_dynamic(&v, "c").unwrap_err().starts_with("`c`: "));
        assert_eq!(optional_dynamic(&v, "d").unwrap(), None);
        let missing = DynamicText::parse("m", "{{ secret('PROPS_TEST_NOT_SET') }}".into()).unwrap();
        let e = missing.resolve("m").unwrap_err();
        assert!(e.contains("SWOOP_SECRET_PROPS_TEST_NOT_SET"), "{e}");
    }
}
