//! The replication consumer behind the trigger, as a [`RealtimeSource`].
//!
//! Each run: a SQL connection (tokio-postgres) checks `wal_level`, creates the publication when
//! missing (for the included tables when they are plain names, else `FOR ALL TABLES`) and looks
//! the slot up; a replication session (pgwire-replication, gated) creates the slot when
//! missing — for `snapshotMode: INITIAL` through the snapshot (see [`super::snapshot`]) —
//! then streams pgoutput from the slot's confirmed position.
//!
//! Every row change is handed out at position `(commit LSN, row index in its transaction)`
//! (the commit LSN comes with Begin), with that as its dedup key; the Commit adds a marker
//! `(commit LSN, MAX)`, recorded at once. [`OrderedAcks`] folds the outcomes: when everything
//! through a transaction's marker is recorded, the transaction's end LSN is confirmed to the
//! server (standby status flush LSN), never past a row whose execution is not recorded. When
//! nothing is outstanding, a keepalive's WAL end is confirmed too, so an idle slot does not
//! hold WAL back. On stop, once the session has ended, the slot is advanced to the last
//! confirmed position with `pg_replication_slot_advance` (the library sends no last status).
//!
//! A restart reads again from the slot's confirmed position: the rows of the transactions
//! after it come again with the same dedup keys, so nothing is lost and nothing duplicated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use serde_json::Value;
use swoop_core::realtime::ordered_acks::OrderedAcks;
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};
use tokio::sync::Notify;
use tokio_postgres::{Client, NoTls};

use super::config::{PostgresCdcConfig, SnapshotMode};
use super::pgoutput::{self, Message, Relation, key_map, row_map};
use super::record::{Change, Origin, Shaper, lsn_text};
use crate::debezium::{Op, connector_name};

/// The one stream of [`OrderedAcks`]: the slot.
const SLOT: u8 = 0;
/// The marker position of a transaction's commit, after all its rows.
const COMMIT_MARK: u64 = u64::MAX;
/// How often the session sends a standby status update at most.
const STATUS_INTERVAL: Duration = Duration::from_millis(500);
/// Events buffered between the replication session and this consumer.
const BUFFER_EVENTS: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The session's settings, so values are rendered the way [`pgoutput::text_value`] reads them.
pub(super) const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=1";

/// A row position: `(commit LSN, row index)`.
type Pos = (u64, u64);

/// What acknowledgements share with the run loop.
#[derive(Default)]
struct Confirmations {
    acks: OrderedAcks<u8, Pos>,
    /// Commit LSN → end LSN of the transactions whose Commit was read.
    ends: BTreeMap<u64, u64>,
}

impl Confirmations {
    /// The LSN to confirm for `through`: the end of the newest transaction all of whose rows
    /// (and its marker) are recorded.
    fn confirmable(&mut self, through: Pos) -> Option<u64> {
        let (lsn, idx) = through;
        let done: Vec<u64> = self
            .ends
            .range(..=lsn)
            .filter(|(c, _)| **c < lsn || idx == COMMIT_MARK)
            .map(|(c, _)| *c)
            .collect();
        let end = done.last().and_then(|c| self.ends.get(c).copied());
        for c in done {
            self.ends.remove(&c);
        }
        end
    }
}

