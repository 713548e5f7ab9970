//! Turning a record's bytes into the values the tasks see, as Kafka's own serializers wrote
//! them (`IntegerSerializer` is a 4-byte big-endian int, and so on), and matching headers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

/// How a key or a value is decoded (Kestra's `SerdeType`, less the schema-registry ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deserializer {
    /// UTF-8 text.
    String,
    /// A JSON document, parsed.
    Json,
    /// Raw bytes, shown as base64 (`BYTES`, `BYTE_ARRAY`, `BYTE_BUFFER`).
    Bytes,
    /// 2-byte big-endian signed integer.
    Short,
    /// 4-byte big-endian signed integer.
    Integer,
    /// 8-byte big-endian signed integer.
    Long,
    /// 4-byte big-endian IEEE-754 float.
    Float,
    /// 8-byte big-endian IEEE-754 double.
    Double,
    /// A UUID written as text.
    Uuid,
    /// Always null (the payload is ignored).
    Void,
}

/// Every name a deserializer property accepts (Kestra's, case-insensitive).
pub const DESERIALIZER_NAMES: &[&str] = &[
    "STRING",
    "JSON",
    "BYTES",
    "BYTE_ARRAY",
    "BYTE_BUFFER",
    "SHORT",
    "INTEGER",
    "LONG",
    "FLOAT",
    "DOUBLE",
    "UUID",
    "VOID",
    "AVRO",
    "PROTOBUF",
];

