//! An entry the broker delivered (one message, or a batch of them) as events: Kestra's
//! trigger variables (`key`, `value`, `properties`, `topic`, `eventTime` when set,
//! `messageId`), the dedup key (the message id, `ledger:entry:partition:batchIndex`), the
//! ordering key (the message's ordering key, else its key) and the partition (the topic
//! partition's name).
//!
//! What cannot be read becomes one event with a decode error and the raw payload: a
//! compressed entry (swoop does not decompress), an encrypted one, a chunk of a chunked
//! message, a batch that does not split, a payload the deserializer refuses.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};
use swoop_core::realtime::Event;

use super::config::Deserializer;
use super::proto::{self, KeyValue, MessageIdData, MessageMetadata};

const COMPRESSION_NAMES: &[&str] = &["NONE", "LZ4", "ZLIB", "ZSTD", "SNAPPY"];

/// What one message of an entry has of its own.
struct One<'a> {
    key: Option<&'a str>,
    ordering_key: Option<&'a [u8]>,
    properties: &'a [KeyValue],
    event_time: u64,
    null_value: bool,
    batch_index: Option<i32>,
}

/// The events of one entry of `topic` (partition index `partition`, -1 for none).
pub fn events(
    topic: &str,
    partition: i32,
    id: &MessageIdData,
    metadata: &MessageMetadata,
    payload: Bytes,
    deserializer: Deserializer,
) -> Vec<Event> {
    let whole = One {
        key: metadata.partition_key.as_deref(),
        ordering_key: metadata.ordering_key.as_deref(),
        properties: &metadata.properties,
        event_time: metadata.event_time.unwrap_or(0),
        null_value: metadata.null_value.unwrap_or(false),
        batch_index: None,
    };
    let unreadable = |why: String| {
        let mut event = event(topic, partition, id, &whole, &payload, Deserializer::String);
        event.decode_error = Some(why);
        vec![event]
    };
    let compression = metadata.compression.unwrap_or(0);
    if compression != 0 {
        let name = usize::try_from(compression)
            .ok()
            .and_then(|i| COMPRESSION_NAMES.get(i))
            .unwrap_or(&"an unknown codec");
        return unreadable(format!(
            "the message is compressed with {name}, which swoop does not decompress; produce it uncompressed (compressionType NONE)"
        ));
    }
    if !metadata.encryption_keys.is_empty() {
        return unreadable(
            "the message is end-to-end encrypted, which swoop does not decrypt".into(),
        );
    }
    if metadata.num_chunks_from_msg.unwrap_or(1) > 1 {
        return unreadable(
            "the message is chunked, which swoop does not reassemble; produce it without chunking"
                .into(),
        );
    }
    let Some(count) = metadata.num_messages_in_batch else {
        return vec![event(topic, partition, id, &whole, &payload, deserializer)];
    };
    let mut rest = payload.clone();
    let mut singles = Vec::new();
    for _ in 0..count.max(0) {
        match proto::next_in_batch(&mut rest) {
            Ok(single) => singles.push(single),
            Err(e) => return unreadable(format!("the batch does not split: {e}")),
        }
    }
    singles
        .iter()
        .enumerate()
        .filter(|(_, (m, _))| !m.compacted_out.unwrap_or(false))
        .map(|(i, (m, data))| {
            let one = One {
                key: m.partition_key.as_deref(),
                ordering_key: m.ordering_key.as_deref(),
                properties: &m.properties,
                event_time: m.event_time.unwrap_or(0),
                null_value: m.null_value.unwrap_or(false),
                batch_index: Some(i as i32),
            };
            event(topic, partition, id, &one, data, deserializer)
        })
        .collect()
}

/// Kestra's `MessageId.toString()`: `ledger:entry:partition`, plus `:batchIndex` in a batch.
pub fn message_id(id: &MessageIdData, partition: i32, batch_index: Option<i32>) -> String {
    match batch_index {
        Some(b) => format!("{}:{}:{partition}:{b}", id.ledger_id, id.entry_id),
        None => format!("{}:{}:{partition}", id.ledger_id, id.entry_id),
    }
}

