//! Turns the inputs a caller gave (JSON values or form text) into the typed inputs a flow
//! declares: defaults applied, required ones enforced, values coerced to their type (a JSON
//! input is parsed, so `inputs.order.country` works). Every problem is reported at once.

use serde_json::{Map, Value};
use swoop_core::flow::{Flow, InputType};

/// The flow's typed inputs from what the caller gave. Inputs the flow does not declare are
/// refused (a typo would otherwise be silently ignored).
pub fn resolve_inputs(
    flow: &Flow,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Map::new();
    for name in given.keys() {
        if !flow.inputs.iter().any(|i| &i.id == name) {
            let declared: Vec<&str> = flow.inputs.iter().map(|i| i.id.as_str()).collect();
            problems.push(if declared.is_empty() {
                format!(
                    "input `{name}` is not declared: flow `{}.{}` has no inputs",
                    flow.namespace, flow.id
                )
            } else {
                format!(
                    "input `{name}` is not declared (the flow's inputs are {})",
                    declared.join(", ")
                )
            });
        }
    }
    for input in &flow.inputs {
        let raw = given
            .get(&input.id)
            .filter(|v| !v.is_null())
            .or(input.defaults.as_ref());
        match raw {
            None if input.required => problems.push(format!(
                "input `{}` ({}) is required and has no default",
                input.id,
                type_name(input.input_type)
            )),
            None => {
                out.insert(input.id.clone(), Value::Null);
            }
            Some(v) => match coerce_value(&format!("input `{}`", input.id), input.input_type, v) {
                Ok(v) => {
                    out.insert(input.id.clone(), v);
                }
                Err(e) => problems.push(e),
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn type_name(t: InputType) -> &'static str {
    match t {
        InputType::String => "STRING",
        InputType::Int => "INT",
        InputType::Float => "FLOAT",
        InputType::Boolean => "BOOLEAN",
        InputType::Json => "JSON",
        InputType::Datetime => "DATETIME",
    }
}

/// `v` as a value of type `kind`; `what` names it in errors (``input `qty` ``).
pub(crate) fn coerce_value(what: &str, kind: InputType, v: &Value) -> Result<Value, String> {
    let bad = |why: &str| format!("{what} must be {} ({why}), got {v}", type_name(kind));
    match kind {
        InputType::String => Ok(Value::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        InputType::Int => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad("an integer")),
            _ => Err(bad("an integer")),
        },
        InputType::Float => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number")),
            _ => Err(bad("a number")),
        },
        InputType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(bad("true or false")),
            },
            _ => Err(bad("true or false")),
        },
        InputType::Json => match v {
            Value::String(s) => {
                serde_json::from_str(s).map_err(|e| bad(&format!("not valid JSON: {e}")))
            }
            other => Ok(other.clone()),
        },
        InputType::Datetime => match v {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|d| {
                    Value::String(
                        d.with_timezone(&chrono::Utc)
                            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    )
                })
                .map_err(|_| bad("an ISO-8601 date-time such as 2026-01-31T10:00:00Z")),
            _ => Err(bad("an ISO-8601 date-time string")),
        },
    }
}
