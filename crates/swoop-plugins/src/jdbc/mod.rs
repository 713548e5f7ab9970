//! JDBC Query tasks: `io.kestra.plugin.jdbc.postgresql.Query` (feature `jdbc-postgres`) and
//! `io.kestra.plugin.jdbc.mysql.Query` (feature `jdbc-mysql`, MySQL and MariaDB).
//!
//! - [`query`]: what both share — Kestra's properties, `fetchType`, `:name` parameters, the
//!   outputs (`row`, `rows`, `uri`, `size`) and the ION file `STORE` streams rows into.
//! - [`sql`]: finding `:name` placeholders and statement ends as each server's lexer would.
//! - [`url`]: JDBC URLs. [`values`]: cell values both drivers shape alike.
//! - [`pool`]: the connection pool, one per url + credentials in the node's shared resources.
//! - [`postgres`] (`tokio-postgres`, its cell and parameter formats in `pg_values`),
//!   [`mysql`] (`mysql_async`): one file per driver.

pub mod pool;
pub mod query;
pub mod sql;
pub mod url;
pub mod values;

#[cfg(feature = "jdbc-mysql")]
pub mod mysql;
#[cfg(feature = "jdbc-postgres")]
mod pg_values;
#[cfg(feature = "jdbc-postgres")]
pub mod postgres;

use swoop_core::Registry;

pub fn register(registry: &mut Registry) {
    #[cfg(feature = "jdbc-postgres")]
    registry.register_task(postgres::factory());
    #[cfg(feature = "jdbc-mysql")]
    registry.register_task(mysql::factory());
}
