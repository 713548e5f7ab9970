//! Internal storage: the `kestra:///…` files tasks write and read, laid out as Kestra does.
//!
//! This module owns the URI scheme and the layout (no I/O), the [`InternalStorage`] trait a
//! backend implements (the local filesystem one lives in `swoop-store`; an S3-compatible one can
//! implement the same trait), an in-memory backend for tests and `flow run`, and [`TaskStorage`],
//! the view of storage one task run gets: it writes under its own folder and may read only the
//! files of its execution.
//!
//! Layout (Kestra's, section G of the plugin reference):
//! `/<namespace with . as />/<flowId>/executions/<executionId>/tasks/<taskId>/<taskRunId>/<file>`,
//! trigger files under `…/executions/<id>/trigger/<triggerId>/<file>`.
//!
//! Reads and writes are streams (`AsyncRead` / `AsyncWrite`): a 1 GB file never sits in memory.
//! Templates (`read()`, `fileSize()` …) render synchronously, so backends also answer a few
//! small blocking calls ([`InternalStorage::read_small`], [`InternalStorage::size`]).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

pub const SCHEME: &str = "kestra://";

/// A stream of a stored file's bytes.
pub type FileReader = Box<dyn AsyncRead + Send + Unpin>;
/// A file being written; it becomes visible once `shutdown()` returns.
pub type FileWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A stored file, as `…/file/metas` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileMeta {
    /// The `kestra:///…` URI.
    pub uri: String,
    pub size: u64,
}

/// A storage path: absolute, `/`-separated, no empty, `.` or `..` segment. Built only through
/// [`StoragePath::parse`] or the layout functions, so a path that escapes its folder cannot
/// exist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoragePath(String);

impl StoragePath {
    /// Parses a `kestra:///a/b` URI (or a bare `/a/b` path).
    pub fn parse(uri: &str) -> Result<StoragePath, String> {
        let path = uri.strip_prefix(SCHEME).unwrap_or(uri);
        if !path.starts_with('/') {
            return Err(format!(
                "`{uri}` is not an internal storage URI (expected `kestra:///…`)"
            ));
        }
        let mut clean = String::with_capacity(path.len());
        for segment in path[1..].split('/') {
            check_segment(segment).map_err(|e| format!("`{uri}`: {e}"))?;
            clean.push('/');
            clean.push_str(segment);
        }
        Ok(StoragePath(clean))
    }

    /// The path without the scheme (`/a/b`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `kestra:///a/b` URI.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// This path with one more segment (which must be a plain name).
    pub fn join(&self, name: &str) -> Result<StoragePath, String> {
        let mut out = self.0.clone();
        for segment in name.split('/') {
            check_segment(segment).map_err(|e| format!("file name `{name}`: {e}"))?;
            out.push('/');
            out.push_str(segment);
        }
        Ok(StoragePath(out))
    }

    /// Whether `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &StoragePath) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }

    /// The segments, without the leading `/`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }
}

impl std::fmt::Display for StoragePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.0)
    }
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() || segment == "." || segment == ".." {
        return Err("empty, `.` and `..` path segments are not allowed".into());
    }
    if segment.contains('\\') || segment.contains('\0') {
        return Err("`\\` and NUL are not allowed in paths".into());
    }
    Ok(())
}

/// `/<namespace as path>/<flowId>/executions/<executionId>`: every file of one execution.
pub fn execution_prefix(
    namespace: &str,
    flow_id: &str,
    execution_id: &str,
) -> Result<StoragePath, String> {
    let mut path = String::new();
    for part in namespace.split('.') {
        path.push('/');
        path.push_str(part);
    }
    path.push('/');
    path.push_str(flow_id);
    path.push_str("/executions/");
    path.push_str(execution_id);
    StoragePath::parse(&path)
}

/// `…/executions/<id>/tasks/<taskId>/<taskRunId>`: the folder of one task run's files.
pub fn task_run_prefix(
    execution: &StoragePath,
    task_id: &str,
    task_run_id: &str,
) -> Result<StoragePath, String> {
    execution.join("tasks")?.join(task_id)?.join(task_run_id)
}

/// `…/executions/<id>/trigger/<triggerId>`: the folder of the files a trigger wrote.
pub fn trigger_prefix(execution: &StoragePath, trigger_id: &str) -> Result<StoragePath, String> {
    execution.join("trigger")?.join(trigger_id)
}

