//! The HTTP task family: `io.kestra.plugin.core.http.Request` (the response as outputs) and
//! `io.kestra.plugin.core.http.Download` (the response body streamed into internal storage).
//! [`client`] holds what every HTTP-speaking task shares (the notifications family too): one
//! client per configuration across executions, error classification, bounded reads.

pub mod client;
mod common;
mod download;
mod request;

use swoop_core::Registry;

pub fn register(registry: &mut Registry) {
    registry.register_task(request::factory());
    registry.register_task(download::factory());
}
