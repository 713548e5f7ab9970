//! Rendering the script properties: lists of commands, `env`, and the Process runner's
//! `{{ workingDir }}` expression.

use serde_json::{Map, Value};
use swoop_core::flow::scalar_text;
use swoop_core::registry::{RunContext, TaskError};

/// A scalar rendered as text (a non-string is taken as written).
pub fn render_text(ctx: &dyn RunContext, prop: &str, value: &Value) -> Result<String, TaskError> {
    match value {
        Value::String(s) => ctx.render(prop, s),
        other => Ok(scalar_text(other)),
    }
}

/// A list of strings: a list (each item rendered), or one template giving a list (or a JSON
/// list), or one plain string (a list of one).
pub fn render_list(
    ctx: &dyn RunContext,
    prop: &str,
    value: &Value,
) -> Result<Vec<String>, TaskError> {
    match value {
        Value::Array(items) => items.iter().map(|i| render_text(ctx, prop, i)).collect(),
        Value::String(_) => match ctx.render_typed(prop, value)? {
            Value::Array(items) => Ok(items.iter().map(scalar_text).collect()),
            Value::String(s) => match serde_json::from_str::<Vec<Value>>(&s) {
                Ok(items) if s.trim_start().starts_with('[') => {
                    Ok(items.iter().map(scalar_text).collect())
                }
                _ => Ok(vec![s]),
            },
            other => Ok(vec![scalar_text(&other)]),
        },
        Value::Null => Ok(Vec::new()),
        other => Ok(vec![scalar_text(other)]),
    }
}

/// `env`: a map (each value rendered), or one template giving a map.
pub fn render_env(ctx: &dyn RunContext, value: &Value) -> Result<Vec<(String, String)>, TaskError> {
    const PROP: &str = "env";
    let map: Map<String, Value> = match value {
        Value::Object(map) => {
            let mut rendered = Map::new();
            for (k, v) in map {
                rendered.insert(k.clone(), Value::String(render_text(ctx, PROP, v)?));
            }
            rendered
        }
        Value::String(_) => match ctx.render_typed(PROP, value)? {
            Value::Object(map) => map,
            Value::String(s) => serde_json::from_str(&s).map_err(|e| {
                TaskError::permanent(format!(
                    "property `{PROP}` must give a map of variable name to value ({e})"
                ))
            })?,
            other => {
                return Err(TaskError::permanent(format!(
                    "property `{PROP}` must give a map of variable name to value, got {other}"
                )));
            }
        },
        Value::Null => Map::new(),
        other => {
            return Err(TaskError::permanent(format!(
                "property `{PROP}` must be a map of variable name to value, got {other}"
            )));
        }
    };
    Ok(map
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, scalar_text(&v)))
        .collect())
}

/// Replaces every `{{ workingDir }}` (any spacing) in the strings of `value` by `dir`, the
/// variable the Process runner adds to the task's expressions. (The run context renders over
/// the execution's variables only; an expression that does more with `workingDir` than print
/// it stays undefined and fails to render, saying so.)
pub fn with_working_dir(value: &Value, dir: &str) -> Value {
    match value {
        Value::String(s) => Value::String(substitute(s, dir)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| with_working_dir(i, dir)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (substitute(k, dir), with_working_dir(v, dir)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute(text: &str, dir: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let inner_end = after.find("}}");
        match inner_end {
            Some(end) if after[..end].trim() == "workingDir" => {
                out.push_str(&rest[..start]);
                out.push_str(dir);
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str(&rest[..start + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use swoop_core::testing::TestRunContext;

    #[test]
    fn working_dir_is_substituted_only_when_printed_alone() {
        assert_eq!(
            substitute("cat {{ workingDir }}/a {{workingDir}} {{ x }}", "/w"),
            "cat /w/a /w {{ x }}"
        );
        assert_eq!(
            substitute("{{ workingDir ~ 'a' }}", "/w"),
            "{{ workingDir ~ 'a' }}"
        );
        assert_eq!(substitute("no template }}", "/w"), "no template }}");
    }

    #[test]
    fn lists_come_from_lists_templates_or_one_string() {
        let ctx = TestRunContext::new(json!({"inputs": {"cmds": ["a", "b"], "n": 3}}));
        let list = |v: Value| render_list(&ctx, "commands", &v).unwrap();
        assert_eq!(list(json!(["echo {{ inputs.n }}", 5])), ["echo 3", "5"]);
        assert_eq!(list(json!("{{ inputs.cmds }}")), ["a", "b"]);
        assert_eq!(list(json!("echo hi")), ["echo hi"]);
        let env = render_env(&ctx, &json!({"A": "{{ inputs.n }}", "B": 1})).unwrap();
        assert_eq!(env, [("A".into(), "3".into()), ("B".into(), "1".into())]);
    }
}