fn event(
    topic: &str,
    partition: i32,
    id: &MessageIdData,
    one: &One<'_>,
    payload: &[u8],
    deserializer: Deserializer,
) -> Event {
    let (value, decode_error) = if one.null_value {
        (Value::Null, None)
    } else {
        deserializer.decode(payload)
    };
    let mut variables = Map::new();
    variables.insert(
        "key".into(),
        one.key
            .map_or(Value::Null, |k| Value::String(k.to_string())),
    );
    variables.insert("value".into(), value);
    variables.insert(
        "properties".into(),
        Value::Object(
            one.properties
                .iter()
                .map(|p| (p.key.clone(), Value::String(p.value.clone())))
                .collect(),
        ),
    );
    variables.insert("topic".into(), Value::String(topic.to_string()));
    if one.event_time != 0
        && let Some(time) = i64::try_from(one.event_time)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
    {
        variables.insert(
            "eventTime".into(),
            Value::String(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
    }
    let message_id = message_id(id, partition, one.batch_index);
    variables.insert("messageId".into(), Value::String(message_id));
    let ordering_key = one.ordering_key.map(|k| match std::str::from_utf8(k) {
        Ok(text) => text.to_string(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(k),
    });
    let mut event = Event::new(variables);
    event.dedup_key = Some(format!(
        "{}:{}:{partition}:{}",
        id.ledger_id,
        id.entry_id,
        one.batch_index.unwrap_or(-1)
    ));
    event.key = ordering_key.or_else(|| one.key.map(str::to_string));
    event.partition = Some(topic.to_string());
    event.decode_error = decode_error;
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use prost::Message;
    use serde_json::json;

    fn id() -> MessageIdData {
        MessageIdData {
            ledger_id: 4,
            entry_id: 2,
            partition: None,
            batch_index: None,
        }
    }

    fn metadata() -> MessageMetadata {
        MessageMetadata {
            producer_name: "p".into(),
            sequence_id: 0,
            publish_time: 1_700_000_000_000,
            properties: vec![KeyValue {
                key: "a".into(),
                value: "b".into(),
            }],
            partition_key: Some("k1".into()),
            event_time: Some(1_700_000_000_123),
            ..Default::default()
        }
    }

    const TOPIC: &str = "persistent://public/default/orders";

    #[test]
    fn a_single_message() {
        let events = events(
            TOPIC,
            -1,
            &id(),
            &metadata(),
            Bytes::from_static(br#"{"n":1}"#),
            Deserializer::Json,
        );
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            Value::Object(e.variables.clone()),
            json!({
                "key": "k1",
                "value": {"n": 1},
                "properties": {"a": "b"},
                "topic": TOPIC,
                "eventTime": "2023-11-14T22:13:20.123Z",
                "messageId": "4:2:-1",
            })
        );
        assert_eq!(e.dedup_key.as_deref(), Some("4:2:-1:-1"));
        assert_eq!(e.key.as_deref(), Some("k1"));
        assert_eq!(e.partition.as_deref(), Some(TOPIC));
        assert!(e.decode_error.is_none());
    }

    #[test]
    fn no_event_time_no_key_bytes_and_bad_json() {
        let mut m = metadata();
        m.event_time = None;
        m.partition_key = None;
        m.ordering_key = Some(b"order".to_vec());
        let e = &events(
            TOPIC,
            3,
            &id(),
            &m,
            Bytes::from_static(b"\x00\x01"),
            Deserializer::Bytes,
        )[0];
        assert!(!e.variables.contains_key("eventTime"));
        assert_eq!(e.variables["key"], Value::Null);
        assert_eq!(e.variables["value"], json!("AAE="));
        assert_eq!(e.variables["messageId"], json!("4:2:3"));
        assert_eq!(e.key.as_deref(), Some("order"));

        let e = &events(
            TOPIC,
            -1,
            &id(),
            &m,
            Bytes::from_static(b"not json"),
            Deserializer::Json,
        )[0];
        assert!(
            e.decode_error
                .as_deref()
                .unwrap()
                .contains("not valid JSON")
        );
        assert_eq!(e.variables["value"], json!("not json"));
    }

    #[test]
    fn compressed_or_encrypted_entries_are_decode_errors() {
        let mut m = metadata();
        m.compression = Some(1);
        let e = events(
            TOPIC,
            -1,
            &id(),
            &m,
            Bytes::from_static(b"xx"),
            Deserializer::String,
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].decode_error.as_deref().unwrap().contains("LZ4"));
        let mut m = metadata();
        m.encryption_keys = vec![vec![1]];
        let e = events(
            TOPIC,
            -1,
            &id(),
            &m,
            Bytes::from_static(b"xx"),
            Deserializer::String,
        );
        assert!(e[0].decode_error.as_deref().unwrap().contains("encrypted"));
    }

    #[test]
    fn a_batch_is_one_event_per_message() {
        let mut payload = BytesMut::new();
        for (i, (key, body)) in [("a", "one"), ("b", "two"), ("c", "three")]
            .iter()
            .enumerate()
        {
            let single = proto::SingleMessageMetadata {
                partition_key: Some(key.to_string()),
                payload_size: body.len() as i32,
                compacted_out: Some(i == 1),
                ..Default::default()
            }
            .encode_to_vec();
            payload.put_u32(single.len() as u32);
            payload.put_slice(&single);
            payload.put_slice(body.as_bytes());
        }
        let mut m = metadata();
        m.num_messages_in_batch = Some(3);
        let e = events(TOPIC, 0, &id(), &m, payload.freeze(), Deserializer::String);
        assert_eq!(e.len(), 2, "the compacted-out message is left out");
        assert_eq!(e[0].variables["value"], json!("one"));
        assert_eq!(e[0].variables["messageId"], json!("4:2:0:0"));
        assert_eq!(e[1].variables["value"], json!("three"));
        assert_eq!(e[1].dedup_key.as_deref(), Some("4:2:0:2"));
        assert_eq!(e[1].key.as_deref(), Some("c"));

        m.num_messages_in_batch = Some(5);
        let e = events(
            TOPIC,
            0,
            &id(),
            &m,
            Bytes::from_static(b"\x00\x00"),
            Deserializer::String,
        );
        assert!(
            e[0].decode_error
                .as_deref()
                .unwrap()
                .contains("does not split")
        );
    }
}
