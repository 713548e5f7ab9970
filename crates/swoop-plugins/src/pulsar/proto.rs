//! The part of Pulsar's binary protocol (`PulsarApi.proto`, proto2) that a consumer speaks,
//! written by hand with `prost` derives (no protoc): the commands, their frames, and the
//! CRC32C of payload frames.
//!
//! Only the fields swoop reads or writes are declared; prost skips the others when decoding.
//! Tags and enum values are those of `PulsarApi.proto` (Apache Pulsar 3.x).
//!
//! Frames: `[total size][command size][BaseCommand]`, and for a command with a payload
//! (MESSAGE, SEND) then `[0x0e01][CRC32C][metadata size][MessageMetadata][payload]`, where
//! the magic number and checksum are optional (pulsar-lite leaves them out): the CRC covers
//! everything after itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// `BaseCommand.Type` values.
pub mod command_type {
    pub const CONNECT: i32 = 2;
    pub const CONNECTED: i32 = 3;
    pub const SUBSCRIBE: i32 = 4;
    pub const PRODUCER: i32 = 5;
    pub const SEND: i32 = 6;
    pub const SEND_RECEIPT: i32 = 7;
    pub const SEND_ERROR: i32 = 8;
    pub const MESSAGE: i32 = 9;
    pub const ACK: i32 = 10;
    pub const FLOW: i32 = 11;
    pub const SUCCESS: i32 = 13;
    pub const ERROR: i32 = 14;
    pub const CLOSE_PRODUCER: i32 = 15;
    pub const CLOSE_CONSUMER: i32 = 16;
    pub const PRODUCER_SUCCESS: i32 = 17;
    pub const PING: i32 = 18;
    pub const PONG: i32 = 19;
    pub const REDELIVER_UNACKNOWLEDGED_MESSAGES: i32 = 20;
    pub const PARTITIONED_METADATA: i32 = 21;
    pub const PARTITIONED_METADATA_RESPONSE: i32 = 22;
    pub const LOOKUP: i32 = 23;
    pub const LOOKUP_RESPONSE: i32 = 24;
    pub const REACHED_END_OF_TOPIC: i32 = 27;
    pub const ACTIVE_CONSUMER_CHANGE: i32 = 31;
    pub const GET_TOPICS_OF_NAMESPACE: i32 = 32;
    pub const GET_TOPICS_OF_NAMESPACE_RESPONSE: i32 = 33;
    pub const AUTH_CHALLENGE: i32 = 36;
    pub const AUTH_RESPONSE: i32 = 37;
}

/// The protocol version swoop announces (v15: Key_Shared, GetTopicsOfNamespace, auth
/// challenges; not v16+, so no broker entry metadata is sent).
pub const PROTOCOL_VERSION: i32 = 15;

