//! The Pulsar realtime trigger through the shared realtime-source conformance suite, against a
//! real broker: pulsar-lite (RocksDB-backed, so a `kill -9` and restart on the same data keeps
//! the topics, subscriptions and acks). Messages carry ids: no duplicates across a crash.

#![cfg(feature = "pulsar")]

mod common;

use std::collections::HashMap;

use common::conformance::SourceFixture;
use swoop_plugins::pulsar::producer::Producer;
use swoop_testkit::pulsar::PulsarLite;

struct PulsarFixture {
    broker: PulsarLite,
    runtime: tokio::runtime::Runtime,
    /// One producer per topic, opened on first use (and again after a restart).
    producers: HashMap<String, Producer>,
}

fn pulsar() -> PulsarFixture {
    PulsarFixture {
        broker: PulsarLite::start(),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the producer"),
        producers: HashMap::new(),
    }
}

impl SourceFixture for PulsarFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.pulsar.RealtimeTrigger\n    uri: {}\n    topic: {channel}\n    subscriptionName: swoop\n    deserializer: JSON\n{extra}",
            self.broker.uri()
        )
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let broker = format!("127.0.0.1:{}", self.broker.port());
        let messages: Vec<(Option<&str>, &[u8])> =
            payloads.iter().map(|p| (None, p.as_slice())).collect();
        let producers = &mut self.producers;
        self.runtime.block_on(async {
            if !producers.contains_key(channel) {
                let producer = Producer::connect(&broker, channel)
                    .await
                    .unwrap_or_else(|e| panic!("a producer on {channel}: {e}"));
                producers.insert(channel.to_string(), producer);
            }
            let producer = producers.get_mut(channel).expect("the producer");
            producer
                .send(&messages)
                .await
                .unwrap_or_else(|e| panic!("publishing to {channel}: {e}"));
        });
    }

    fn restart_server(&mut self) {
        self.producers.clear();
        self.broker.restart();
    }

    /// pulsar-lite 0.2.0 (the newest on PyPI) forgets a consumer whose connection ended
    /// cleanly, but keeps one whose connection was reset: a `kill -9` while the broker is
    /// dispatching leaves unread bytes in the socket, the kernel answers with a RST, and the
    /// Exclusive subscription then refuses every new consumer ("Exclusive subscription
    /// already has a consumer") until the broker restarts. A real Pulsar broker drops the
    /// consumers of any closed connection. So the broker restarts here (on the same data):
    /// what the check is about, swoop resuming from its acks with nothing lost and no
    /// duplicate, is unchanged.
    fn after_consumer_killed(&mut self) {
        self.restart_server();
    }

    fn gives_ids(&self) -> bool {
        true
    }

    fn payload_variable(&self) -> &'static str {
        "value"
    }
}

conformance_tests!(pulsar());
