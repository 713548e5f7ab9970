//! JSON ↔ BSON for the MongoDB tasks.
//!
//! Into BSON: a document property (`document`, `documents`, `filter`, `projection`, `sort`)
//! is, as in Kestra, either a string — rendered, then parsed as JSON with MongoDB's extended
//! JSON v2 (`{"$oid": …}`, `{"$date": …}`, `{"$numberLong": …}`, `{"$numberDecimal": …}` …) —
//! or a map, whose strings are rendered before it is read the same way; absent or null is the
//! empty document. Rendering comes first, so a template inside a JSON string works
//! (`"{{ trigger.value | jq('.id') | first }}"`). Unlike Kestra's Java parser, the text must be
//! strict JSON: the mongo shell's `ObjectId("…")`, single quotes or unquoted keys are refused
//! with a hint.
//!
//! Out of BSON, as Kestra maps values: ObjectId → its hex string; date → ISO-8601 text
//! (`2024-05-01T10:00:00.123Z`); timestamp → ISO-8601 text of its seconds; Decimal128 → a
//! number when it has at most 15 significant digits (exact in a float), otherwise its exact
//! text; binary → base64 text; int32/int64/double/bool/null/string as themselves (a NaN or
//! infinite double → `"NaN"`, `"Infinity"`, `"-Infinity"`); documents keep their field order.
//! Types Kestra refuses (regex, JavaScript, symbol, min/max key, DBPointer, undefined) are
//! given as relaxed extended JSON (`{"$regularExpression": …}`) instead of failing.

use base64::Engine as _;
use bson::{Bson, Document};
use serde_json::{Map, Value};
use swoop_core::registry::{RunContext, TaskError};

/// The help every JSON error ends with.
const JSON_HINT: &str = "write it as JSON (MongoDB extended JSON v2, e.g. {\"_id\": {\"$oid\": \"60930c39a982931c20ef6cd6\"}}); mongo shell syntax such as ObjectId(\"…\"), single quotes or unquoted keys is not supported";

/// Whether `text` holds template syntax (its JSON is only known once rendered).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Parses a rendered JSON property.
fn parse_json(prop: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        let excerpt: String = text.chars().take(120).collect();
        let more = if text.chars().count() > 120 {
            "…"
        } else {
            ""
        };
        format!("property `{prop}` is not valid JSON ({e}) in `{excerpt}{more}`: {JSON_HINT}")
    })
}

/// Checks at build time what can be checked without rendering: a string without templates
/// must be valid JSON of the right shape (`array` for a list of documents).
pub fn check_literal(prop: &str, value: Option<&Value>, array: bool) -> Result<(), String> {
    let Some(Value::String(text)) = value else {
        return Ok(());
    };
    if is_template(text) {
        return Ok(());
    }
    match parse_json(prop, text)? {
        Value::Object(_) if !array => Ok(()),
        Value::Array(_) if array => Ok(()),
        Value::Null => Ok(()),
        other => Err(shape_error(prop, &other, array)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn shape_error(prop: &str, got: &Value, array: bool) -> String {
    if array {
        format!(
            "property `{prop}` must be a list of documents (a YAML list of maps, or a JSON array of objects), got {}",
            kind(got)
        )
    } else {
        format!(
            "property `{prop}` must be a document (a map, or a JSON object), got {}",
            kind(got)
        )
    }
}

/// The property rendered as Kestra does: a string is rendered then parsed, a map or a list has
/// its strings rendered.
fn rendered(ctx: &dyn RunContext, prop: &str, value: Option<&Value>) -> Result<Value, TaskError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(text)) => {
            let text = ctx.render(prop, text)?;
            parse_json(prop, &text).map_err(TaskError::permanent)
        }
        Some(v @ (Value::Object(_) | Value::Array(_))) => ctx.render_value(prop, v),
        Some(other) => Err(TaskError::permanent(shape_error(prop, other, false))),
    }
}

