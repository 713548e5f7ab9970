//! `io.kestra.plugin.debezium.sqlserver.RealtimeTrigger`: its properties are checked like every
//! Debezium trigger's (B.1, B.4), so a flow written for Kestra validates, but the trigger is
//! refused when it starts: no SQL Server runs where swoop is tested, and reading its CDC tables
//! natively is not written yet. The refusal is a fatal status, shown on the trigger.

use async_trait::async_trait;
use swoop_core::realtime::{RealtimeSource, SourceContext, SourceError};

use super::config::SqlServerCdcConfig;

/// A configured SQL Server CDC trigger, which refuses to start.
pub struct SqlServerCdcSource {
    pub config: SqlServerCdcConfig,
}

impl SqlServerCdcSource {
    /// The refusal's message.
    pub fn refusal(&self) -> String {
        format!(
            "no SQL Server change capture in this build: swoop cannot capture SQL Server changes yet; the trigger on database `{}` at {}:{} was checked and will not start (use a MySQL/MariaDB or PostgreSQL CDC trigger, or Kestra for SQL Server)",
            self.config.database, self.config.common.hostname, self.config.common.port
        )
    }
}

#[async_trait]
impl RealtimeSource for SqlServerCdcSource {
    async fn run(&self, _ctx: SourceContext) -> Result<(), SourceError> {
        Err(SourceError::Fatal(self.refusal()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn refused_at_start_with_a_clear_fatal_error() {
        let config = SqlServerCdcConfig::from_json(&json!({
            "hostname": "sql.example", "port": "1433", "database": "shop"
        }))
        .unwrap();
        let source = SqlServerCdcSource { config };
        let (ctx, mut events, _stop) = SourceContext::channel("dev/flow/t", 1);
        let Err(SourceError::Fatal(m)) = source.run(ctx).await else {
            panic!("a fatal error");
        };
        assert!(m.contains("no SQL Server"), "{m}");
        assert!(
            m.contains("swoop cannot capture SQL Server changes yet"),
            "{m}"
        );
        assert!(m.contains("`shop` at sql.example:1433"), "{m}");
        assert!(events.try_recv().is_err(), "no event");
    }
}
