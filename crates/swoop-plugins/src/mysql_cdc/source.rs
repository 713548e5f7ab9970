//! The binlog reader behind `io.kestra.plugin.debezium.mysql.RealtimeTrigger`.
//!
//! `run` checks the server (binary log on, `binlog_format=ROW`, `binlog_row_image=FULL`,
//! `binlog_row_metadata=FULL`), decides where to start — the position kept in memory from the
//! last run in this process, else the saved [`Checkpoint`], else per `snapshotMode` a snapshot
//! ([`super::snapshot`]) or the binlog's current end — and registers as a replica
//! (`serverId`) to stream row events from there.
//!
//! Each row becomes one event. Its dedup key is its transaction's GTID (MariaDB
//! `domain-server-seq`, MySQL `uuid:n`) or, without GTIDs, the binlog file and the offset where
//! the transaction starts, plus the row's index in the transaction. Its position for
//! [`OrderedAcks`] is (file number, transaction start, row index). Restarts always begin at a
//! transaction's start (a row needs its transaction's table maps), so the restart point is the
//! start of the first transaction with a row not recorded yet, or, when everything handed out
//! is recorded, the end of the last transaction read. A committer task saves it (at most every
//! [`SAVE_EVERY`], and when the run ends) to the trigger's durable state ([`SourceContext::state`], under `stateName`); it is kept in memory too,
//! for reconnects. What is re-read after a crash is dropped by the dedup keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RotateEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, OptsBuilder, Row};
use serde_json::{Map, Value, json};
use swoop_core::realtime::ordered_acks::OrderedAcks;
use swoop_core::realtime::{
    Ack, Event, Outcome, RealtimeSource, SourceContext, SourceError, SourceState,
};
use tokio::sync::Notify;

use super::binlog::{self, Boundary, RowChange, Tables, Txn};
use super::checkpoint::{BinlogPos, Checkpoint, file_seq};
use super::config::{MysqlCdcConfig, SnapshotMode};
use crate::debezium::{self, Change, now_us};

/// How often the committer saves a moved restart point at most.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);
/// The heartbeat the server sends on an idle binlog stream.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// No event nor heartbeat for this long: the connection is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(20);

/// Row positions: (binlog file number, transaction start offset, row index in the transaction).
pub type RowPos = (u64, u64, u64);

/// The one stream `OrderedAcks` tracks.
const STREAM: u8 = 0;

/// What the reader and the acknowledgements share.
#[derive(Default)]
pub struct Progress {
    acks: OrderedAcks<u8, RowPos>,
    /// Binlog file names by number.
    files: std::collections::BTreeMap<u64, String>,
    /// The end of the last transaction read (every row handed out before it is accounted for).
    read_through: Option<BinlogPos>,
    /// Rows released (the trigger stopped before recording them): they stay pending.
    released: usize,
}

impl Progress {
    /// Where re-reading loses nothing: the start of the first transaction with a row not
    /// recorded, else the end of the last transaction read.
    pub fn restart_point(&self) -> Option<BinlogPos> {
        match self.acks.progress(&STREAM).and_then(|p| p.first_pending) {
            Some((seq, start, _)) => Some(BinlogPos {
                file: self.files.get(&seq)?.clone(),
                pos: start,
            }),
            None => self.read_through.clone(),
        }
    }
}

type Shared = Arc<(Mutex<Progress>, Notify)>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Progress> {
    p.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A configured MySQL/MariaDB CDC trigger.
pub struct MysqlCdcSource {
    pub(super) config: MysqlCdcConfig,
    /// The restart point of the last run in this process (reconnects start there).
    resume: Mutex<Option<Checkpoint>>,
    /// `snapshotMode: ALWAYS` snapshots once per start of the trigger in this process.
    snapshotted: AtomicBool,
}

fn transient(what: &str) -> impl Fn(mysql_async::Error) -> SourceError + '_ {
    move |e| classify(what, &e)
}