fn into_document(prop: &str, json: Value) -> Result<Document, TaskError> {
    match json {
        Value::Null => Ok(Document::new()),
        Value::Object(map) => Document::try_from(map).map_err(|e| {
            TaskError::permanent(format!(
                "property `{prop}` is not valid extended JSON: {e}; {JSON_HINT}"
            ))
        }),
        other => Err(TaskError::permanent(shape_error(prop, &other, false))),
    }
}

/// A document property (absent or null: the empty document).
pub fn document(
    ctx: &dyn RunContext,
    prop: &str,
    value: Option<&Value>,
) -> Result<Document, TaskError> {
    into_document(prop, rendered(ctx, prop, value)?)
}

/// A list of documents: a list whose items are maps or JSON strings, or one JSON string that
/// renders to an array of objects.
pub fn documents(
    ctx: &dyn RunContext,
    prop: &str,
    value: &Value,
) -> Result<Vec<Document>, TaskError> {
    let items = match value {
        Value::String(_) => match rendered(ctx, prop, Some(value))? {
            Value::Array(items) => items,
            other => return Err(TaskError::permanent(shape_error(prop, &other, true))),
        },
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| rendered(ctx, &format!("{prop}[{i}]"), Some(item)))
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(TaskError::permanent(shape_error(prop, other, true))),
    };
    if items.is_empty() {
        return Err(TaskError::permanent(format!(
            "property `{prop}` is an empty list: give at least one document"
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(_) => into_document(&format!("{prop}[{i}]"), item),
            other => Err(TaskError::permanent(shape_error(
                &format!("{prop}[{i}]"),
                &other,
                false,
            ))),
        })
        .collect()
}

/// A BSON value as Kestra outputs it (see the module comment).
pub fn to_json(value: Bson) -> Value {
    match value {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => double(f),
        Bson::String(s) => Value::String(s),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(d) => instant(d.timestamp_millis()),
        Bson::Timestamp(t) => instant(i64::from(t.time) * 1000),
        Bson::Decimal128(d) => decimal(&d.to_string()),
        Bson::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b.bytes)),
        Bson::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Bson::Document(doc) => Value::Object(document_to_json(doc)),
        other => other.into_relaxed_extjson(),
    }
}

/// A document as a JSON object, its field order kept.
pub fn document_to_json(doc: Document) -> Map<String, Value> {
    doc.into_iter().map(|(k, v)| (k, to_json(v))).collect()
}

