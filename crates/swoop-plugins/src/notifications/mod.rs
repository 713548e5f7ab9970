//! The notifications family: messages sent to chat tools. Only the Slack incoming webhook for
//! now ([`slack`]); it posts through the HTTP family's shared client (`crate::http::client`).

pub mod slack;

use swoop_core::Registry;

pub fn register(registry: &mut Registry) {
    registry.register_task(slack::factory());
}