/// A server error the flow must fix is fatal (access denied, a missing privilege, a purged
/// binlog), the rest is transient.
pub(super) fn classify(what: &str, e: &mysql_async::Error) -> SourceError {
    if let mysql_async::Error::Server(s) = e {
        let hint = match s.code {
            1045 | 1044 => Some("check `username` and `password`"),
            1227 | 1142 | 1143 | 1370 => Some(
                "grant the user SELECT, RELOAD, REPLICATION SLAVE and REPLICATION CLIENT (MariaDB: BINLOG MONITOR, REPLICATION SLAVE)",
            ),
            1236 => Some(
                "the binlog position the trigger resumes from is no longer on the server (purged?) or another replica uses the same `serverId`; keep binlogs longer, or delete the trigger's checkpoint to start again from a snapshot",
            ),
            _ => None,
        };
        if let Some(hint) = hint {
            return SourceError::Fatal(format!("MySQL CDC: {what}: {e} ({hint})"));
        }
    }
    SourceError::Transient(format!("MySQL CDC: {what}: {e}"))
}

impl MysqlCdcSource {
    pub fn new(config: MysqlCdcConfig) -> MysqlCdcSource {
        MysqlCdcSource {
            config,
            resume: Mutex::new(None),
            snapshotted: AtomicBool::new(false),
        }
    }

    pub(super) fn opts(&self) -> Result<Opts, SourceError> {
        let c = &self.config.common;
        let user = match &c.username {
            Some(u) => Some(u.resolve("username").map_err(SourceError::Fatal)?),
            None => Some("root".to_string()),
        };
        let pass = match &c.password {
            Some(p) => Some(p.resolve("password").map_err(SourceError::Fatal)?),
            None => None,
        };
        Ok(OptsBuilder::default()
            .ip_or_hostname(c.hostname.clone())
            .tcp_port(c.port)
            .user(user)
            .pass(pass)
            .prefer_socket(false)
            .into())
    }

    fn where_(&self) -> String {
        format!(
            "{}:{}",
            self.config.common.hostname, self.config.common.port
        )
    }

    fn set_resume(&self, c: Checkpoint) {
        *self.resume.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }
}

/// What the server says about its binlog.
pub(super) struct Server {
    pub mariadb: bool,
    /// The binlog files the server still has.
    pub files: Vec<String>,
}

pub(super) async fn check_server(conn: &mut Conn, at: &str) -> Result<Server, SourceError> {
    let refuse = |m: String| SourceError::Fatal(format!("MySQL CDC at {at}: {m}"));
    type Settings = (Option<String>, Option<String>, Option<String>, String);
    let row: Option<Settings> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, VERSION()")
        .await
        .map_err(transient("reading the server's settings"))?;
    let Some((log_bin, format, image, version)) = row else {
        return Err(refuse("the server did not answer SELECT @@log_bin".into()));
    };
    if !matches!(log_bin.as_deref(), Some("1" | "ON")) {
        return Err(refuse("the binary log is off: start the server with --log-bin (and --binlog-format=ROW --binlog-row-metadata=FULL --server-id=N)".into()));
    }
    if !format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("ROW"))
    {
        return Err(refuse(format!(
            "binlog_format is {format:?}: set it to ROW"
        )));
    }
    if !image
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("FULL"))
    {
        return Err(refuse(format!(
            "binlog_row_image is {image:?}: set it to FULL (deletes and updates then carry the whole row)"
        )));
    }
    let metadata: Result<Option<String>, _> =
        conn.query_first("SELECT @@binlog_row_metadata").await;
    match metadata {
        Ok(Some(m)) if m.eq_ignore_ascii_case("FULL") => {}
        Ok(m) => {
            return Err(refuse(format!(
                "binlog_row_metadata is {m:?}: set it to FULL so that row events name their columns"
            )));
        }
        Err(e) => {
            return Err(refuse(format!(
                "the server has no binlog_row_metadata (MariaDB 10.5+ or MySQL 8.0.1+ is needed, so that row events name their columns): {e}"
            )));
        }
    }
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    if mariadb {
        let compress: Option<String> = conn
            .query_first("SELECT @@log_bin_compress")
            .await
            .unwrap_or(None);
        if matches!(compress.as_deref(), Some("1" | "ON")) {
            return Err(refuse(
                "log_bin_compress is ON: compressed row events cannot be read; turn it off".into(),
            ));
        }
    }
    let files: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(transient("listing the binary logs"))?;
    let files = files
        .into_iter()
        .filter_map(|mut r| r.take::<String, _>(0))
        .collect();
    Ok(Server { mariadb, files })
}

