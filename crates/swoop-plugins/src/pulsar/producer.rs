//! A plain producer on the same client (PRODUCER, SEND, SEND_RECEIPT): one topic, one message
//! per SEND, with a key when given. The trigger's tests and benchmarks publish with it.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::connection::{Connection, Incoming};
use super::proto::{self, BaseCommand, command_type as t};

pub struct Producer {
    connection: Connection,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    producer_id: u64,
    topic: String,
    next_sequence: u64,
}

impl Producer {
    /// A producer on `topic` (a full name, or a short one in public/default) of the broker
    /// at `broker` (`host:port`, which must own the topic: no lookup).
    pub async fn connect(broker: &str, topic: &str) -> Result<Producer, String> {
        let topic = super::config::full_topic_name(topic)?;
        let (tx, incoming) = mpsc::unbounded_channel();
        let connection = Connection::connect(broker, None, tx).await?;
        let request_id = connection.request_id();
        let mut command = BaseCommand::of(t::PRODUCER);
        command.producer = Some(proto::CommandProducer {
            topic: topic.clone(),
            producer_id: 1,
            request_id,
        });
        connection
            .request(request_id, &command)
            .await
            .map_err(|e| format!("creating a producer on {topic}: {e}"))?;
        Ok(Producer {
            connection,
            incoming,
            producer_id: 1,
            topic,
            next_sequence: 0,
        })
    }

    /// Sends the messages (key, payload) in order and returns once the broker stored them all.
    pub async fn send(&mut self, messages: &[(Option<&str>, &[u8])]) -> Result<(), String> {
        let publish_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let first = self.next_sequence;
        for (key, payload) in messages {
            let sequence_id = self.next_sequence;
            self.next_sequence += 1;
            let mut command = BaseCommand::of(t::SEND);
            command.send = Some(proto::CommandSend {
                producer_id: self.producer_id,
                sequence_id,
                num_messages: Some(1),
            });
            let metadata = proto::MessageMetadata {
                producer_name: "swoop-test".into(),
                sequence_id,
                publish_time,
                partition_key: key.map(str::to_string),
                ..Default::default()
            };
            self.connection
                .send_frame(proto::encode_with_payload(&command, &metadata, payload));
        }
        let mut waiting = self.next_sequence - first;
        while waiting > 0 {
            let next =
                tokio::time::timeout(super::connection::REQUEST_TIMEOUT, self.incoming.recv())
                    .await
                    .map_err(|_| format!("no receipt from the broker for {}", self.topic))?;
            match next {
                Some(Incoming::Receipt {
                    error: None,
                    sequence_id,
                }) if sequence_id >= first => waiting -= 1,
                Some(Incoming::Receipt { error: Some(e), .. }) => {
                    return Err(format!("sending to {}: {e}", self.topic));
                }
                Some(Incoming::Closed { why, .. }) => {
                    return Err(format!("sending to {}: {why}", self.topic));
                }
                None => return Err(format!("sending to {}: the connection closed", self.topic)),
                _ => {}
            }
        }
        Ok(())
    }
}
