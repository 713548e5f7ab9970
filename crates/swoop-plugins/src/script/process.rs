//! The Process runner (`io.kestra.plugin.core.runner.Process`): starts the interpreter in its own
//! process group, turns its stdout and stderr into logs line by line (and `::{…}::` lines into
//! outputs), and makes sure nothing it started outlives the task: on kill, timeout or a dropped
//! future the whole group gets SIGTERM, then SIGKILL after [`KILL_GRACE`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, TaskError};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// How long a process group may take to stop after SIGTERM before it gets SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How many stderr lines a failure message quotes.
const TAIL_LINES: usize = 10;
/// Longest quoted stderr line, in bytes.
const TAIL_LINE_BYTES: usize = 500;
/// Environment variables of the worker a script never sees: the values `secret()` reads
/// (pass one explicitly with `env: {NAME: "{{ secret('NAME') }}"}`).
const HIDDEN_ENV_PREFIXES: [&str; 2] = ["SWOOP_SECRET_", "SECRET_"];

/// What to start.
pub struct Launch {
    /// The interpreter and its arguments; the script text is added as the last argument.
    pub interpreter: Vec<String>,
    pub script: String,
    pub dir: PathBuf,
    /// Added to the worker's environment (minus swoop's secrets); later entries win.
    pub env: Vec<(String, String)>,
}

/// What one of the two streams said.
#[derive(Debug, Default)]
pub struct StreamSummary {
    pub lines: u64,
    /// The `outputs` of its `::{"outputs": …}::` lines, merged.
    pub vars: Map<String, Value>,
    /// Its last lines (stderr: quoted in a failure message).
    pub tail: VecDeque<String>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: StreamSummary,
    pub stderr: StreamSummary,
}

/// Runs `launch` to its end, or until `ctx.cancellation()` fires (the group is then terminated
/// and the error says so). Dropping the future terminates the group too.
pub async fn run(ctx: &dyn RunContext, launch: Launch) -> Result<Finished, TaskError> {
    let (program, args) = launch
        .interpreter
        .split_first()
        .ok_or_else(|| TaskError::permanent("property `interpreter`: the list is empty"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(&launch.script)
        .current_dir(&launch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if HIDDEN_ENV_PREFIXES.iter().any(|p| name_text.starts_with(p)) {
            command.env_remove(&name);
        }
    }
    command.envs(launch.env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().map_err(|e| {
        TaskError::permanent(format!(
            "cannot start the interpreter `{program}` (property `interpreter`): {e}"
        ))
    })?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| TaskError::new("the script process exited before it could be watched"))?;
    let mut guard = GroupGuard { pgid, armed: true };
    tracing::debug!(pgid, interpreter = %program, "script started");
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let outcome = tokio::select! {
        r = async {
            tokio::join!(pump(ctx, stdout, false), pump(ctx, stderr, true), child.wait())
        } => Some(r),
        () = ctx.cancellation().cancelled() => None,
    };
    match outcome {
        Some((stdout, stderr, status)) => {
            // The leader is reaped: its pid may be reused, never signal the group again.
            guard.armed = false;
            let status = status
                .map_err(|e| TaskError::new(format!("cannot wait for the script process: {e}")))?;
            Ok(Finished {
                status,
                stdout,
                stderr,
            })
        }
        None => {
            tracing::info!(pgid, "script cancelled: terminating its process group");
            let stop = tokio::task::spawn_blocking(move || terminate_group(pgid));
            // Reap the leader meanwhile, or the group would never look empty.
            let (_, _) = tokio::join!(stop, child.wait());
            guard.armed = false;
            Err(TaskError::new(
                "the script was stopped (kill or timeout); its processes were terminated",
            ))
        }
    }
}

/// Reads one stream line by line until it closes.
async fn pump(
    ctx: &dyn RunContext,
    stream: Option<impl AsyncRead + Unpin>,
    is_stderr: bool,
) -> StreamSummary {
    let mut summary = StreamSummary::default();
    let Some(stream) = stream else {
        return summary;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                ctx.log(
                    LogLevel::Error,
                    format!("cannot read the script's output: {e}"),
                );
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        summary.lines += 1;
        handle_line(ctx, line, is_stderr, &mut summary.vars);
        if is_stderr {
            if summary.tail.len() == TAIL_LINES {
                summary.tail.pop_front();
            }
            summary.tail.push_back(truncate(line, TAIL_LINE_BYTES));
        }
    }
    summary
}

/// One line: a `::{…}::` line feeds outputs (and logs, metrics); any other is logged, at INFO
/// from stdout and ERROR from stderr (Kestra's levels since 0.21).
fn handle_line(ctx: &dyn RunContext, line: &str, is_stderr: bool, vars: &mut Map<String, Value>) {
    let Some(json) = line
        .strip_prefix("::")
        .and_then(|rest| rest.strip_suffix("::"))
        .filter(|inner| inner.starts_with('{') && inner.ends_with('}'))
    else {
        let level = if is_stderr {
            LogLevel::Error
        } else {
            LogLevel::Info
        };
        ctx.log(level, line.to_string());
        return;
    };
    let data = match serde_json::from_str::<Map<String, Value>>(json) {
        Ok(data) => data,
        Err(e) => {
            ctx.log(
                LogLevel::Warn,
                format!("invalid `::{{…}}::` line ({e}): {line}"),
            );
            return;
        }
    };
    for (key, value) in data {
        match (key.as_str(), value) {
            ("outputs", Value::Object(outputs)) => vars.extend(outputs),
            ("logs", Value::Array(logs)) => {
                for entry in logs {
                    let level = entry
                        .get("level")
                        .and_then(Value::as_str)
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(LogLevel::Info);
                    let message = entry
                        .get("message")
                        .map(swoop_core::flow::scalar_text)
                        .unwrap_or_default();
                    ctx.log(level, message);
                }
            }
            ("metrics", metrics) => {
                tracing::debug!(%metrics, "script metrics ignored: swoop does not keep metrics");
            }
            (other, value) => {
                tracing::debug!(key = other, %value, "`::{{…}}::` entry ignored");
            }
        }
    }
}

fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Terminates the group of a script whose future was dropped mid-run.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let pgid = self.pgid;
            tracing::info!(pgid, "script dropped: terminating its process group");
            // Drop cannot wait: a thread sees the group through its grace period.
            let spawned = std::thread::Builder::new()
                .name("swoop-script-kill".into())
                .spawn(move || terminate_group(pgid));
            if spawned.is_err() {
                signal_group(pgid, libc::SIGKILL);
            }
        }
    }
}