/// The binlog's current end.
pub(super) async fn current_position(conn: &mut Conn) -> Result<BinlogPos, SourceError> {
    let mut row: Option<Row> = conn.query_first("SHOW MASTER STATUS").await.ok().flatten();
    if row.is_none() {
        row = conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(transient("reading the binlog position"))?;
    }
    let mut row = row.ok_or_else(|| {
        SourceError::Fatal("MySQL CDC: SHOW MASTER STATUS is empty: is the binary log on?".into())
    })?;
    match (row.take::<String, _>(0), row.take::<u64, _>(1)) {
        (Some(file), Some(pos)) => Ok(BinlogPos { file, pos }),
        _ => Err(SourceError::Transient(
            "MySQL CDC: SHOW MASTER STATUS gave no file and position".into(),
        )),
    }
}

/// The Debezium `source` block of a row change.
pub(super) fn source_block(
    name: &str,
    db: &str,
    table: &str,
    ts_ms: i64,
    snapshot: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "version".into(),
        json!(concat!("swoop-", env!("CARGO_PKG_VERSION"))),
    );
    m.insert("connector".into(), json!("mysql"));
    m.insert("name".into(), json!(name));
    m.insert("ts_ms".into(), json!(ts_ms));
    m.insert("timestamp".into(), debezium::iso(ts_ms * 1000));
    m.insert("snapshot".into(), json!(snapshot));
    m.insert("db".into(), json!(db));
    m.insert("table".into(), json!(table));
    m.insert("ts_us".into(), json!(ts_ms * 1000));
    m.insert("ts_ns".into(), json!(ts_ms * 1_000_000));
    m
}

/// The event of one row change (`None` when the options drop it).
pub(super) fn event(
    config: &MysqlCdcConfig,
    change: Change,
    db: &str,
    table: &str,
    dedup_key: String,
    ack: Ack,
) -> Option<Event> {
    let key = match change.key.len() {
        0 => None,
        1 => change.key.values().next().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        _ => Some(Value::Object(change.key.clone()).to_string()),
    };
    let Some(variables) = debezium::variables(&config.common, db, table, change) else {
        // Dropped by the options (`deleted: DROP`): there is nothing to record, so the row is
        // done, as a recorded one is.
        ack.settle(Outcome::Duplicate);
        return None;
    };
    Some(Event {
        variables,
        dedup_key: Some(dedup_key),
        key,
        partition: Some(format!("{db}.{table}")),
        decode_error: None,
        execution_id: None,
        ack,
    })
}