impl Deserializer {
    /// Reads a deserializer name; AVRO and PROTOBUF are known but not supported.
    pub fn parse(name: &str) -> Result<Deserializer, String> {
        Ok(match name.trim().to_ascii_uppercase().as_str() {
            "STRING" => Deserializer::String,
            "JSON" => Deserializer::Json,
            "BYTES" | "BYTE_ARRAY" | "BYTE_BUFFER" => Deserializer::Bytes,
            "SHORT" => Deserializer::Short,
            "INTEGER" => Deserializer::Integer,
            "LONG" => Deserializer::Long,
            "FLOAT" => Deserializer::Float,
            "DOUBLE" => Deserializer::Double,
            "UUID" => Deserializer::Uuid,
            "VOID" => Deserializer::Void,
            unsupported @ ("AVRO" | "PROTOBUF") => {
                return Err(format!(
                    "{unsupported} is not supported yet (use BYTES or STRING and decode in a task)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown deserializer `{other}` (one of {})",
                    DESERIALIZER_NAMES[..12].join(", ")
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Deserializer::String => "STRING",
            Deserializer::Json => "JSON",
            Deserializer::Bytes => "BYTES",
            Deserializer::Short => "SHORT",
            Deserializer::Integer => "INTEGER",
            Deserializer::Long => "LONG",
            Deserializer::Float => "FLOAT",
            Deserializer::Double => "DOUBLE",
            Deserializer::Uuid => "UUID",
            Deserializer::Void => "VOID",
        }
    }

    /// Decodes a key or a value; a missing (null) one is null.
    pub fn decode(self, bytes: Option<&[u8]>) -> Result<Value, String> {
        let Some(bytes) = bytes else {
            return Ok(Value::Null);
        };
        let fixed = |len: usize| -> Result<(), String> {
            if bytes.len() == len {
                Ok(())
            } else {
                Err(format!(
                    "{} expects {len} bytes, got {}",
                    self.name(),
                    bytes.len()
                ))
            }
        };
        let number = |f: f64| -> Result<Value, String> {
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| format!("{} value {f} is not a finite number", self.name()))
        };
        match self {
            Deserializer::String => std::str::from_utf8(bytes)
                .map(|s| Value::String(s.to_string()))
                .map_err(|e| format!("not UTF-8 text: {e}")),
            Deserializer::Json => {
                serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))
            }
            Deserializer::Bytes => Ok(Value::String(BASE64.encode(bytes))),
            Deserializer::Short => {
                fixed(2)?;
                Ok(Value::from(i16::from_be_bytes([bytes[0], bytes[1]])))
            }
            Deserializer::Integer => {
                fixed(4)?;
                let mut b = [0u8; 4];
                b.copy_from_slice(bytes);
                Ok(Value::from(i32::from_be_bytes(b)))
            }
            Deserializer::Long => {
                fixed(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                Ok(Value::from(i64::from_be_bytes(b)))
            }
            Deserializer::Float => {
                fixed(4)?;
                let mut b = [0u8; 4];
                b.copy_from_slice(bytes);
                number(f64::from(f32::from_be_bytes(b)))
            }
            Deserializer::Double => {
                fixed(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                number(f64::from_be_bytes(b))
            }
            Deserializer::Uuid => {
                let text =
                    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
                if is_uuid(text) {
                    Ok(Value::String(text.to_string()))
                } else {
                    Err(format!("`{}` is not a UUID", truncate(text, 64)))
                }
            }
            Deserializer::Void => Ok(Value::Null),
        }
    }
}

/// How a `Produce` record's key or value becomes bytes, as Kafka's Java serializers write
/// them (the same names as [`Deserializer`], which reads them back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serializer(pub Deserializer);

impl Serializer {
    pub fn parse(name: &str) -> Result<Serializer, String> {
        Deserializer::parse(name).map(Serializer)
    }

    /// The bytes of `value`; null is a null key or value (a tombstone), as is every value for
    /// VOID. STRING writes text as it is and anything else as JSON text; BYTES takes base64.
    pub fn encode(self, value: &Value) -> Result<Option<Vec<u8>>, String> {
        let kind = self.0;
        if value.is_null() || kind == Deserializer::Void {
            return Ok(None);
        }
        let name = kind.name();
        let integer = |min: i64, max: i64| -> Result<i64, String> {
            let n = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            n.filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{name} needs an integer from {min} to {max}, got {value}"))
        };
        let float = || -> Result<f64, String> {
            match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("{name} needs a number, got {value}"))
        };
        Ok(Some(match kind {
            Deserializer::String => match value {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            },
            Deserializer::Json => serde_json::to_vec(value).map_err(|e| e.to_string())?,
            Deserializer::Bytes => match value {
                Value::String(s) => BASE64
                    .decode(s.trim())
                    .map_err(|e| format!("BYTES needs base64 text: {e}"))?,
                other => return Err(format!("BYTES needs base64 text, got {other}")),
            },
            Deserializer::Short => (integer(i16::MIN.into(), i16::MAX.into())? as i16)
                .to_be_bytes()
                .to_vec(),
            Deserializer::Integer => (integer(i32::MIN.into(), i32::MAX.into())? as i32)
                .to_be_bytes()
                .to_vec(),
            Deserializer::Long => integer(i64::MIN, i64::MAX)?.to_be_bytes().to_vec(),
            Deserializer::Float => (float()? as f32).to_be_bytes().to_vec(),
            Deserializer::Double => float()?.to_be_bytes().to_vec(),
            Deserializer::Uuid => match value {
                Value::String(s) if is_uuid(s.trim()) => s.trim().as_bytes().to_vec(),
                other => return Err(format!("UUID needs a UUID as text, got {other}")),
            },
            Deserializer::Void => unreachable!("handled above"),
        }))
    }
}

/// `8-4-4-4-12` hexadecimal digits (what Kafka's `UUIDDeserializer` reads).
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Raw bytes as text when they are UTF-8, else as base64 (for keys, and the ordering key).
pub fn text_or_base64(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => BASE64.encode(bytes),
    }
}

pub fn base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The record's headers as Kestra shows them: a list of single-entry maps, values as UTF-8
/// text (a null header value is null).
pub fn headers_json(headers: &[(String, Option<Vec<u8>>)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                let mut entry = Map::new();
                entry.insert(
                    name.clone(),
                    value.as_deref().map_or(Value::Null, |v| {
                        Value::String(String::from_utf8_lossy(v).into_owned())
                    }),
                );
                Value::Object(entry)
            })
            .collect(),
    )
}