/// A place to keep files. Implementations: the local filesystem (`swoop_store::LocalStorage`,
/// the default, under the data directory) and [`MemoryStorage`] (tests, `flow run`).
#[async_trait]
pub trait InternalStorage: Send + Sync {
    /// Opens a file for writing (replacing any file at that path). The file is complete once
    /// the writer's `shutdown()` returned; a writer dropped before that leaves no file.
    async fn create(&self, path: &StoragePath) -> io::Result<FileWriter>;
    /// Opens a file for reading; `NotFound` when there is none.
    async fn open(&self, path: &StoragePath) -> io::Result<FileReader>;
    /// Every file at or below `prefix`, sorted by path.
    async fn list(&self, prefix: &StoragePath) -> io::Result<Vec<FileMeta>>;
    /// Deletes every file at or below `prefix`; returns how many there were.
    async fn delete_prefix(&self, prefix: &StoragePath) -> io::Result<u64>;
    /// A file's size, `None` when there is none. Blocking but cheap (templates call it).
    fn size(&self, path: &StoragePath) -> io::Result<Option<u64>>;
    /// Reads a whole file of at most `limit` bytes (templates' `read()`). Blocking.
    fn read_small(&self, path: &StoragePath, limit: u64) -> io::Result<Vec<u8>>;
}

/// Writes `data` to `path` and returns the number of bytes written.
pub async fn put(
    storage: &dyn InternalStorage,
    path: &StoragePath,
    data: &mut (dyn AsyncRead + Send + Unpin),
) -> io::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut writer = storage.create(path).await?;
    let n = tokio::io::copy(data, &mut writer).await?;
    writer.shutdown().await?;
    Ok(n)
}

/// Keeps every file in memory. For tests and throw-away runs.
#[derive(Default)]
pub struct MemoryStorage {
    files: Arc<Mutex<BTreeMap<StoragePath, Arc<Vec<u8>>>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryWriter {
    files: Arc<Mutex<BTreeMap<StoragePath, Arc<Vec<u8>>>>>,
    path: StoragePath,
    data: Vec<u8>,
}

impl AsyncWrite for MemoryWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let data = std::mem::take(&mut self.data);
        let path = self.path.clone();
        self.files.lock().insert(path, Arc::new(data));
        Poll::Ready(Ok(()))
    }
}

fn not_found(path: &StoragePath) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file at {path}"))
}

#[async_trait]
impl InternalStorage for MemoryStorage {
    async fn create(&self, path: &StoragePath) -> io::Result<FileWriter> {
        Ok(Box::new(MemoryWriter {
            files: self.files.clone(),
            path: path.clone(),
            data: Vec::new(),
        }))
    }

    async fn open(&self, path: &StoragePath) -> io::Result<FileReader> {
        let data = self.files.lock().get(path).cloned();
        let data = data.ok_or_else(|| not_found(path))?;
        Ok(Box::new(io::Cursor::new(data.as_ref().clone())))
    }

    async fn list(&self, prefix: &StoragePath) -> io::Result<Vec<FileMeta>> {
        Ok(self
            .files
            .lock()
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(p, d)| FileMeta {
                uri: p.uri(),
                size: d.len() as u64,
            })
            .collect())
    }

    async fn delete_prefix(&self, prefix: &StoragePath) -> io::Result<u64> {
        let mut files = self.files.lock();
        let before = files.len();
        files.retain(|p, _| !p.starts_with(prefix));
        Ok((before - files.len()) as u64)
    }

    fn size(&self, path: &StoragePath) -> io::Result<Option<u64>> {
        Ok(self.files.lock().get(path).map(|d| d.len() as u64))
    }

    fn read_small(&self, path: &StoragePath, limit: u64) -> io::Result<Vec<u8>> {
        let data = self.files.lock().get(path).cloned();
        let data = data.ok_or_else(|| not_found(path))?;
        if data.len() as u64 > limit {
            return Err(too_big(path, data.len() as u64, limit));
        }
        Ok(data.as_ref().clone())
    }
}

/// The error of a `read_small` over its limit.
pub fn too_big(path: &StoragePath, size: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{path} holds {size} bytes, more than the {limit} a template may read; stream it with a task instead"
        ),
    )
}

/// One execution's view of storage: it reads only the files below its own prefix.
#[derive(Clone)]
pub struct ExecutionFiles {
    pub storage: Arc<dyn InternalStorage>,
    pub prefix: StoragePath,
}