/// SIGTERM to the group, then SIGKILL once [`KILL_GRACE`] has passed with members left.
/// Blocking.
fn terminate_group(pgid: i32) {
    if !signal_group(pgid, libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        if !signal_group(pgid, 0) {
            return;
        }
    }
    tracing::warn!(pgid, grace = ?KILL_GRACE, "script ignored SIGTERM: sending SIGKILL");
    signal_group(pgid, libc::SIGKILL);
}

/// Sends `signal` to every process of the group; false when the group is gone.
fn signal_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// The failure message of a process that did not exit with 0.
pub fn failure_message(status: &ExitStatus, stderr: &StreamSummary) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mut message = match (status.code(), status.signal()) {
        (Some(code), _) => format!("the script failed with exit code {code}"),
        (None, Some(signal)) => format!("the script was killed by signal {signal}"),
        (None, None) => format!("the script failed ({status})"),
    };
    if stderr.tail.is_empty() {
        message.push_str(" (nothing on stderr)");
    } else {
        message.push_str("; last lines on stderr:");
        for line in &stderr.tail {
            message.push_str("\n  ");
            message.push_str(line);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use swoop_core::testing::TestRunContext;

    #[test]
    fn marker_lines_feed_outputs_and_logs() {
        let ctx = TestRunContext::new(serde_json::json!({}));
        let mut vars = Map::new();
        handle_line(&ctx, r#"::{"outputs":{"a":1,"b":"x"}}::"#, false, &mut vars);
        handle_line(&ctx, r#"::{"outputs":{"a":2}}::"#, true, &mut vars);
        handle_line(
            &ctx,
            r#"::{"logs":[{"level":"WARN","message":"careful"}],"metrics":[{"name":"n","type":"counter","value":1}]}::"#,
            false,
            &mut vars,
        );
        handle_line(&ctx, "::{not json}::", false, &mut vars);
        handle_line(&ctx, "plain", true, &mut vars);
        assert_eq!(Value::Object(vars), serde_json::json!({"a": 2, "b": "x"}));
        let logs = ctx.logs.lock().clone();
        assert_eq!(logs[0], (LogLevel::Warn, "careful".to_string()));
        assert_eq!(logs[1].0, LogLevel::Warn);
        assert!(
            logs[1].1.starts_with("invalid `::{…}::` line"),
            "{}",
            logs[1].1
        );
        assert_eq!(logs[2], (LogLevel::Error, "plain".to_string()));
        assert_eq!(logs.len(), 3);
    }

    #[test]
    fn long_lines_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
