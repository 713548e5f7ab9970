//! The script's working directory: `inputFiles` written into it before the run (inline text or
//! copied from a `kestra:///` URI), `outputFiles` globs matched against it after the run and
//! the matching files streamed into the task run's internal storage.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, TaskError};
use tokio::io::AsyncWriteExt;

use super::render::render_text;

/// The file names and contents of `inputFiles` (a map, or a template / JSON text giving one),
/// rendered.
pub fn render_input_files(
    ctx: &dyn RunContext,
    value: &Value,
) -> Result<Vec<(String, String)>, TaskError> {
    const PROP: &str = "inputFiles";
    let map = match value {
        Value::Object(map) => map.clone(),
        Value::String(text) => {
            let rendered = ctx.render(PROP, text)?;
            serde_json::from_str::<Map<String, Value>>(&rendered).map_err(|e| {
                TaskError::permanent(format!(
                    "property `{PROP}`: a text value must be a JSON map of file name to content ({e})"
                ))
            })?
        }
        other => {
            return Err(TaskError::permanent(format!(
                "property `{PROP}` must be a map of file name to content, got {other}"
            )));
        }
    };
    let mut files = Vec::with_capacity(map.len());
    for (name, content) in &map {
        if content.is_null() {
            continue;
        }
        let name = ctx.render(PROP, name)?;
        let content = render_text(ctx, PROP, content)?;
        files.push((name, content));
    }
    Ok(files)
}

/// `name` inside `dir`, refusing absolute paths and `..`.
fn inside(dir: &Path, name: &str, what: &str) -> Result<PathBuf, TaskError> {
    let path = Path::new(name);
    let fine = !name.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !fine {
        return Err(TaskError::permanent(format!(
            "property `{what}`: `{name}` must be a path relative to the working directory, without `..`"
        )));
    }
    Ok(dir.join(path))
}

/// Writes the input files into `dir`. A content that is a `kestra:///` URI is copied from
/// storage (streamed).
pub async fn write_input_files(
    ctx: &dyn RunContext,
    dir: &Path,
    files: &[(String, String)],
) -> Result<(), TaskError> {
    for (name, content) in files {
        let path = inside(dir, name, "inputFiles")?;
        let io_error = |e: std::io::Error| {
            TaskError::new(format!(
                "property `inputFiles`: cannot write `{name}` into the working directory: {e}"
            ))
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error)?;
        }
        let mut file = tokio::fs::File::create(&path).await.map_err(io_error)?;
        if content.starts_with("kestra://") {
            let mut source = ctx.storage().open(content).await.map_err(|e| {
                TaskError::permanent(format!(
                    "property `inputFiles`: cannot read `{content}` for `{name}`: {e}"
                ))
            })?;
            tokio::io::copy(&mut source, &mut file)
                .await
                .map_err(io_error)?;
        } else if let Some(scheme) = ["file://", "nsfile://"]
            .into_iter()
            .find(|s| content.starts_with(s))
        {
            return Err(TaskError::permanent(format!(
                "property `inputFiles`: `{name}` is a `{scheme}` URI, which swoop does not read; \
                 give the content inline or a `kestra:///` URI of this execution's files"
            )));
        } else {
            file.write_all(content.as_bytes()).await.map_err(io_error)?;
        }
        file.flush().await.map_err(io_error)?;
    }
    Ok(())
}

/// Compiled `outputFiles` globs (Java-style: `*` stays within a folder, `**` crosses folders,
/// `{a,b}` alternatives).
pub struct OutputGlobs(Vec<(String, glob::Pattern)>);

impl OutputGlobs {
    pub fn new(patterns: &[String]) -> Result<OutputGlobs, TaskError> {
        let mut compiled = Vec::new();
        for pattern in patterns {
            if pattern.starts_with('/') || pattern.starts_with("./") || pattern.starts_with("..") {
                return Err(TaskError::permanent(format!(
                    "property `outputFiles`: `{pattern}` must be relative to the working directory (write `out/*.csv`, not `./out/*.csv` or an absolute path)"
                )));
            }
            for expanded in expand_braces(pattern) {
                let compiled_one = glob::Pattern::new(&expanded).map_err(|e| {
                    TaskError::permanent(format!(
                        "property `outputFiles`: `{pattern}` is not a valid glob: {e}"
                    ))
                })?;
                compiled.push((pattern.clone(), compiled_one));
            }
        }
        Ok(OutputGlobs(compiled))
    }