/// Whether the record's headers carry every filter's exact value (a header repeated under one
/// name matches when any of its values does). No filters match everything.
pub fn headers_match(filters: &[(String, String)], headers: &[(String, Option<Vec<u8>>)]) -> bool {
    filters.iter().all(|(name, wanted)| {
        headers
            .iter()
            .any(|(n, v)| n == name && v.as_deref().is_some_and(|v| v == wanted.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(name: &str) -> Deserializer {
        Deserializer::parse(name).unwrap()
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(d("string"), Deserializer::String);
        assert_eq!(d("Json"), Deserializer::Json);
        assert_eq!(d("BYTE_ARRAY"), Deserializer::Bytes);
        assert_eq!(d("BYTE_BUFFER"), Deserializer::Bytes);
        let e = Deserializer::parse("AVRO").unwrap_err();
        assert_eq!(
            e,
            "AVRO is not supported yet (use BYTES or STRING and decode in a task)"
        );
        assert!(
            Deserializer::parse("protobuf")
                .unwrap_err()
                .starts_with("PROTOBUF is not supported yet")
        );
        assert!(
            Deserializer::parse("XML")
                .unwrap_err()
                .contains("unknown deserializer `XML`")
        );
    }

    #[test]
    fn null_is_null_for_every_deserializer() {
        for name in &DESERIALIZER_NAMES[..12] {
            assert_eq!(d(name).decode(None), Ok(Value::Null), "{name}");
        }
    }

    #[test]
    fn string() {
        assert_eq!(d("STRING").decode(Some(b"h\xc3\xa9")), Ok(json!("hé")));
        assert_eq!(d("STRING").decode(Some(b"")), Ok(json!("")));
        let e = d("STRING").decode(Some(b"\xff\xfe")).unwrap_err();
        assert!(e.starts_with("not UTF-8 text"), "{e}");
    }

    #[test]
    fn json() {
        assert_eq!(
            d("JSON").decode(Some(br#"{"order_id": "1", "n": [1, 2.5]}"#)),
            Ok(json!({"order_id": "1", "n": [1, 2.5]}))
        );
        assert_eq!(d("JSON").decode(Some(b"42")), Ok(json!(42)));
        let e = d("JSON").decode(Some(b"{not json")).unwrap_err();
        assert!(e.starts_with("not valid JSON"), "{e}");
        assert!(d("JSON").decode(Some(b"")).is_err());
    }

    #[test]
    fn bytes() {
        assert_eq!(d("BYTES").decode(Some(&[0, 1, 255])), Ok(json!("AAH/")));
        assert_eq!(d("BYTES").decode(Some(b"")), Ok(json!("")));
    }

    #[test]
    fn numbers_are_big_endian() {
        assert_eq!(
            d("SHORT").decode(Some(&(-2i16).to_be_bytes())),
            Ok(json!(-2))
        );
        assert_eq!(
            d("INTEGER").decode(Some(&42i32.to_be_bytes())),
            Ok(json!(42))
        );
        assert_eq!(
            d("INTEGER").decode(Some(&[0xff, 0xff, 0xff, 0xff])),
            Ok(json!(-1))
        );
        assert_eq!(
            d("LONG").decode(Some(&1_700_000_000_000i64.to_be_bytes())),
            Ok(json!(1_700_000_000_000i64))
        );
        assert_eq!(
            d("FLOAT").decode(Some(&1.5f32.to_be_bytes())),
            Ok(json!(1.5))
        );
        assert_eq!(
            d("DOUBLE").decode(Some(&(-0.25f64).to_be_bytes())),
            Ok(json!(-0.25))
        );
    }

    #[test]
    fn numbers_of_the_wrong_length_fail() {
        assert_eq!(
            d("SHORT").decode(Some(b"abc")),
            Err("SHORT expects 2 bytes, got 3".into())
        );
        assert_eq!(
            d("INTEGER").decode(Some(b"42")),
            Err("INTEGER expects 4 bytes, got 2".into())
        );
        assert_eq!(
            d("LONG").decode(Some(&[0; 4])),
            Err("LONG expects 8 bytes, got 4".into())
        );
        assert_eq!(
            d("FLOAT").decode(Some(&[0; 8])),
            Err("FLOAT expects 4 bytes, got 8".into())
        );
        assert_eq!(
            d("DOUBLE").decode(Some(b"")),
            Err("DOUBLE expects 8 bytes, got 0".into())
        );
        assert!(d("DOUBLE").decode(Some(&f64::NAN.to_be_bytes())).is_err());
    }

    #[test]
    fn uuid() {
        let u = "0191e0b6-2a9c-7c3e-8f4e-5d6c7b8a9f01";
        assert_eq!(d("UUID").decode(Some(u.as_bytes())), Ok(json!(u)));
        assert!(
            d("UUID")
                .decode(Some(b"not-a-uuid"))
                .unwrap_err()
                .contains("is not a UUID")
        );
        assert!(d("UUID").decode(Some(b"\xff")).is_err());
    }

    #[test]
    fn void_ignores_the_payload() {
        assert_eq!(d("VOID").decode(Some(b"anything")), Ok(Value::Null));
    }

    #[test]
    fn text_or_base64_keeps_text() {
        assert_eq!(text_or_base64(b"customer-1"), "customer-1");
        assert_eq!(text_or_base64(&[0xff, 0x00]), "/wA=");
    }

    fn h(name: &str, value: Option<&str>) -> (String, Option<Vec<u8>>) {
        (name.to_string(), value.map(|v| v.as_bytes().to_vec()))
    }

    #[test]
    fn headers_are_single_entry_maps() {
        let headers = vec![
            h("source", Some("web")),
            h("trace", None),
            h("source", Some("app")),
        ];
        assert_eq!(
            headers_json(&headers),
            json!([{"source": "web"}, {"trace": null}, {"source": "app"}])
        );
        assert_eq!(headers_json(&[]), json!([]));
    }

    #[test]
    fn header_filters_need_every_exact_value() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let headers = vec![
            h("type", Some("order")),
            h("region", Some("eu")),
            h("empty", None),
        ];
        assert!(headers_match(&[], &headers));
        assert!(headers_match(&[], &[]));
        assert!(headers_match(&f(&[("type", "order")]), &headers));
        assert!(headers_match(
            &f(&[("type", "order"), ("region", "eu")]),
            &headers
        ));
        assert!(!headers_match(
            &f(&[("type", "order"), ("region", "us")]),
            &headers
        ));
        assert!(!headers_match(&f(&[("type", "Order")]), &headers));
        assert!(!headers_match(&f(&[("missing", "x")]), &headers));
        assert!(!headers_match(&f(&[("empty", "")]), &headers));
        assert!(!headers_match(&f(&[("type", "order")]), &[]));
        // A repeated header matches through any of its values.
        let repeated = vec![h("type", Some("a")), h("type", Some("b"))];
        assert!(headers_match(&f(&[("type", "b")]), &repeated));
    }

    #[test]
    fn every_serializer_writes_what_its_deserializer_reads() {
        let cases = [
            ("STRING", json!("héllo")),
            ("JSON", json!({"a": [1, 2]})),
            ("BYTES", json!("AAEC")),
            ("SHORT", json!(-2)),
            ("INTEGER", json!(123456)),
            ("LONG", json!(-9_000_000_000_i64)),
            ("FLOAT", json!(1.5)),
            ("DOUBLE", json!(2.25)),
            ("UUID", json!("123e4567-e89b-12d3-a456-426614174000")),
        ];
        for (name, value) in cases {
            let bytes = Serializer::parse(name).unwrap().encode(&value).unwrap();
            assert_eq!(
                d(name).decode(bytes.as_deref()),
                Ok(value.clone()),
                "{name}"
            );
        }
        assert_eq!(
            Serializer::parse("VOID").unwrap().encode(&json!("x")),
            Ok(None)
        );
        assert_eq!(
            Serializer::parse("LONG")
                .unwrap()
                .encode(&json!("42"))
                .unwrap(),
            Some(42i64.to_be_bytes().to_vec())
        );
        assert_eq!(
            Serializer::parse("STRING")
                .unwrap()
                .encode(&json!(7))
                .unwrap(),
            Some(b"7".to_vec())
        );
        let e = Serializer::parse("INTEGER")
            .unwrap()
            .encode(&json!("abc"))
            .unwrap_err();
        assert!(e.contains("INTEGER needs an integer"), "{e}");
        let e = Serializer::parse("SHORT")
            .unwrap()
            .encode(&json!(70000))
            .unwrap_err();
        assert!(e.contains("from -32768 to 32767"), "{e}");
        assert!(
            Serializer::parse("UUID")
                .unwrap()
                .encode(&json!("nope"))
                .is_err()
        );
    }
}