pub(super) struct Shared {
    confirmations: Mutex<Confirmations>,
    advanced: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Confirmations> {
        self.confirmations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A configured PostgreSQL CDC trigger.
pub struct PostgresCdcSource {
    pub(super) config: PostgresCdcConfig,
}

impl PostgresCdcSource {
    pub fn new(config: PostgresCdcConfig) -> PostgresCdcSource {
        PostgresCdcSource { config }
    }
}

/// A SQL error as a [`SourceError`]: refused credentials, a missing database or object and
/// missing privileges are fatal; the rest (the server is down, the connection broke) is not.
pub(super) fn sql_error(at: &str, what: &str, e: &tokio_postgres::Error) -> SourceError {
    let text = crate::props::error_chain(e);
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let message = format!("PostgreSQL at {at}: {what}: {text}");
    if ["28", "3D", "42"]
        .iter()
        .any(|class| code.starts_with(class))
    {
        SourceError::Fatal(message)
    } else {
        SourceError::Transient(message)
    }
}

fn wire_error(at: &str, what: &str, e: &PgWireError) -> SourceError {
    let message = format!("PostgreSQL at {at}: {what}: {e}");
    match e {
        PgWireError::Auth(_) => SourceError::Fatal(message),
        PgWireError::Server(m)
            if ["28P01", "3D000", "42704", "42501"]
                .iter()
                .any(|c| m.contains(c)) =>
        {
            SourceError::Fatal(message)
        }
        _ => SourceError::Transient(message),
    }
}

/// Double-quotes an identifier.
pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

impl PostgresCdcSource {
    async fn sql(&self, user: &str, password: &str) -> Result<Client, SourceError> {
        let c = &self.config;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&c.common.hostname)
            .port(c.common.port)
            .user(user)
            .dbname(&c.database)
            .application_name("swoop-cdc")
            .options(SESSION_OPTIONS)
            .connect_timeout(CONNECT_TIMEOUT);
        if !password.is_empty() {
            config.password(password);
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| sql_error(&c.display(), "cannot connect", &e))?;
        let at = c.display();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(at = %at, error = %e, "postgres cdc: SQL connection ended");
            }
        });
        Ok(client)
    }

    /// Checks `wal_level`, creates the publication when missing; returns the slot's confirmed
    /// position when the slot exists.
    async fn prepare(&self, sql: &Client) -> Result<Option<u64>, SourceError> {
        let c = &self.config;
        let at = c.display();
        let level: String = sql
            .query_one("SHOW wal_level", &[])
            .await
            .map_err(|e| sql_error(&at, "cannot read wal_level", &e))?
            .get(0);
        if level != "logical" {
            return Err(SourceError::Fatal(format!(
                "PostgreSQL at {at}: wal_level is `{level}`; logical replication needs `wal_level = logical` (postgresql.conf, then a restart)"
            )));
        }
        let exists = sql
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&c.publication_name],
            )
            .await
            .map_err(|e| sql_error(&at, "cannot look the publication up", &e))?;
        if exists.is_none() {
            let target = match c.publication_tables() {
                Some(tables) => format!(
                    "FOR TABLE {}",
                    tables
                        .iter()
                        .map(|(s, t)| format!("{}.{}", quote(s), quote(t)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "FOR ALL TABLES".to_string(),
            };
            let create = format!("CREATE PUBLICATION {} {target}", quote(&c.publication_name));
            tracing::info!(at = %at, publication = %c.publication_name, statement = %create, "postgres cdc: creating the publication");
            sql.batch_execute(&create).await.map_err(|e| {
                sql_error(
                    &at,
                    &format!("cannot create the publication (`{create}`)"),
                    &e,
                )
            })?;
        }
        let slot = sql
            .query_opt(
                "SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&c.slot_name],
            )
            .await
            .map_err(|e| sql_error(&at, "cannot look the replication slot up", &e))?;
        let Some(row) = slot else { return Ok(None) };
        let plugin: Option<String> = row.get(0);
        let database: Option<String> = row.get(1);
        if plugin.as_deref() != Some("pgoutput") || database.as_deref() != Some(&c.database) {
            return Err(SourceError::Fatal(format!(
                "PostgreSQL at {at}: the replication slot `{}` exists for plugin {plugin:?} on database {database:?}; this trigger needs a pgoutput slot on `{}`: choose another `slotName` or drop that slot",
                c.slot_name, c.database
            )));
        }
        let lsn: Option<String> = row.get(2);
        Ok(Some(
            lsn.and_then(|l| Lsn::parse(&l).ok())
                .map_or(0, |l| l.as_u64()),
        ))
    }

    /// Opens the gated replication session.
    async fn session(
        &self,
        user: &str,
        password: &str,
        start: u64,
    ) -> Result<ReplicationClient, SourceError> {
        let c = &self.config;
        let config = ReplicationConfig::new(
            c.common.hostname.clone(),
            user,
            password,
            c.database.clone(),
            c.slot_name.clone(),
            c.publication_name.clone(),
        )
        .with_port(c.common.port)
        .with_start_lsn(Lsn::from_u64(start))
        .with_status_interval(STATUS_INTERVAL)
        .with_buffer_size(BUFFER_EVENTS)
        .with_options(SESSION_OPTIONS)
        .with_application_name("swoop-cdc");
        ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| wire_error(&c.display(), "cannot open a replication session", &e))
    }
}

