//! The Redis list realtime trigger through the shared realtime-source conformance suite,
//! against a real `redis-server` (append-only, so a restart keeps the lists).
//!
//! Redis list elements have no ids: duplicates are allowed after a crash, losses are not.

#![cfg(feature = "redis")]

mod common;

use common::conformance::SourceFixture;
use common::redis::{RedisFixture, command, redis, start_server};

impl SourceFixture for RedisFixture {
    fn trigger_yaml(&self, channel: &str, extra: &str) -> String {
        format!(
            "  - id: events\n    type: io.kestra.plugin.redis.list.RealtimeTrigger\n    url: redis://127.0.0.1:{}/0\n    key: {channel}\n    serdeType: JSON\n{extra}",
            self.port
        )
    }

    fn publish(&mut self, channel: &str, payloads: &[Vec<u8>]) {
        let mut args: Vec<&[u8]> = vec![b"RPUSH", channel.as_bytes()];
        args.extend(payloads.iter().map(Vec::as_slice));
        let reply = command(self.port, &args).expect("RPUSH");
        assert!(reply.starts_with(':'), "RPUSH: {reply}");
    }

    fn restart_server(&mut self) {
        self.stop();
        self.server = start_server(self.port, self.dir.path());
    }

    fn gives_ids(&self) -> bool {
        false
    }

    fn payload_variable(&self) -> &'static str {
        "value"
    }
}

conformance_tests!(redis());
