//! Internal storage on the local filesystem: `kestra:///a/b/c.ion` is the file
//! `<root>/a/b/c.ion` (the root is `<data dir>/storage` for `swoop server local`).
//!
//! A file is written to a hidden temporary name beside its final path and renamed into place
//! when its writer is shut down, so readers never see half a file and a writer dropped midway
//! (a killed task) leaves nothing behind. Like the store's default sync mode, files survive a
//! crash of the process; they are not fsynced, so a power loss may lose the newest ones (the
//! task that wrote them then runs again on resume, as tasks are run at least once).
//!
//! Paths are [`StoragePath`]s, which cannot hold `..` or empty segments: nothing outside the
//! root is reachable.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use swoop_core::storage::{
    FileMeta, FileReader, FileWriter, InternalStorage, StoragePath, too_big,
};
use tokio::io::{AsyncWrite, BufWriter};

const TEMP_PREFIX: &str = ".tmp-";

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> io::Result<LocalStorage> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, path: &StoragePath) -> PathBuf {
        let mut out = self.root.clone();
        for segment in path.segments() {
            out.push(segment);
        }
        out
    }

    fn uri_of(&self, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(&self.root).ok()?;
        let mut uri = String::from(swoop_core::storage::SCHEME);
        for part in rel.components() {
            uri.push('/');
            uri.push_str(part.as_os_str().to_str()?);
        }
        Some(uri)
    }
}

/// Writes to a temporary file; `shutdown` renames it into place, `Drop` before that removes it.
struct LocalWriter {
    file: Option<BufWriter<tokio::fs::File>>,
    temp: PathBuf,
    target: PathBuf,
    renamed: bool,
}

impl AsyncWrite for LocalWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_write(cx, buf),
            None => Poll::Ready(Err(io::Error::other("the file is closed"))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(f) = self.file.as_mut() {
            match Pin::new(f).poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            self.file = None;
        }
        if !self.renamed {
            // A rename within one directory: cheap and atomic.
            std::fs::rename(&self.temp, &self.target)?;
            self.renamed = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[async_trait]
impl InternalStorage for LocalStorage {
    async fn create(&self, path: &StoragePath) -> io::Result<FileWriter> {
        let target = self.file(path);
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other(format!("{path} has no folder")))?;
        tokio::fs::create_dir_all(dir).await?;
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            path.file_name(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = tokio::fs::File::create(&temp).await?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            temp,
            target,
            renamed: false,
        }))
    }

    async fn open(&self, path: &StoragePath) -> io::Result<FileReader> {
        let file = tokio::fs::File::open(self.file(path))
            .await
            .map_err(|e| with_path(e, path))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(
            64 * 1024,
            file,
        )))
    }

    async fn list(&self, prefix: &StoragePath) -> io::Result<Vec<FileMeta>> {
        let start = self.file(prefix);
        let root = self.root.clone();
        let files = tokio::task::spawn_blocking(move || walk(&start))
            .await
            .map_err(io::Error::other)??;
        let storage = LocalStorage { root };
        let mut metas: Vec<FileMeta> = files
            .into_iter()
            .filter_map(|(file, size)| storage.uri_of(&file).map(|uri| FileMeta { uri, size }))
            .collect();
        metas.sort_by(|a, b| a.uri.cmp(&b.uri));
        Ok(metas)
    }

    async fn delete_prefix(&self, prefix: &StoragePath) -> io::Result<u64> {
        let target = self.file(prefix);
        tokio::task::spawn_blocking(move || {
            let count = walk(&target)?.len() as u64;
            match std::fs::metadata(&target) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&target)?,
                Ok(_) => std::fs::remove_file(&target)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(count)
        })
        .await
        .map_err(io::Error::other)?
    }

    fn size(&self, path: &StoragePath) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.file(path)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_small(&self, path: &StoragePath, limit: u64) -> io::Result<Vec<u8>> {
        let file = self.file(path);
        let size = std::fs::metadata(&file)
            .map_err(|e| with_path(e, path))?
            .len();
        if size > limit {
            return Err(too_big(path, size, limit));
        }
        std::fs::read(&file).map_err(|e| with_path(e, path))
    }
}

fn with_path(e: io::Error, path: &StoragePath) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound {
        io::Error::new(io::ErrorKind::NotFound, format!("no file at {path}"))
    } else {
        io::Error::new(e.kind(), format!("{path}: {e}"))
    }
}

/// Every finished file at or below `start` (temporary files skipped), with its size.
fn walk(start: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let meta = match std::fs::metadata(start) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    if meta.is_file() {
        out.push((start.to_path_buf(), meta.len()));
        return Ok(out);
    }
    let mut stack = vec![start.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            {
                out.push((entry.path(), entry.metadata()?.len()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swoop_core::storage::execution_prefix;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_atomically_lists_reads_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path().join("storage")).unwrap();
        let exec = execution_prefix("company.team", "f", "e1").unwrap();
        let path = exec.join("tasks/t/r/out.ion").unwrap();

        let mut w = storage.create(&path).await.unwrap();
        w.write_all(b"{a:1}\n").await.unwrap();
        assert_eq!(
            storage.size(&path).unwrap(),
            None,
            "not visible before shutdown"
        );
        assert!(storage.list(&exec).await.unwrap().is_empty());
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(storage.size(&path).unwrap(), Some(6));
        assert!(
            dir.path()
                .join("storage/company/team/f/executions/e1/tasks/t/r/out.ion")
                .is_file()
        );
        let mut text = String::new();
        storage
            .open(&path)
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "{a:1}\n");
        assert_eq!(storage.read_small(&path, 100).unwrap(), b"{a:1}\n");
        assert!(storage.read_small(&path, 3).is_err());

        // A writer dropped before shutdown leaves nothing.
        let other = exec.join("tasks/t/r/half.txt").unwrap();
        let mut w = storage.create(&other).await.unwrap();
        w.write_all(&[0u8; 100_000]).await.unwrap();
        drop(w);
        assert_eq!(storage.size(&other).unwrap(), None);

        let metas = storage.list(&exec).await.unwrap();
        assert_eq!(
            metas,
            vec![FileMeta {
                uri: path.uri(),
                size: 6
            }]
        );
        assert_eq!(storage.delete_prefix(&exec).await.unwrap(), 1);
        assert!(storage.list(&exec).await.unwrap().is_empty());
        assert!(storage.open(&path).await.is_err());
    }
}