    fn matches(&self, relative: &str) -> Option<&str> {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.0
            .iter()
            .find(|(_, p)| p.matches_with(relative, options))
            .map(|(original, _)| original.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `a{b,c}d{e,f}` → `abde`, `abdf`, `acde`, `acdf` (no nesting).
fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let Some(close) = pattern[open..].find('}').map(|i| open + i) else {
        return vec![pattern.to_string()];
    };
    let (head, alternatives, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let tails = expand_braces(tail);
    alternatives
        .split(',')
        .flat_map(|alt| tails.iter().map(move |t| format!("{head}{alt}{t}")))
        .collect()
}

/// Every regular file below `dir` (symbolic links are not followed), as `/`-separated paths
/// relative to it, sorted.
async fn list_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries = tokio::fs::read_dir(dir.join(&relative)).await?;
        while let Some(entry) = entries.next_entry().await? {
            let kind = entry.file_type().await?;
            let path = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                found.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Streams the files of `dir` matching `globs` (except `skip`, swoop's own script file) into
/// the task run's storage; returns relative path → `kestra:///` URI.
pub async fn store_output_files(
    ctx: &dyn RunContext,
    dir: &Path,
    globs: &OutputGlobs,
    patterns: &[String],
    skip: Option<&str>,
) -> Result<Map<String, Value>, TaskError> {
    let mut stored = Map::new();
    if globs.is_empty() {
        return Ok(stored);
    }
    let files = list_files(dir).await.map_err(|e| {
        TaskError::new(format!(
            "property `outputFiles`: cannot list the working directory: {e}"
        ))
    })?;
    let mut used: Vec<&str> = Vec::new();
    for relative in &files {
        if Some(relative.as_str()) == skip {
            continue;
        }
        let Some(pattern) = globs.matches(relative) else {
            continue;
        };
        used.push(pattern);
        let io_error = |e: std::io::Error| {
            TaskError::new(format!(
                "property `outputFiles`: cannot store `{relative}`: {e}"
            ))
        };
        let mut source = tokio::fs::File::open(dir.join(relative))
            .await
            .map_err(io_error)?;
        let (uri, mut writer) = ctx.storage().create(relative).await.map_err(io_error)?;
        tokio::io::copy(&mut source, &mut writer)
            .await
            .map_err(io_error)?;
        writer.shutdown().await.map_err(io_error)?;
        tracing::debug!(file = %relative, %uri, "output file stored");
        stored.insert(relative.clone(), Value::String(uri));
    }
    for pattern in patterns {
        if !used.contains(&pattern.as_str()) {
            ctx.log(
                LogLevel::Warn,
                format!("outputFiles: no file of the working directory matches `{pattern}`"),
            );
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_java_rules() {
        let patterns: Vec<String> = ["*.txt", "out/**/*.csv", "{a,b}.json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let globs = OutputGlobs::new(&patterns).unwrap();
        assert_eq!(globs.matches("x.txt"), Some("*.txt"));
        assert_eq!(globs.matches("sub/x.txt"), None, "`*` stays in its folder");
        assert_eq!(globs.matches("out/a/b/c.csv"), Some("out/**/*.csv"));
        assert_eq!(globs.matches("out/c.csv"), Some("out/**/*.csv"));
        assert_eq!(globs.matches("b.json"), Some("{a,b}.json"));
        assert_eq!(globs.matches("c.json"), None);
        assert!(OutputGlobs::new(&["/etc/*".to_string()]).is_err());
        assert!(OutputGlobs::new(&["./x".to_string()]).is_err());
    }

    #[test]
    fn input_file_names_stay_inside() {
        let dir = Path::new("/w");
        assert_eq!(
            inside(dir, "a/b.txt", "f").unwrap(),
            Path::new("/w/a/b.txt")
        );
        assert!(inside(dir, "../x", "f").is_err());
        assert!(inside(dir, "/etc/passwd", "f").is_err());
        assert!(inside(dir, "", "f").is_err());
    }
}
