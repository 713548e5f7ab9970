//! The Cassandra family: `io.kestra.plugin.cassandra.standard.Query` (alias
//! `io.kestra.plugin.cassandra.Query`) runs one CQL statement through the `scylla` driver (which
//! speaks to Apache Cassandra and ScyllaDB alike) and outputs its rows as Kestra does.
//!
//! - [`session`]: the `session` property, the shared driver session, error classification;
//! - [`query`]: the task (fetch types, paging, the ION file);
//! - [`cells`]: CQL values → JSON.

mod cells;
mod query;
mod session;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TaskFactory};

const ENDPOINT: &[PropSpec] = &[
    PropSpec::required("hostname", PropType::String),
    PropSpec::optional("port", PropType::Int),
    PropSpec::optional("serverName", PropType::String),
];

const SECURE_CONNECTION: &[PropSpec] = &[
    PropSpec::optional("truststorePath", PropType::String),
    PropSpec::optional("truststorePassword", PropType::String),
    PropSpec::optional("keystorePath", PropType::String),
    PropSpec::optional("keystorePassword", PropType::String),
];

const SESSION: &[PropSpec] = &[
    PropSpec::required("endpoints", PropType::ObjectList(ENDPOINT)),
    PropSpec::optional("localDatacenter", PropType::String),
    PropSpec::optional("username", PropType::String),
    PropSpec::optional("password", PropType::String),
    PropSpec::optional("applicationName", PropType::String),
    PropSpec::optional("secureConnection", PropType::Object(SECURE_CONNECTION)),
];

pub(crate) const FETCH_TYPES: &[&str] = &["FETCH_ONE", "FETCH", "STORE", "NONE"];

fn query_factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.cassandra.standard.Query",
            "io.kestra.plugin.cassandra.Query",
        ],
        properties: const {
            &[
                PropSpec::required("session", PropType::Object(SESSION)),
                PropSpec::required("cql", PropType::String),
                PropSpec::optional("fetchType", PropType::Enum(FETCH_TYPES)),
                PropSpec::optional("fetchOne", PropType::Bool),
                PropSpec::optional("store", PropType::Bool),
                PropSpec::optional("fetch", PropType::Bool),
            ]
        },
        build: |_, v| query::build(v),
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_task(query_factory());
}