impl ExecutionFiles {
    /// Parses `uri` and checks it belongs to this execution.
    pub fn resolve(&self, uri: &str) -> Result<StoragePath, String> {
        let path = StoragePath::parse(uri)?;
        if !path.starts_with(&self.prefix) {
            return Err(format!(
                "{path} does not belong to this execution (its files are under {})",
                self.prefix
            ));
        }
        Ok(path)
    }

    pub async fn open(&self, uri: &str) -> io::Result<FileReader> {
        let path = self.resolve(uri).map_err(invalid_input)?;
        self.storage.open(&path).await
    }
}

/// The storage a task run sees: it writes under its own folder
/// (`…/tasks/<taskId>/<taskRunId>/`) and reads any file of its execution.
#[derive(Clone)]
pub struct TaskStorage {
    pub files: ExecutionFiles,
    /// Where this task run's files go.
    pub folder: StoragePath,
}

impl TaskStorage {
    /// Opens `name` (a plain file name, or a relative path) in this task run's folder for
    /// writing; returns its URI and the writer (call `shutdown()` to finish the file).
    pub async fn create(&self, name: &str) -> io::Result<(String, FileWriter)> {
        let path = self.folder.join(name).map_err(invalid_input)?;
        let writer = self.files.storage.create(&path).await?;
        Ok((path.uri(), writer))
    }

    /// Stores the bytes read from `data` as `name`; returns the URI and the size.
    pub async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
    ) -> io::Result<(String, u64)> {
        let path = self.folder.join(name).map_err(invalid_input)?;
        let n = put(self.files.storage.as_ref(), &path, data).await?;
        Ok((path.uri(), n))
    }

    /// Opens a file of this execution.
    pub async fn open(&self, uri: &str) -> io::Result<FileReader> {
        self.files.open(uri).await
    }
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Blocking file access for the template functions (`read()`, `fileSize()` …) while one
/// execution's task renders.
impl crate::template::FileAccess for ExecutionFiles {
    fn read(&self, uri: &str) -> Result<Vec<u8>, String> {
        let path = self.resolve(uri)?;
        self.storage
            .read_small(&path, crate::template::MAX_READ_BYTES)
            .map_err(|e| format!("cannot read {path}: {e}"))
    }

    fn size(&self, uri: &str) -> Result<Option<u64>, String> {
        let path = self.resolve(uri)?;
        self.storage
            .size(&path)
            .map_err(|e| format!("cannot read {path}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn paths_refuse_traversal_and_follow_kestra_layout() {
        assert!(StoragePath::parse("kestra:///a/../b").is_err());
        assert!(StoragePath::parse("kestra:///a//b").is_err());
        assert!(StoragePath::parse("kestra://a/b").is_err());
        assert!(StoragePath::parse("file:///etc/passwd").is_err());
        let exec = execution_prefix("company.team", "orders", "01ab").unwrap();
        assert_eq!(exec.uri(), "kestra:///company/team/orders/executions/01ab");
        let run = task_run_prefix(&exec, "query", "r1").unwrap();
        assert_eq!(
            run.join("result.ion").unwrap().uri(),
            "kestra:///company/team/orders/executions/01ab/tasks/query/r1/result.ion"
        );
        assert!(run.join("../x").is_err());
        assert!(run.starts_with(&exec));
        let other = execution_prefix("company.team", "orders", "01abc").unwrap();
        assert!(!other.starts_with(&exec), "a prefix must end at a segment");
    }

    #[tokio::test]
    async fn memory_storage_writes_lists_reads_and_deletes() {
        let storage: Arc<dyn InternalStorage> = Arc::new(MemoryStorage::new());
        let exec = execution_prefix("ns", "f", "e1").unwrap();
        let task = TaskStorage {
            files: ExecutionFiles {
                storage: storage.clone(),
                prefix: exec.clone(),
            },
            folder: task_run_prefix(&exec, "t", "r").unwrap(),
        };
        let (uri, mut w) = task.create("out.txt").await.unwrap();
        w.write_all(b"hello").await.unwrap();
        w.shutdown().await.unwrap();
        let mut text = String::new();
        task.open(&uri)
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "hello");
        assert_eq!(storage.list(&exec).await.unwrap().len(), 1);
        let foreign = execution_prefix("ns", "f", "e2")
            .unwrap()
            .join("x")
            .unwrap();
        assert!(task.open(&foreign.uri()).await.is_err());
        assert_eq!(storage.delete_prefix(&exec).await.unwrap(), 1);
        assert!(storage.list(&exec).await.unwrap().is_empty());
    }
}