/// Runs a replication command on the gated session; returns its first row's text columns.
pub(super) async fn command(
    client: &mut ReplicationClient,
    at: &str,
    sql: &str,
) -> Result<Vec<String>, SourceError> {
    let rows = client
        .simple_query(sql)
        .await
        .map_err(|e| wire_error(at, &format!("`{sql}` failed"), &e))?;
    Ok(rows
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            c.map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        })
        .collect())
}

/// The LSN a slot command answered (`consistent_point`).
pub(super) fn parse_lsn(at: &str, text: Option<&String>) -> Result<u64, SourceError> {
    text.and_then(|t| Lsn::parse(t).ok())
        .map(|l| l.as_u64())
        .ok_or_else(|| {
            SourceError::Transient(format!(
                "PostgreSQL at {at}: the slot was created without a consistent point"
            ))
        })
}

#[async_trait]
impl RealtimeSource for PostgresCdcSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let c = &self.config;
        let at = c.display();
        let (user, password) = c.credentials().map_err(SourceError::Fatal)?;
        let sql = self.sql(&user, &password).await?;
        let slot_lsn = self.prepare(&sql).await?;
        let name = connector_name(ctx.consumer_name());
        let shaper = Shaper {
            config: c,
            name: &name,
        };
        let mut session = self
            .session(&user, &password, slot_lsn.unwrap_or(0))
            .await?;
        let start = match slot_lsn {
            Some(lsn) => lsn,
            None if c.snapshot_mode == SnapshotMode::Never => {
                let q = format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                    c.slot_name
                );
                let row = command(&mut session, &at, &q).await?;
                tracing::info!(at = %at, slot = %c.slot_name, "postgres cdc: created the replication slot");
                parse_lsn(&at, row.get(1))?
            }
            None => {
                ctx.connected();
                match super::snapshot::initial(self, &ctx, &shaper, &sql, &mut session).await? {
                    Some(lsn) => lsn,
                    None => return Ok(()), // stopped during the snapshot: redone next time
                }
            }
        };
        session
            .start()
            .await
            .map_err(|e| wire_error(&at, "cannot start replication", &e))?;
        session.wait_started().await.map_err(|e| {
            wire_error(
                &at,
                &format!("cannot start replication from slot `{}`", c.slot_name),
                &e,
            )
        })?;
        ctx.connected();
        tracing::info!(at = %at, slot = %c.slot_name, from = %lsn_text(start), "postgres cdc: streaming");

        let shared = Arc::new(Shared {
            confirmations: Mutex::default(),
            advanced: Notify::new(),
        });
        shared.lock().acks.assign_from(&SLOT, (start, COMMIT_MARK));
        let mut stream = Stream {
            shaper: &shaper,
            ctx: &ctx,
            shared: &shared,
            relations: Default::default(),
            tx: None,
            confirmed: start,
        };
        let result = stream.pump(&mut session, &at).await;
        let confirmed = stream.confirm(&session);
        let _ = tokio::time::timeout(Duration::from_secs(5), session.shutdown()).await;
        // After a clean stop the server is there to take the last position.
        if result.is_ok() && confirmed > start {
            advance(&sql, &at, &c.slot_name, confirmed).await;
        }
        result
    }
}

