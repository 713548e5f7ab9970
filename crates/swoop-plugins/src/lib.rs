//! swoop's plugins: one folder per family, each behind a cargo feature (all on by default),
//! each adding its types to the registry in [`registry`] — the one explicit list of everything
//! this build knows.

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "cassandra")]
pub mod cassandra;
#[cfg(feature = "core")]
pub mod core;
#[cfg(any(feature = "postgres-cdc", feature = "mysql-cdc"))]
pub mod debezium;
#[cfg(feature = "eventhubs")]
pub mod eventhubs;
#[cfg(feature = "http")]
pub mod http;
#[cfg(any(feature = "jdbc-postgres", feature = "jdbc-mysql"))]
pub mod jdbc;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mongodb")]
pub mod mongodb;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "mysql-cdc")]
pub mod mysql_cdc;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "notifications")]
pub mod notifications;
#[cfg(feature = "postgres-cdc")]
pub mod postgres_cdc;
#[cfg(feature = "pubsub")]
pub mod pubsub;
#[cfg(feature = "pulsar")]
pub mod pulsar;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "script")]
pub mod script;
#[cfg(feature = "sqs")]
pub mod sqs;

pub mod props;
pub mod realtime;

use swoop_core::Registry;

/// Every task and trigger type of this build.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    for factory in swoop_core::flow::flowable_factories() {
        registry.register_task(factory);
    }
    for factory in swoop_core::flow::builtin_trigger_factories() {
        registry.register_trigger(factory);
    }
    #[cfg(feature = "core")]
    core::register(&mut registry);
    #[cfg(feature = "kafka")]
    kafka::register(&mut registry);
    #[cfg(feature = "eventhubs")]
    eventhubs::register(&mut registry);
    #[cfg(feature = "redis")]
    redis::register(&mut registry);
    #[cfg(feature = "mqtt")]
    mqtt::register(&mut registry);
    #[cfg(feature = "nats")]
    nats::register(&mut registry);
    #[cfg(feature = "amqp")]
    amqp::register(&mut registry);
    #[cfg(feature = "sqs")]
    sqs::register(&mut registry);
    #[cfg(feature = "pubsub")]
    pubsub::register(&mut registry);
    #[cfg(feature = "http")]
    http::register(&mut registry);
    #[cfg(feature = "notifications")]
    notifications::register(&mut registry);
    #[cfg(feature = "script")]
    script::register(&mut registry);
    #[cfg(any(feature = "jdbc-postgres", feature = "jdbc-mysql"))]
    jdbc::register(&mut registry);
    #[cfg(feature = "mongodb")]
    mongodb::register(&mut registry);
    #[cfg(feature = "cassandra")]
    cassandra::register(&mut registry);
    #[cfg(feature = "postgres-cdc")]
    postgres_cdc::register(&mut registry);
    #[cfg(feature = "mysql-cdc")]
    mysql_cdc::register(&mut registry);
    #[cfg(feature = "pulsar")]
    pulsar::register(&mut registry);
    registry
}