#[derive(Clone, PartialEq, Message)]
pub struct MessageIdData {
    #[prost(uint64, required, tag = "1")]
    pub ledger_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub entry_id: u64,
    #[prost(int32, optional, tag = "3", default = "-1")]
    pub partition: Option<i32>,
    #[prost(int32, optional, tag = "4", default = "-1")]
    pub batch_index: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct MessageMetadata {
    #[prost(string, required, tag = "1")]
    pub producer_name: String,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(uint64, required, tag = "3")]
    pub publish_time: u64,
    #[prost(message, repeated, tag = "4")]
    pub properties: Vec<KeyValue>,
    #[prost(string, optional, tag = "6")]
    pub partition_key: Option<String>,
    /// `CompressionType`: NONE 0, LZ4 1, ZLIB 2, ZSTD 3, SNAPPY 4.
    #[prost(int32, optional, tag = "8")]
    pub compression: Option<i32>,
    #[prost(uint32, optional, tag = "9")]
    pub uncompressed_size: Option<u32>,
    #[prost(int32, optional, tag = "11")]
    pub num_messages_in_batch: Option<i32>,
    #[prost(uint64, optional, tag = "12")]
    pub event_time: Option<u64>,
    /// `encryption_keys` (repeated EncryptionKeys): only whether there are any matters.
    #[prost(bytes = "vec", repeated, tag = "13")]
    pub encryption_keys: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "18")]
    pub ordering_key: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "25")]
    pub null_value: Option<bool>,
    #[prost(int32, optional, tag = "27")]
    pub num_chunks_from_msg: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SingleMessageMetadata {
    #[prost(message, repeated, tag = "1")]
    pub properties: Vec<KeyValue>,
    #[prost(string, optional, tag = "2")]
    pub partition_key: Option<String>,
    #[prost(int32, required, tag = "3")]
    pub payload_size: i32,
    #[prost(bool, optional, tag = "4")]
    pub compacted_out: Option<bool>,
    #[prost(uint64, optional, tag = "5")]
    pub event_time: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub ordering_key: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "9")]
    pub null_value: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandConnect {
    #[prost(string, required, tag = "1")]
    pub client_version: String,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub auth_data: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "4")]
    pub protocol_version: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub auth_method_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandConnected {
    #[prost(string, required, tag = "1")]
    pub server_version: String,
    #[prost(int32, optional, tag = "2")]
    pub protocol_version: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AuthData {
    #[prost(string, optional, tag = "1")]
    pub auth_method_name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub auth_data: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandAuthChallenge {
    #[prost(string, optional, tag = "1")]
    pub server_version: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub challenge: Option<AuthData>,
    #[prost(int32, optional, tag = "3")]
    pub protocol_version: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandAuthResponse {
    #[prost(string, optional, tag = "1")]
    pub client_version: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub response: Option<AuthData>,
    #[prost(int32, optional, tag = "3")]
    pub protocol_version: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSubscribe {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(string, required, tag = "2")]
    pub subscription: String,
    /// `SubType`: Exclusive 0, Shared 1, Failover 2, Key_Shared 3.
    #[prost(int32, required, tag = "3")]
    pub sub_type: i32,
    #[prost(uint64, required, tag = "4")]
    pub consumer_id: u64,
    #[prost(uint64, required, tag = "5")]
    pub request_id: u64,
    #[prost(string, optional, tag = "6")]
    pub consumer_name: Option<String>,
    #[prost(bool, optional, tag = "8")]
    pub durable: Option<bool>,
    #[prost(message, repeated, tag = "10")]
    pub metadata: Vec<KeyValue>,
    /// `InitialPosition`: Latest 0, Earliest 1.
    #[prost(int32, optional, tag = "13")]
    pub initial_position: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPartitionedTopicMetadata {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPartitionedTopicMetadataResponse {
    #[prost(uint32, optional, tag = "1")]
    pub partitions: Option<u32>,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
    /// Success 0, Failed 1.
    #[prost(int32, optional, tag = "3")]
    pub response: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub error: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub message: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandLookupTopic {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
    #[prost(bool, optional, tag = "3")]
    pub authoritative: Option<bool>,
}

pub mod lookup_type {
    pub const REDIRECT: i32 = 0;
    pub const CONNECT: i32 = 1;
    pub const FAILED: i32 = 2;
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandLookupTopicResponse {
    #[prost(string, optional, tag = "1")]
    pub broker_service_url: Option<String>,
    #[prost(int32, optional, tag = "3")]
    pub response: Option<i32>,
    #[prost(uint64, required, tag = "4")]
    pub request_id: u64,
    #[prost(bool, optional, tag = "5")]
    pub authoritative: Option<bool>,
    #[prost(int32, optional, tag = "6")]
    pub error: Option<i32>,
    #[prost(string, optional, tag = "7")]
    pub message: Option<String>,
    #[prost(bool, optional, tag = "8")]
    pub proxy_through_service_url: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandProducer {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(uint64, required, tag = "2")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "3")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandProducerSuccess {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
    #[prost(string, required, tag = "2")]
    pub producer_name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSend {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(int32, optional, tag = "3")]
    pub num_messages: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSendReceipt {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSendError {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(int32, required, tag = "3")]
    pub error: i32,
    #[prost(string, required, tag = "4")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandMessage {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(message, required, tag = "2")]
    pub message_id: MessageIdData,
    #[prost(uint32, optional, tag = "3")]
    pub redelivery_count: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandAck {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    /// Individual 0, Cumulative 1.
    #[prost(int32, required, tag = "2")]
    pub ack_type: i32,
    #[prost(message, repeated, tag = "3")]
    pub message_id: Vec<MessageIdData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandFlow {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(uint32, required, tag = "2")]
    pub message_permits: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandCloseConsumer {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandCloseProducer {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandReachedEndOfTopic {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandRedeliverUnacknowledgedMessages {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(message, repeated, tag = "2")]
    pub message_ids: Vec<MessageIdData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSuccess {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandError {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
    #[prost(int32, required, tag = "2")]
    pub error: i32,
    #[prost(string, required, tag = "3")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPing {}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPong {}

#[derive(Clone, PartialEq, Message)]
pub struct CommandGetTopicsOfNamespace {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
    #[prost(string, required, tag = "2")]
    pub namespace: String,
    /// PERSISTENT 0, NON_PERSISTENT 1, ALL 2.
    #[prost(int32, optional, tag = "3")]
    pub mode: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandGetTopicsOfNamespaceResponse {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
    #[prost(string, repeated, tag = "2")]
    pub topics: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BaseCommand {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub connect: Option<CommandConnect>,
    #[prost(message, optional, tag = "3")]
    pub connected: Option<CommandConnected>,
    #[prost(message, optional, tag = "4")]
    pub subscribe: Option<CommandSubscribe>,
    #[prost(message, optional, tag = "5")]
    pub producer: Option<CommandProducer>,
    #[prost(message, optional, tag = "6")]
    pub send: Option<CommandSend>,
    #[prost(message, optional, tag = "7")]
    pub send_receipt: Option<CommandSendReceipt>,
    #[prost(message, optional, tag = "8")]
    pub send_error: Option<CommandSendError>,
    #[prost(message, optional, tag = "9")]
    pub message: Option<CommandMessage>,
    #[prost(message, optional, tag = "10")]
    pub ack: Option<CommandAck>,
    #[prost(message, optional, tag = "11")]
    pub flow: Option<CommandFlow>,
    #[prost(message, optional, tag = "13")]
    pub success: Option<CommandSuccess>,
    #[prost(message, optional, tag = "14")]
    pub error: Option<CommandError>,
    #[prost(message, optional, tag = "15")]
    pub close_producer: Option<CommandCloseProducer>,
    #[prost(message, optional, tag = "16")]
    pub close_consumer: Option<CommandCloseConsumer>,
    #[prost(message, optional, tag = "17")]
    pub producer_success: Option<CommandProducerSuccess>,
    #[prost(message, optional, tag = "18")]
    pub ping: Option<CommandPing>,
    #[prost(message, optional, tag = "19")]
    pub pong: Option<CommandPong>,
    #[prost(message, optional, tag = "20")]
    pub redeliver_unacknowledged_messages: Option<CommandRedeliverUnacknowledgedMessages>,
    #[prost(message, optional, tag = "21")]
    pub partition_metadata: Option<CommandPartitionedTopicMetadata>,
    #[prost(message, optional, tag = "22")]
    pub partition_metadata_response: Option<CommandPartitionedTopicMetadataResponse>,
    #[prost(message, optional, tag = "23")]
    pub lookup_topic: Option<CommandLookupTopic>,
    #[prost(message, optional, tag = "24")]
    pub lookup_topic_response: Option<CommandLookupTopicResponse>,
    #[prost(message, optional, tag = "27")]
    pub reached_end_of_topic: Option<CommandReachedEndOfTopic>,
    #[prost(message, optional, tag = "32")]
    pub get_topics_of_namespace: Option<CommandGetTopicsOfNamespace>,
    #[prost(message, optional, tag = "33")]
    pub get_topics_of_namespace_response: Option<CommandGetTopicsOfNamespaceResponse>,
    #[prost(message, optional, tag = "36")]
    pub auth_challenge: Option<CommandAuthChallenge>,
    #[prost(message, optional, tag = "37")]
    pub auth_response: Option<CommandAuthResponse>,
}

impl BaseCommand {
    /// A command of `type` with nothing set yet.
    pub fn of(r#type: i32) -> BaseCommand {
        BaseCommand {
            r#type,
            ..Default::default()
        }
    }

    /// The request this command answers, for the responses that carry one.
    pub fn response_request_id(&self) -> Option<u64> {
        use command_type as t;
        match self.r#type {
            t::SUCCESS => self.success.as_ref().map(|c| c.request_id),
            t::ERROR => self.error.as_ref().map(|c| c.request_id),
            t::PRODUCER_SUCCESS => self.producer_success.as_ref().map(|c| c.request_id),
            t::PARTITIONED_METADATA_RESPONSE => self
                .partition_metadata_response
                .as_ref()
                .map(|c| c.request_id),
            t::LOOKUP_RESPONSE => self.lookup_topic_response.as_ref().map(|c| c.request_id),
            t::GET_TOPICS_OF_NAMESPACE_RESPONSE => self
                .get_topics_of_namespace_response
                .as_ref()
                .map(|c| c.request_id),
            _ => None,
        }
    }
}

/// The name of a `ServerError` value, for messages.
pub fn server_error_name(code: i32) -> &'static str {
    const NAMES: &[&str] = &[
        "UnknownError",
        "MetadataError",
        "PersistenceError",
        "AuthenticationError",
        "AuthorizationError",
        "ConsumerBusy",
        "ServiceNotReady",
        "ProducerBlockedQuotaExceededError",
        "ProducerBlockedQuotaExceededException",
        "ChecksumError",
        "UnsupportedVersionError",
        "TopicNotFound",
        "SubscriptionNotFound",
        "ConsumerNotFound",
        "TooManyRequests",
        "TopicTerminatedError",
        "ProducerBusy",
        "InvalidTopicName",
        "IncompatibleSchema",
        "ConsumerAssignError",
        "TransactionCoordinatorNotFound",
        "InvalidTxnStatus",
        "NotAllowedError",
        "TransactionConflict",
        "TransactionNotFound",
        "ProducerFenced",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UnknownError")
}

/// The largest frame accepted (Pulsar's default `maxMessageSize` is 5 MiB; room for
/// metadata and batches).
pub const MAX_FRAME_SIZE: usize = 64 * 1024 * 1024;

const MAGIC_CRC32C: u16 = 0x0e01;

/// One frame read from the wire: its command, and for MESSAGE its metadata and payload.
#[derive(Debug)]
pub struct Frame {
    pub command: BaseCommand,
    pub payload: Option<(MessageMetadata, Bytes)>,
}

/// A command alone, framed.
pub fn encode(command: &BaseCommand) -> Bytes {
    let size = command.encoded_len();
    let mut buf = BytesMut::with_capacity(8 + size);
    buf.put_u32((4 + size) as u32);
    buf.put_u32(size as u32);
    // Encoding into a buffer with room for it cannot fail.
    let _ = command.encode(&mut buf);
    buf.freeze()
}

/// A command with its payload (SEND), framed with the magic number and the CRC32C.
pub fn encode_with_payload(
    command: &BaseCommand,
    metadata: &MessageMetadata,
    payload: &[u8],
) -> Bytes {
    let command_size = command.encoded_len();
    let metadata_size = metadata.encoded_len();
    let total = 4 + command_size + 2 + 4 + 4 + metadata_size + payload.len();
    let mut buf = BytesMut::with_capacity(4 + total);
    buf.put_u32(total as u32);
    buf.put_u32(command_size as u32);
    let _ = command.encode(&mut buf);
    buf.put_u16(MAGIC_CRC32C);
    let crc_at = buf.len();
    buf.put_u32(0);
    let checked_from = buf.len();
    buf.put_u32(metadata_size as u32);
    let _ = metadata.encode(&mut buf);
    buf.put_slice(payload);
    let crc = crc32c(&buf[checked_from..]);
    buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

/// Takes one whole frame off the front of `buf`, if there is one. `Err` for a frame that
/// does not decode (the connection cannot go on).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if total > MAX_FRAME_SIZE {
        return Err(format!(
            "a frame of {total} bytes, over the limit of {MAX_FRAME_SIZE}"
        ));
    }
    if buf.len() < 4 + total {
        buf.reserve(4 + total - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(total).freeze();
    decode_frame(&mut frame).map(Some)
}

fn decode_frame(frame: &mut Bytes) -> Result<Frame, String> {
    let command_size = take_u32(frame, "the command size")? as usize;
    if frame.len() < command_size {
        return Err("a frame shorter than its command".into());
    }
    let command = BaseCommand::decode(frame.split_to(command_size))
        .map_err(|e| format!("a command that does not decode: {e}"))?;
    if frame.is_empty() {
        return Ok(Frame {
            command,
            payload: None,
        });
    }
    if frame.len() >= 2 && frame[..2] == MAGIC_CRC32C.to_be_bytes() {
        frame.advance(2);
        let expected = take_u32(frame, "the checksum")?;
        let actual = crc32c(frame);
        if expected != actual {
            return Err(format!(
                "a payload whose CRC32C is {actual:#010x}, not {expected:#010x} as its frame says"
            ));
        }
    }
    let metadata_size = take_u32(frame, "the metadata size")? as usize;
    if frame.len() < metadata_size {
        return Err("a payload shorter than its metadata".into());
    }
    let metadata = MessageMetadata::decode(frame.split_to(metadata_size))
        .map_err(|e| format!("message metadata that does not decode: {e}"))?;
    Ok(Frame {
        command,
        payload: Some((metadata, std::mem::take(frame))),
    })
}

fn take_u32(buf: &mut Bytes, what: &str) -> Result<u32, String> {
    if buf.len() < 4 {
        return Err(format!("a frame cut short before {what}"));
    }
    Ok(buf.get_u32())
}

/// One message of a batch: `[metadata size][SingleMessageMetadata][payload]`, taken off the
/// front of `batch`.
pub fn next_in_batch(batch: &mut Bytes) -> Result<(SingleMessageMetadata, Bytes), String> {
    let size = take_u32(batch, "a batched message's metadata size")? as usize;
    if batch.len() < size {
        return Err("a batched message shorter than its metadata".into());
    }
    let metadata = SingleMessageMetadata::decode(batch.split_to(size))
        .map_err(|e| format!("batched message metadata that does not decode: {e}"))?;
    let payload_size = usize::try_from(metadata.payload_size)
        .map_err(|_| format!("a batched message of {} bytes", metadata.payload_size))?;
    if batch.len() < payload_size {
        return Err("a batched message shorter than its payload".into());
    }
    Ok((metadata, batch.split_to(payload_size)))
}

/// CRC-32C (Castagnoli), as Pulsar checks payloads.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        table
    });
    !data.iter().fold(!0u32, |c, b| {
        table[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    fn message_command() -> BaseCommand {
        let mut command = BaseCommand::of(command_type::MESSAGE);
        command.message = Some(CommandMessage {
            consumer_id: 7,
            message_id: MessageIdData {
                ledger_id: 3,
                entry_id: 9,
                partition: None,
                batch_index: None,
            },
            redelivery_count: None,
        });
        command
    }

    fn metadata() -> MessageMetadata {
        MessageMetadata {
            producer_name: "p".into(),
            sequence_id: 1,
            publish_time: 1_700_000_000_000,
            partition_key: Some("k".into()),
            ..Default::default()
        }
    }

    #[test]
    fn frames_with_and_without_the_checksum_decode() {
        let with = encode_with_payload(&message_command(), &metadata(), b"hello");
        let mut buf = BytesMut::from(&with[..]);
        let frame = decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(frame.command.message.unwrap().consumer_id, 7);
        let (m, payload) = frame.payload.unwrap();
        assert_eq!(m.partition_key.as_deref(), Some("k"));
        assert_eq!(&payload[..], b"hello");

        // The same frame as pulsar-lite writes it: no magic number, no checksum.
        let command = message_command();
        let meta = metadata();
        let (c, m) = (command.encode_to_vec(), meta.encode_to_vec());
        let mut raw = BytesMut::new();
        raw.put_u32((4 + c.len() + 4 + m.len() + 5) as u32);
        raw.put_u32(c.len() as u32);
        raw.put_slice(&c);
        raw.put_u32(m.len() as u32);
        raw.put_slice(&m);
        raw.put_slice(b"hello");
        let frame = decode(&mut raw).unwrap().unwrap();
        assert_eq!(&frame.payload.unwrap().1[..], b"hello");
    }

    #[test]
    fn a_wrong_checksum_and_partial_frames() {
        let good = encode_with_payload(&message_command(), &metadata(), b"hello");
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(&mut bad).unwrap_err().contains("CRC32C"));

        let mut partial = BytesMut::from(&good[..good.len() - 2]);
        assert!(decode(&mut partial).unwrap().is_none());
        let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(decode(&mut huge).unwrap_err().contains("over the limit"));
    }

    #[test]
    fn batches_split_into_their_messages() {
        let mut batch = BytesMut::new();
        for (key, payload) in [("a", &b"one"[..]), ("b", &b"two!"[..])] {
            let m = SingleMessageMetadata {
                partition_key: Some(key.into()),
                payload_size: payload.len() as i32,
                ..Default::default()
            }
            .encode_to_vec();
            batch.put_u32(m.len() as u32);
            batch.put_slice(&m);
            batch.put_slice(payload);
        }
        let mut batch = batch.freeze();
        let (m, p) = next_in_batch(&mut batch).unwrap();
        assert_eq!(
            (m.partition_key.as_deref(), &p[..]),
            (Some("a"), &b"one"[..])
        );
        let (m, p) = next_in_batch(&mut batch).unwrap();
        assert_eq!(
            (m.partition_key.as_deref(), &p[..]),
            (Some("b"), &b"two!"[..])
        );
        assert!(batch.is_empty());
        assert!(next_in_batch(&mut batch).is_err());
    }
}