#[async_trait]
impl RealtimeSource for MysqlCdcSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let store = ctx.state().clone();
        let key = self.config.common.state_name.clone();
        let at = self.where_();
        let opts = self.opts()?;
        let mut conn = Conn::new(opts.clone())
            .await
            .map_err(transient(&format!("cannot connect to {at}")))?;
        let server = check_server(&mut conn, &at).await?;
        let name = debezium::connector_name(ctx.consumer_name());

        let remembered = self
            .resume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let saved = match remembered {
            Some(c) => Some(c),
            None => match store.load(&key).await.map_err(SourceError::Transient)? {
                Some(text) => Some(Checkpoint::parse(&text).map_err(|e| {
                    SourceError::Fatal(format!("MySQL CDC: the checkpoint `{key}` is unreadable ({e}); delete it to start over"))
                })?),
                None => None,
            },
        };
        let mode = self.config.snapshot_mode;
        let first_start = !self.snapshotted.swap(true, Ordering::SeqCst);
        let snapshot_from = match &saved {
            Some(Checkpoint::Snapshot(p)) => Some(Some(p.clone())),
            Some(Checkpoint::Binlog(_)) if mode == SnapshotMode::Always && first_start => {
                Some(None)
            }
            Some(Checkpoint::Binlog(p)) if !server.files.contains(&p.file) => {
                if mode == SnapshotMode::WhenNeeded {
                    Some(None)
                } else {
                    return Err(SourceError::Fatal(format!(
                        "MySQL CDC at {at}: the binlog file {} the trigger resumes from was purged: events after {}:{} are lost to it; use snapshotMode WHEN_NEEDED, or delete the checkpoint `{key}` to start again",
                        p.file, p.file, p.pos
                    )));
                }
            }
            Some(Checkpoint::Binlog(_)) => None,
            None if mode == SnapshotMode::NoData => None,
            None => Some(None),
        };
        let start = match (snapshot_from, saved) {
            (Some(from), _) => {
                ctx.connected();
                let Some(p) =
                    super::snapshot::run(self, &ctx, &*store, &key, &name, server.mariadb, from)
                        .await?
                else {
                    return Ok(()); // stopped during the snapshot
                };
                let done = Checkpoint::Binlog(p.clone());
                store
                    .save(&key, &done.to_text())
                    .await
                    .map_err(SourceError::Transient)?;
                self.set_resume(done);
                if mode == SnapshotMode::InitialOnly {
                    ctx.stopped().await;
                    return Ok(());
                }
                p
            }
            (None, Some(Checkpoint::Binlog(p))) => p,
            (None, _) => {
                let p = current_position(&mut conn).await?;
                store
                    .save(&key, &Checkpoint::Binlog(p.clone()).to_text())
                    .await
                    .map_err(SourceError::Transient)?;
                p
            }
        };
        if mode == SnapshotMode::InitialOnly {
            ctx.connected();
            ctx.stopped().await;
            return Ok(());
        }
        drop(conn);
        self.stream(&ctx, store, &key, &name, &opts, server.mariadb, start)
            .await
    }
}

impl MysqlCdcSource {
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        ctx: &SourceContext,
        store: Arc<dyn SourceState>,
        key: &str,
        name: &str,
        opts: &Opts,
        mariadb: bool,
        start: BinlogPos,
    ) -> Result<(), SourceError> {
        let at = self.where_();
        let mut conn = Conn::new(opts.clone())
            .await
            .map_err(transient(&format!("cannot connect to {at}")))?;
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {}",
            HEARTBEAT.as_nanos()
        ))
        .await
        .map_err(transient("setting the heartbeat"))?;
        if mariadb {
            // Send GTID events as they are (not rewritten for old replicas).
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(transient("announcing the replica's capabilities"))?;
        }
        let file = start.file.clone();
        let request = BinlogStreamRequest::new(self.config.server_id)
            .with_filename(file.as_bytes())
            .with_pos(start.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(transient(&format!(
                "cannot read the binlog from {}:{}",
                start.file, start.pos
            )))?;
        tracing::info!(at = %at, file = %start.file, pos = start.pos, server_id = self.config.server_id, "mysql cdc: streaming the binlog");
        ctx.connected();

        let shared: Shared = Arc::default();
        {
            let mut p = lock(&shared);
            p.files.insert(start.file_seq(), start.file.clone());
            p.read_through = Some(start.clone());
            p.acks.assign(&STREAM);
        }
        let stop_committer = tokio_util::sync::CancellationToken::new();
        // Dropped (the runtime gave up waiting for the stop): the committer ends too.
        let _committer_guard = stop_committer.clone().drop_guard();
        let committer = tokio::spawn(commit_loop(
            shared.clone(),
            stop_committer.clone(),
            store.clone(),
            key.to_string(),
        ));
        let mut reader = Reader {
            source: self,
            shared: shared.clone(),
            name,
            file: start.file.clone(),
            txn: None,
            tables: Tables::default(),
        };
        let result = loop {
            let next = tokio::select! {
                biased;
                _ = ctx.stopped() => break Ok(()),
                next = tokio::time::timeout(IDLE_LIMIT, stream.next()) => next,
            };
            let e = match next {
                Err(_) => {
                    break Err(SourceError::Transient(format!(
                        "MySQL CDC at {at}: no binlog event nor heartbeat for {IDLE_LIMIT:?}"
                    )));
                }
                Ok(None) => {
                    break Err(SourceError::Transient(format!(
                        "MySQL CDC at {at}: the server ended the binlog stream"
                    )));
                }
                Ok(Some(Err(e))) => {
                    break Err(classify(
                        &format!("reading the binlog after {}", reader.file),
                        &e,
                    ));
                }
                Ok(Some(Ok(e))) => e,
            };
            let rows = match reader.read(&e, &stream) {
                Ok(rows) => rows,
                Err(e) => break Err(e),
            };
            if reader.emit(ctx, rows).await.is_err() {
                break Ok(());
            }
        };
        // The last save: wait a little for the outcomes of what is in flight (a released row
        // stays pending, and is read again next time).
        let deadline = tokio::time::Instant::now() + crate::realtime::SETTLE_GRACE;
        loop {
            let waiting = {
                let p = lock(&shared);
                p.acks.pending().saturating_sub(p.released)
            };
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), shared.1.notified()).await;
        }
        stop_committer.cancel();
        let last = committer.await.ok().flatten();
        let point = lock(&shared).restart_point();
        if let Some(p) = point {
            let c = Checkpoint::Binlog(p);
            if last.as_ref() != Some(&c)
                && let Err(e) = store.save(key, &c.to_text()).await
            {
                tracing::warn!(key = %key, error = %e, "mysql cdc: cannot save the last checkpoint; the rows since the previous one will be read again");
            }
            self.set_resume(c);
        }
        let _ = stream.close().await;
        result
    }
}

