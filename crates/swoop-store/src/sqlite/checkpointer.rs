//! The background checkpointer: copies the WAL's committed pages into the database file on a
//! thread of its own, so that the writer's commits do not wait for a checkpoint's fsyncs.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
//! writer thread: it copies the pages and fsyncs the WAL and the database file, and every write
//! queued behind that commit waits (measured: two fsyncs every 1,000 pages, 4–5 ms each, a
//! quarter of the writer's wall time under load). Here the writer rings a doorbell after each
//! commit and this thread runs a `PASSIVE` checkpoint (it never blocks the writer or readers),
//! at most once per [`CHECKPOINT_EVERY`]. The writer keeps its own automatic checkpoint at a
//! higher threshold ([`WRITER_AUTOCHECKPOINT_PAGES`]) as the bound on the WAL's size: by then
//! most pages are copied already, and a checkpoint that catches up lets the WAL start over.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, Ctx};
use crate::StoreResult;

/// The least time between two background checkpoints.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer's own automatic checkpoint threshold, in WAL pages (SQLite's default is 1,000).
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 8_192;

/// The writer's side: rings after each commit; never blocks.
pub(super) struct Doorbell(mpsc::SyncSender<()>);

impl Doorbell {
    pub(super) fn ring(&self) {
        // Full: a ring is pending already, which is as good.
        let _ = self.0.try_send(());
    }
}

/// Starts the checkpointer on its own connection. It stops when the doorbell is dropped (the
/// writer has stopped).
pub(super) fn start(path: &Path) -> StoreResult<Doorbell> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx_with(|| format!("cannot open {} for checkpoints", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("busy_timeout")?;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("swoop-store-checkpoint".into())
        .spawn(move || run(conn, rx))
        .map_err(|e| {
            crate::StoreError::Backend(format!("cannot start the checkpoint thread: {e}"))
        })?;
    Ok(Doorbell(tx))
}

fn run(conn: Connection, doorbell: mpsc::Receiver<()>) {
    while doorbell.recv().is_ok() {
        let started = Instant::now();
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        });
        match result {
            Ok((busy, wal_pages, copied)) => {
                tracing::trace!(
                    busy,
                    wal_pages,
                    copied,
                    took_us = started.elapsed().as_micros() as u64,
                    "sqlite: background checkpoint"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "sqlite: background checkpoint failed; the writer's own checkpoint still bounds the WAL")
            }
        }
        // A rate limit, not a synchronisation: rings meanwhile are kept (one) for the next round.
        std::thread::sleep(CHECKPOINT_EVERY.saturating_sub(started.elapsed()));
    }
    tracing::debug!("sqlite checkpointer stopped");
}
