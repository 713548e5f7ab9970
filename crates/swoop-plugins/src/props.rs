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

/// For tests: `base` with `patch` applied (a null in `patch` removes the property).
#[cfg(test)]
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
}