/// Saves the restart point whenever it moves (at most every [`SAVE_EVERY`]) until stopped;
/// returns what it saved last.
async fn commit_loop(
    shared: Shared,
    stop: tokio_util::sync::CancellationToken,
    store: Arc<dyn SourceState>,
    key: String,
) -> Option<Checkpoint> {
    let mut last: Option<Checkpoint> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return last,
            _ = tokio::time::sleep(SAVE_EVERY) => {}
        }
        let Some(point) = lock(&shared).restart_point() else {
            continue;
        };
        let c = Checkpoint::Binlog(point);
        if last.as_ref() == Some(&c) {
            continue;
        }
        match store.save(&key, &c.to_text()).await {
            Ok(()) => last = Some(c),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "mysql cdc: cannot save the checkpoint; retrying");
            }
        }
    }
}

/// One run's reading state.
struct Reader<'a> {
    source: &'a MysqlCdcSource,
    shared: Shared,
    name: &'a str,
    file: String,
    txn: Option<Txn>,
    tables: Tables,
}

impl Reader<'_> {
    /// Takes in one binlog event; returns the rows it carries.
    fn read(
        &mut self,
        e: &mysql_async::binlog::events::Event,
        stream: &mysql_async::BinlogStream,
    ) -> Result<Vec<(RowChange, u64, i64)>, SourceError> {
        let fatal = |m: String| SourceError::Fatal(format!("MySQL CDC: {m}"));
        if binlog::compressed_rows(e) {
            return Err(fatal("a compressed row event (log_bin_compress=ON) cannot be read; turn log_bin_compress off".into()));
        }
        let log_pos = u64::from(e.header().log_pos());
        if binlog::is_rotate(e) {
            if let Ok(r) = e.read_event::<RotateEvent<'_>>() {
                self.file = binlog::file_name(&r.name());
                let mut p = lock(&self.shared);
                p.files.insert(file_seq(&self.file), self.file.clone());
                if self.txn.is_none() {
                    p.read_through = Some(BinlogPos {
                        file: self.file.clone(),
                        pos: r.position(),
                    });
                }
            }
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        match binlog::boundary(e, self.txn.as_ref()) {
            Boundary::Start(t) => self.txn = Some(t),
            Boundary::End => {
                self.txn = None;
                if log_pos > 0 {
                    lock(&self.shared).read_through = Some(BinlogPos {
                        file: self.file.clone(),
                        pos: log_pos,
                    });
                }
                return Ok(rows);
            }
            Boundary::None => {}
        }
        match e.read_data() {
            Ok(Some(EventData::TableMapEvent(tme))) => {
                self.tables
                    .update(&tme, &self.source.config.common)
                    .map_err(fatal)?;
            }
            Ok(Some(EventData::RowsEvent(r))) => {
                let id = r.table_id();
                let (Some(tme), Some(table)) = (stream.get_tme(id), self.tables.get(id)) else {
                    return Err(fatal(format!(
                        "a row event for table id {id} without its table map (at {}:{log_pos})",
                        self.file
                    )));
                };
                if !table.captured {
                    let n = r.rows(tme).count() as u64;
                    self.txn
                        .get_or_insert_with(|| Txn {
                            start: binlog::event_start(e),
                            ..Txn::default()
                        })
                        .rows += n;
                    return Ok(rows);
                }
                let ts_ms = i64::from(e.header().timestamp()) * 1000;
                let changes = binlog::rows(&r, tme, table).map_err(fatal)?;
                let txn = self.txn.get_or_insert_with(|| Txn {
                    start: binlog::event_start(e),
                    ..Txn::default()
                });
                for c in changes {
                    rows.push((c, txn.rows, ts_ms));
                    txn.rows += 1;
                }
            }
            Ok(_) => {}
            Err(err) => {
                return Err(fatal(format!(
                    "an event at {}:{log_pos} does not decode: {err}",
                    self.file
                )));
            }
        }
        // Heartbeats and artificial events (made up by the server for this stream) are not
        // positions of the file.
        if self.txn.is_none() && log_pos > 0 && binlog::is_real(e) {
            lock(&self.shared).read_through = Some(BinlogPos {
                file: self.file.clone(),
                pos: log_pos,
            });
        }
        Ok(rows)
    }

    /// Hands the rows out; `Err` when the trigger stops.
    async fn emit(
        &mut self,
        ctx: &SourceContext,
        rows: Vec<(RowChange, u64, i64)>,
    ) -> Result<(), swoop_core::realtime::Stopped> {
        let Some(txn) = self.txn.clone() else {
            return Ok(());
        };
        let seq = file_seq(&self.file);
        for (c, index, ts_ms) in rows {
            let pos: RowPos = (seq, txn.start, index);
            let dedup = match &txn.gtid {
                Some(g) => format!("mysql:gtid:{g}:{index}"),
                None => format!("mysql:{}:{}:{index}", self.file, txn.start),
            };
            let mut source = source_block(self.name, &c.table.db, &c.table.table, ts_ms, "false");
            source.insert("server_id".into(), json!(self.source.config.server_id));
            if let Some(g) = &txn.gtid {
                source.insert("gtid".into(), json!(g));
            }
            source.insert("file".into(), json!(self.file));
            source.insert("pos".into(), json!(txn.start));
            source.insert("row".into(), json!(c.row_in_event));
            let change = Change {
                op: c.op,
                before: c.before,
                after: c.after,
                key: c.key,
                source,
                read_us: now_us(),
                transaction: None,
            };
            let epoch = lock(&self.shared).acks.handed_out(&STREAM, pos);
            let shared = self.shared.clone();
            let ack = Ack::new(move |outcome| {
                let mut p = lock(&shared);
                if outcome.is_recorded() {
                    p.acks.ack(&STREAM, pos, epoch);
                } else {
                    p.released += 1;
                }
                drop(p);
                shared.1.notify_waiters();
            });
            if let Some(ev) = event(
                &self.source.config,
                change,
                &c.table.db,
                &c.table.table,
                dedup,
                ack,
            ) {
                ctx.emit(ev).await?;
            }
        }
        Ok(())
    }
}
