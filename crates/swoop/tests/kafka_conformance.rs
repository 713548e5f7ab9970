//! The Kafka realtime trigger through the shared realtime-source conformance suite.

#![cfg(feature = "kafka")]

mod common;

use common::conformance::SourceFixture;
use common::kafka::{Broker, produce};

struct KafkaFixture {
    broker: Broker,
    rt: tokio::runtime::Runtime,
}

fn kafka() -> KafkaFixture {
    KafkaFixture {
        broker: Broker::start(),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime"),
    }
}

impl SourceFixture for KafkaFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.kafka.RealtimeTrigger\n    topic: {channel}\n    groupId: conformance-{channel}\n    properties:\n      bootstrap.servers: {}\n    valueDeserializer: JSON\n{extra}",
            self.broker.bootstrap()
        )
    }

    fn prepare(&mut self, channel: &str) {
        self.rt.block_on(self.broker.create_topic(channel, 2));
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let values: Vec<String> = payloads
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        self.rt
            .block_on(produce(&self.broker.producer(), channel, 2, &values));
    }

    fn restart_server(&mut self) {
        self.broker.restart();
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "value"
    }
}

conformance_tests!(kafka());
