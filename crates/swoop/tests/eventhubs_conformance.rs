//! The Event Hubs realtime trigger through the shared realtime-source conformance suite. No
//! Event Hubs runs here, so the trigger goes where it goes on Azure — a Kafka endpoint — with
//! `kafkaProperties` pointing it at the Kafka-compatible test broker (tansu) instead of
//! `<namespace>.servicebus.windows.net:9093`: the event hub is the topic, `consumerGroup` the
//! group, and the events come out in Kestra's Event Hubs shape (`trigger.body`).

#![cfg(feature = "eventhubs")]

mod common;

use common::conformance::SourceFixture;
use common::kafka::TopicServer;

struct EventHubsFixture(TopicServer);

fn eventhubs() -> EventHubsFixture {
    EventHubsFixture(TopicServer::start())
}

impl SourceFixture for EventHubsFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events
    type: io.kestra.plugin.azure.eventhubs.RealtimeTrigger
    eventHubName: {channel}
    namespace: conformance-ns
    consumerGroup: conformance-{channel}
    bodyDeserializer: JSON
    checkpointStoreProperties:
      containerName: unused
    kafkaProperties:
      bootstrap.servers: {}
      security.protocol: plaintext
{extra}",
            self.0.broker.bootstrap()
        )
    }

    fn prepare(&mut self, channel: &str) {
        self.0.create_topic(channel);
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        self.0.publish(channel, payloads);
    }

    fn restart_server(&mut self) {
        self.0.broker.restart();
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "body"
    }
}

conformance_tests!(eventhubs());