/// Moves the (released) slot to `lsn`: the last confirmation, which the session did not send.
async fn advance(sql: &Client, at: &str, slot: &str, lsn: u64) {
    let target = lsn_text(lsn);
    for _ in 0..20 {
        match sql
            .execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&slot, &target],
            )
            .await
        {
            Ok(_) => return,
            // The walsender may not have released the slot yet.
            Err(e) if e.code().is_some_and(|c| c.code() == "55006") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => {
                tracing::warn!(at = %at, slot = %slot, lsn = %target, error = %e, "postgres cdc: cannot advance the slot on stop (its rows come again, deduplicated)");
                return;
            }
        }
    }
}

/// The transaction being read.
struct Tx {
    commit_lsn: u64,
    xid: u32,
    ts_us: i64,
    rows: u64,
}

/// The streaming loop of one run.
struct Stream<'a> {
    shaper: &'a Shaper<'a>,
    ctx: &'a SourceContext,
    shared: &'a Arc<Shared>,
    relations: std::collections::HashMap<u32, Relation>,
    tx: Option<Tx>,
    /// The LSN last confirmed.
    confirmed: u64,
}

impl Stream<'_> {
    /// Confirms what is recorded; returns the confirmed LSN.
    fn confirm(&mut self, session: &ReplicationClient) -> u64 {
        let mut state = self.shared.lock();
        for (_, progress) in state.acks.take_advanced() {
            if let Some(through) = progress.through
                && let Some(end) = state.confirmable(through)
                && end > self.confirmed
            {
                self.confirmed = end;
            }
        }
        drop(state);
        session.update_applied_lsn(Lsn::from_u64(self.confirmed));
        self.confirmed
    }

    async fn pump(&mut self, session: &mut ReplicationClient, at: &str) -> Result<(), SourceError> {
        loop {
            let event = tokio::select! {
                biased;
                _ = self.ctx.stopped() => return Ok(()),
                _ = self.shared.advanced.notified() => {
                    self.confirm(session);
                    continue;
                }
                e = session.recv() => e,
            };
            let event = match event {
                Ok(Some(e)) => e,
                Ok(None) => {
                    return Err(SourceError::Transient(format!(
                        "PostgreSQL at {at}: the replication stream ended"
                    )));
                }
                Err(e) => return Err(wire_error(at, "replication stream", &e)),
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    self.tx = Some(Tx {
                        commit_lsn: final_lsn.as_u64(),
                        xid,
                        ts_us: pgwire_replication::protocol::replication::pg_to_unix_timestamp(
                            commit_time_micros,
                        ),
                        rows: 0,
                    });
                }
                ReplicationEvent::XLogData {
                    wal_start, data, ..
                } => {
                    let message = pgoutput::decode(&data).map_err(|e| {
                        SourceError::Transient(format!(
                            "PostgreSQL at {at}: at {}: {e}",
                            lsn_text(wal_start.as_u64())
                        ))
                    })?;
                    if self.row(message, wal_start.as_u64(), at).await.is_err() {
                        return Ok(()); // stopping
                    }
                }
                ReplicationEvent::Commit { lsn, end_lsn, .. } => {
                    let commit = lsn.as_u64();
                    self.tx = None;
                    let mut state = self.shared.lock();
                    state.ends.insert(commit, end_lsn.as_u64());
                    let epoch = state.acks.handed_out(&SLOT, (commit, COMMIT_MARK));
                    state.acks.ack(&SLOT, (commit, COMMIT_MARK), epoch);
                    drop(state);
                    self.confirm(session);
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    let idle = self.tx.is_none() && self.shared.lock().acks.pending() == 0;
                    self.confirm(session);
                    if idle && wal_end.as_u64() > self.confirmed {
                        self.confirmed = wal_end.as_u64();
                        session.update_applied_lsn(wal_end);
                    }
                }
                _ => {}
            }
        }
    }

    /// Handles one decoded message; `Err` when the trigger is stopping.
    async fn row(
        &mut self,
        message: Message,
        lsn: u64,
        at: &str,
    ) -> Result<(), swoop_core::realtime::Stopped> {
        let (relation, op, before, after) = match message {
            Message::Relation(r) => {
                self.relations.insert(r.oid, r);
                return Ok(());
            }
            Message::Insert { relation, new } => (relation, Op::Create, None, Some(new)),
            Message::Update { relation, old, new } => (relation, Op::Update, old, Some(new)),
            Message::Delete { relation, old } => (relation, Op::Delete, Some(old), None),
            // Debezium skips truncates by default (`skipped.operations=t`).
            Message::Truncate { .. } | Message::Other(_) => return Ok(()),
        };
        let Some(tx) = self.tx.as_mut() else {
            tracing::warn!(at = %at, lsn = %lsn_text(lsn), "postgres cdc: a row change outside a transaction, skipped");
            return Ok(());
        };
        let index = tx.rows;
        tx.rows += 1;
        let (commit_lsn, xid, ts_us) = (tx.commit_lsn, tx.xid, tx.ts_us);
        let Some(rel) = self.relations.get(&relation) else {
            tracing::warn!(at = %at, lsn = %lsn_text(lsn), relation, "postgres cdc: a row of a table the stream did not describe, skipped");
            return Ok(());
        };
        let table = rel.qualified();
        let config = self.shaper.config;
        if !config.common.captures(&rel.schema, &rel.name) {
            return Ok(());
        }
        let keep = |column: &str| config.common.keeps_column(&rel.schema, &rel.name, column);
        let key_tuple = after.as_ref().or(before.as_ref());
        let key = key_tuple.map(|t| key_map(rel, t)).unwrap_or_default();
        let change = Change {
            op,
            before: before.map(|t| row_map(rel, &t, &keep, false)),
            after: after.map(|t| row_map(rel, &t, &keep, false)),
            key,
            origin: Origin {
                schema: &rel.schema,
                table: &rel.name,
                tx_id: Some(xid),
                lsn,
                ts_us,
                snapshot: "false",
            },
        };
        let event_key =
            (!change.key.is_empty()).then(|| Value::Object(change.key.clone()).to_string());
        let Some(variables) = self.shaper.variables(change) else {
            return Ok(());
        };
        let pos = (commit_lsn, index);
        let epoch = self.shared.lock().acks.handed_out(&SLOT, pos);
        let shared = Arc::clone(self.shared);
        let mut event = Event::new(variables);
        event.dedup_key = Some(format!("pg:{}:{index}", lsn_text(commit_lsn)));
        event.key = event_key;
        event.partition = Some(table);
        event.ack = Ack::on_recorded(move || {
            if shared.lock().acks.ack(&SLOT, pos, epoch) {
                shared.advanced.notify_one();
            }
        });
        self.ctx.emit(event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_transactions_are_confirmed() {
        let mut c = Confirmations::default();
        let e = c.acks.assign_from(&SLOT, (100, COMMIT_MARK));
        for pos in [
            (200, 0),
            (200, 1),
            (200, COMMIT_MARK),
            (300, 0),
            (300, COMMIT_MARK),
        ] {
            c.acks.handed_out(&SLOT, pos);
        }
        c.ends.insert(200, 210);
        c.ends.insert(300, 310);
        assert!(c.acks.ack(&SLOT, (200, COMMIT_MARK), e));
        assert!(c.acks.ack(&SLOT, (300, COMMIT_MARK), e));
        assert!(c.acks.ack(&SLOT, (300, 0), e));
        assert!(c.acks.ack(&SLOT, (200, 0), e));
        let through = c.acks.progress(&SLOT).and_then(|p| p.through).unwrap();
        assert_eq!(through, (200, 0));
        assert_eq!(c.confirmable(through), None, "row (200, 1) is not recorded");
        assert!(c.acks.ack(&SLOT, (200, 1), e));
        let through = c.acks.progress(&SLOT).and_then(|p| p.through).unwrap();
        assert_eq!(through, (300, COMMIT_MARK));
        assert_eq!(c.confirmable(through), Some(310));
        assert!(c.ends.is_empty());
    }
}
