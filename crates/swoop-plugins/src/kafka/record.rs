//! One Kafka record copied out of librdkafka, and its decoding into Kestra's variables
//! (`key`, `value`, `topic`, `partition`, `offset`, `timestamp`, `headers`) — what the realtime
//! trigger's events and the batch rows (`Consume`, `Trigger`) both hold.

use rdkafka::message::{Headers, Message};
use serde_json::{Map, Value};

use super::serde::{Deserializer, base64, headers_json, text_or_base64};

/// One record, copied out of librdkafka.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the record has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn from_message(m: &impl Message) -> Record {
        Record {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// `topic/partition/offset`: the record's identity, and its dedup key.
    pub fn coordinates(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A record decoded into what an event carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub variables: Map<String, Value>,
    pub dedup_key: String,
    pub key: Option<String>,
    pub partition: String,
    /// Why the key or the value could not be decoded (the raw record is in `variables`).
    pub error: Option<String>,
}

/// Decodes a record into Kestra's trigger variables: `key`, `value`, `topic`, `partition`,
/// `offset`, `timestamp` (ISO-8601 UTC, milliseconds) and `headers`. When the key or the
/// value cannot be decoded, `value` holds the raw value as text (lossy UTF-8) and
/// `rawValueBase64` its exact bytes (`rawKeyBase64` likewise for a key), and `error` says why.
pub fn decode_record(
    record: &Record,
    key_deserializer: Deserializer,
    value_deserializer: Deserializer,
) -> Decoded {
    let coordinates = record.coordinates();
    let mut errors = Vec::new();
    let mut variables = Map::new();
    let key = key_deserializer.decode(record.key.as_deref());
    let value = value_deserializer.decode(record.value.as_deref());
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            errors.push(format!(
                "cannot decode the key of {coordinates} as {}: {e}",
                key_deserializer.name()
            ));
            let raw = record.key.as_deref().unwrap_or_default();
            variables.insert("rawKeyBase64".into(), Value::String(base64(raw)));
            Value::String(text_or_base64(raw))
        }
    };
    let value = match value {
        Ok(v) => v,
        Err(e) => {
            errors.push(format!(
                "cannot decode the value of {coordinates} as {}: {e}",
                value_deserializer.name()
            ));
            let raw = record.value.as_deref().unwrap_or_default();
            variables.insert("rawValueBase64".into(), Value::String(base64(raw)));
            Value::String(String::from_utf8_lossy(raw).into_owned())
        }
    };
    if !errors.is_empty() && !variables.contains_key("rawValueBase64") {
        // The value decoded but the key did not: keep the raw value at hand as well.
        if let Some(raw) = &record.value {
            variables.insert("rawValueBase64".into(), Value::String(base64(raw)));
        }
    }
    variables.insert("key".into(), key);
    variables.insert("value".into(), value);
    variables.insert("topic".into(), Value::String(record.topic.clone()));
    variables.insert("partition".into(), Value::from(record.partition));
    variables.insert("offset".into(), Value::from(record.offset));
    variables.insert(
        "timestamp".into(),
        record
            .timestamp
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or(Value::Null, |t| {
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }),
    );
    variables.insert("headers".into(), headers_json(&record.headers));
    Decoded {
        variables,
        dedup_key: coordinates,
        key: record.key.as_deref().map(text_or_base64),
        partition: format!("{}/{}", record.topic, record.partition),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
        Record {
            topic: "orders".into(),
            partition: 2,
            offset: 42,
            timestamp: Some(1_700_000_000_123),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: vec![("source".into(), Some(b"web".to_vec()))],
        }
    }

    #[test]
    fn decoded_record_has_kestras_variables() {
        let d = decode_record(
            &record(Some(b"customer-1"), Some(br#"{"order_id": "1"}"#)),
            Deserializer::String,
            Deserializer::Json,
        );
        assert_eq!(
            Value::Object(d.variables),
            json!({
                "key": "customer-1",
                "value": {"order_id": "1"},
                "topic": "orders",
                "partition": 2,
                "offset": 42,
                "timestamp": "2023-11-14T22:13:20.123Z",
                "headers": [{"source": "web"}],
            })
        );
        assert_eq!(d.dedup_key, "orders/2/42");
        assert_eq!(d.partition, "orders/2");
        assert_eq!(d.key.as_deref(), Some("customer-1"));
        assert_eq!(d.error, None);
    }

    #[test]
    fn null_key_and_value_and_no_timestamp() {
        let mut r = record(None, None);
        r.timestamp = None;
        r.headers.clear();
        let d = decode_record(&r, Deserializer::String, Deserializer::Json);
        assert_eq!(d.variables["key"], Value::Null);
        assert_eq!(d.variables["value"], Value::Null);
        assert_eq!(d.variables["timestamp"], Value::Null);
        assert_eq!(d.variables["headers"], json!([]));
        assert_eq!(d.key, None);
        assert_eq!(d.error, None);
    }

    #[test]
    fn binary_key_orders_by_its_base64() {
        let d = decode_record(
            &record(Some(&[0xff, 0x00]), Some(b"x")),
            Deserializer::Bytes,
            Deserializer::String,
        );
        assert_eq!(d.key.as_deref(), Some("/wA="));
        assert_eq!(d.variables["key"], json!("/wA="));
    }

    #[test]
    fn undecodable_value_keeps_the_raw_payload() {
        let d = decode_record(
            &record(Some(b"k"), Some(b"{broken \xff")),
            Deserializer::String,
            Deserializer::Json,
        );
        let error = d.error.unwrap();
        assert!(
            error.starts_with("cannot decode the value of orders/2/42 as JSON: not valid JSON"),
            "{error}"
        );
        assert_eq!(d.variables["value"], json!("{broken \u{fffd}"));
        assert_eq!(
            d.variables["rawValueBase64"],
            json!(base64(b"{broken \xff"))
        );
        assert_eq!(d.variables["key"], json!("k"));
        assert_eq!(d.dedup_key, "orders/2/42");
    }

    #[test]
    fn undecodable_key_is_reported_too() {
        let d = decode_record(
            &record(Some(b"abc"), Some(b"\x00\x00\x00\x07")),
            Deserializer::Integer,
            Deserializer::Integer,
        );
        assert_eq!(
            d.error.as_deref(),
            Some("cannot decode the key of orders/2/42 as INTEGER: INTEGER expects 4 bytes, got 3")
        );
        assert_eq!(d.variables["key"], json!("abc"));
        assert_eq!(d.variables["rawKeyBase64"], json!("YWJj"));
        assert_eq!(d.variables["value"], json!(7));
        assert_eq!(d.variables["rawValueBase64"], json!("AAAABw=="));
    }
}
