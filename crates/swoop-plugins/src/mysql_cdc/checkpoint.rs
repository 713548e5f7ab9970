//! Where a MySQL CDC trigger restarts: its checkpoint, saved durably outside the server.
//!
//! MySQL keeps no position for a binlog reader (there is no replication slot): the reader must
//! remember where it was. The checkpoint is the binlog position from which re-reading loses
//! nothing — the start of the first transaction with a row not recorded yet, or the end of the
//! last transaction read when every row is recorded. It only ever names positions whose rows
//! are all durable in the store, so a checkpoint older than the truth only re-reads events,
//! and the store's dedup keys drop their second executions.
//!
//! The runtime keeps it in the trigger's durable state ([`swoop_core::realtime::SourceState`],
//! the store's trigger state), under the trigger's `stateName`, as a small JSON text.

use serde_json::{Value, json};

/// A binlog position: a file name and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    /// The file's sequence number (`binlog.000042` → 42), which orders files.
    pub fn file_seq(&self) -> u64 {
        file_seq(&self.file)
    }
}

pub fn file_seq(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a trigger saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Stream from here.
    Binlog(BinlogPos),
    /// A snapshot consistent with this position was started and not finished: do it again
    /// (with the same dedup keys), then stream from this position.
    Snapshot(BinlogPos),
}

impl Checkpoint {
    pub fn to_text(&self) -> String {
        let (kind, p) = match self {
            Checkpoint::Binlog(p) => ("binlog", p),
            Checkpoint::Snapshot(p) => ("snapshot", p),
        };
        json!({"kind": kind, "file": p.file, "pos": p.pos}).to_string()
    }

    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let file = v["file"].as_str().filter(|f| !f.is_empty());
        let pos = v["pos"].as_u64();
        let (Some(file), Some(pos)) = (file, pos) else {
            return Err(format!("no `file` and `pos` in {v}"));
        };
        let p = BinlogPos {
            file: file.to_string(),
            pos,
        };
        match v["kind"].as_str() {
            Some("binlog") => Ok(Checkpoint::Binlog(p)),
            Some("snapshot") => Ok(Checkpoint::Snapshot(p)),
            other => Err(format!("unknown kind {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip() {
        let a = Checkpoint::Binlog(BinlogPos {
            file: "binlog.000002".into(),
            pos: 1234,
        });
        assert_eq!(Checkpoint::parse(&a.to_text()).unwrap(), a);
        let b = Checkpoint::Snapshot(BinlogPos {
            file: "binlog.000003".into(),
            pos: 4,
        });
        assert_eq!(Checkpoint::parse(&b.to_text()).unwrap(), b);
        assert!(Checkpoint::parse("{}").unwrap_err().contains("no `file`"));
        assert!(
            Checkpoint::parse(r#"{"kind":"x","file":"f","pos":1}"#)
                .unwrap_err()
                .contains("unknown kind")
        );
        assert_eq!(file_seq("mysql-bin.000042"), 42);
    }
}