/// An `_id` as output text: an ObjectId's hex string, a string as is, anything else its JSON
/// text (`5`, `{"a":1}`).
pub fn id_text(id: Bson) -> String {
    match to_json(id) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn double(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

fn instant(millis: i64) -> Value {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        None => Value::from(millis),
    }
}

/// A Decimal128's text as a number when a float holds it exactly enough (≤ 15 significant
/// digits), else the text itself (so that no digit is lost).
fn decimal(text: &str) -> Value {
    let mantissa = text.split(['E', 'e']).next().unwrap_or(text);
    let significant = mantissa
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|c| *c == '0')
        .count();
    if significant <= 15 {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = text.parse::<f64>()
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;
    use bson::{Binary, Decimal128, Timestamp, doc, spec::BinarySubtype};
    use serde_json::json;
    use swoop_core::testing::TestRunContext;

    #[test]
    fn bson_values_map_as_kestra_does() {
        let oid = ObjectId::parse_str("60930c39a982931c20ef6cd6").unwrap();
        let d = doc! {
            "_id": oid,
            "at": bson::DateTime::from_millis(1_714_557_600_123),
            "ts": Timestamp { time: 1_714_557_600, increment: 3 },
            "price": "12.50".parse::<Decimal128>().unwrap(),
            "huge": "12345678901234567890.1".parse::<Decimal128>().unwrap(),
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: b"hi".to_vec() },
            "n": 5_i32, "l": 6_i64, "f": 1.5, "nan": f64::NAN,
            "nested": { "tags": ["a", Bson::Null] },
            "re": Bson::try_from(json!({"$regularExpression": {"pattern": "^a", "options": "i"}})).unwrap(),
        };
        let json = Value::Object(document_to_json(d));
        assert_eq!(
            json,
            json!({
                "_id": "60930c39a982931c20ef6cd6",
                "at": "2024-05-01T10:00:00.123Z",
                "ts": "2024-05-01T10:00:00Z",
                "price": 12.5,
                "huge": "12345678901234567890.1",
                "bin": "aGk=",
                "n": 5, "l": 6, "f": 1.5, "nan": "NaN",
                "nested": {"tags": ["a", null]},
                "re": {"$regularExpression": {"pattern": "^a", "options": "i"}},
            })
        );
        // Field order is kept.
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "_id");
        assert_eq!(keys[1], "at");
    }

    #[test]
    fn ids_are_text() {
        let oid = ObjectId::parse_str("60930c39a982931c20ef6cd6").unwrap();
        assert_eq!(id_text(Bson::ObjectId(oid)), "60930c39a982931c20ef6cd6");
        assert_eq!(id_text(Bson::String("order-1".into())), "order-1");
        assert_eq!(id_text(Bson::Int32(5)), "5");
    }

    #[test]
    fn strings_are_rendered_then_parsed_as_extended_json() {
        let ctx = TestRunContext::new(json!({"trigger": {"value": "{\"order_id\": \"o-7\"}"}}));
        let text = json!(
            "{\"order_id\": \"{{ trigger.value | jq('.order_id') | first }}\", \"_id\": {\"$oid\": \"60930c39a982931c20ef6cd6\"}, \"n\": {\"$numberLong\": \"9\"}}"
        );
        let d = document(&ctx, "document", Some(&text)).unwrap();
        assert_eq!(d.get_str("order_id").unwrap(), "o-7");
        assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))));
        assert_eq!(d.get_i64("n").unwrap(), 9);

        let map = json!({"order_id": "{{ trigger.value | jq('.order_id') | first }}", "at": {"$date": "2024-05-01T10:00:00Z"}});
        let d = document(&ctx, "document", Some(&map)).unwrap();
        assert_eq!(d.get_str("order_id").unwrap(), "o-7");
        assert!(matches!(d.get("at"), Some(Bson::DateTime(_))));

        assert_eq!(document(&ctx, "filter", None).unwrap(), Document::new());
    }

    #[test]
    fn bad_documents_are_permanent_errors_with_a_hint() {
        let ctx = TestRunContext::new(json!({}));
        let e = document(&ctx, "document", Some(&json!("{_id: ObjectId(\"x\")}"))).unwrap_err();
        assert!(!e.retryable);
        assert!(
            e.message.contains("property `document` is not valid JSON"),
            "{e}"
        );
        assert!(e.message.contains("mongo shell syntax"), "{e}");
        let e = document(&ctx, "filter", Some(&json!("[1]"))).unwrap_err();
        assert!(e.message.contains("must be a document"), "{e}");
        let e = documents(&ctx, "documents", &json!([{"a": 1}, 5])).unwrap_err();
        assert!(
            e.message.contains("`documents[1]` must be a document"),
            "{e}"
        );
        let e = documents(&ctx, "documents", &json!("[]")).unwrap_err();
        assert!(e.message.contains("empty list"), "{e}");
        assert!(check_literal("document", Some(&json!("{oops")), false).is_err());
        assert!(check_literal("document", Some(&json!("{{ x }}")), false).is_ok());
        assert!(check_literal("documents", Some(&json!("{\"a\": 1}")), true).is_err());
    }

    #[test]
    fn many_documents_from_a_list_or_a_json_array() {
        let ctx = TestRunContext::new(json!({"inputs": {"n": 2}}));
        let list = json!([{"n": "{{ inputs.n }}"}, "{\"n\": {{ inputs.n }}}"]);
        let docs = documents(&ctx, "documents", &list).unwrap();
        assert_eq!(docs[0].get_str("n").unwrap(), "2");
        assert_eq!(docs[1].get_i32("n").unwrap(), 2);
        let docs = documents(&ctx, "documents", &json!("[{\"a\": 1}, {\"a\": 2}]")).unwrap();
        assert_eq!(docs.len(), 2);
    }
}
