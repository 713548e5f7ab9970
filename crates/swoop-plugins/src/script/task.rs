//! A script task's properties, checked when the flow is built (the Docker runner, Python
//! package installation and the other things swoop does not do are refused there, saying what
//! to write instead), and its run.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use swoop_core::flow::scalar_text;
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, RunnableTask, TaskError, TaskKind, render_as};

use super::files::{OutputGlobs, render_input_files, store_output_files, write_input_files};
use super::process::{self, Launch};
use super::render::{render_env, render_list, render_text, with_working_dir};
use crate::props::present;

/// The only task runner swoop has (and its default; Kestra's default is Docker).
pub const PROCESS_RUNNER: &str = "io.kestra.plugin.core.runner.Process";
const DOCKER_RUNNER: &str = "io.kestra.plugin.scripts.runner.docker.Docker";
const DEFAULT_INTERPRETER: [&str; 2] = ["/bin/sh", "-c"];
/// The Python Script's code, in the working directory so that the script can import the
/// modules given as `inputFiles`; never an output file.
const PYTHON_SCRIPT_FILE: &str = ".swoop-script.py";
/// Pebble renders booleans and null as `true`, `false`, `null`: aliases make them Python.
const PYTHON_ALIASES: &str = "true = True\nfalse = False\nnull = None\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    ShellCommands,
    ShellScript,
    PythonCommands,
    PythonScript,
}

impl Flavor {
    fn python(self) -> bool {
        matches!(self, Flavor::PythonCommands | Flavor::PythonScript)
    }
    fn body_property(self) -> &'static str {
        match self {
            Flavor::ShellCommands | Flavor::PythonCommands => "commands",
            Flavor::ShellScript | Flavor::PythonScript => "script",
        }
    }
}

#[derive(Debug)]
pub struct ScriptTask {
    flavor: Flavor,
    /// `commands` or `script`, as written.
    body: Value,
    before_commands: Option<Value>,
    env: Option<Value>,
    interpreter: Option<Value>,
    input_files: Option<Value>,
    output_files: Option<Value>,
    fail_fast: Option<Value>,
    /// Only kept when a template (a literal `true` is refused at build).
    warning_on_stderr: Option<Value>,
    container_image: Option<String>,
}

fn refuse(property: &str, why: &str) -> Result<TaskKind, String> {
    Err(format!("property `{property}`: {why}"))
}

fn is_template(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.contains("{{") || s.contains("{%"))
}

/// Checks the properties and builds the task (no I/O: this also runs during validation).
pub fn build(v: &Value, flavor: Flavor) -> Result<TaskKind, String> {
    if let Some(runner) = present(v, "taskRunner") {
        check_task_runner(runner)?;
    }
    if let Some(runner) = present(v, "runner") {
        let name = scalar_text(runner);
        if is_template(runner) || !name.eq_ignore_ascii_case("PROCESS") {
            return refuse(
                "runner",
                "swoop runs scripts as local processes only; remove the deprecated `runner` (or write `PROCESS`)",
            );
        }
    }
    if present(v, "docker").is_some() {
        return refuse(
            "docker",
            "Docker options only apply to the Docker runner, which swoop does not have (scripts run as local processes); remove it",
        );
    }
    if let Some(os) = present(v, "targetOS") {
        let os = scalar_text(os);
        if !(os.eq_ignore_ascii_case("AUTO") || os.eq_ignore_ascii_case("LINUX")) {
            return refuse(
                "targetOS",
                "swoop runs scripts on the worker's Unix shell; write AUTO or LINUX, or remove it",
            );
        }
    }
    if let Some(ns) = present(v, "namespaceFiles")
        && ns.get("enabled") != Some(&Value::Bool(false))
    {
        return refuse(
            "namespaceFiles",
            "namespace files are not supported; pass the files with `inputFiles` (inline or `kestra:///` URIs)",
        );
    }
    if let Some(dir) = present(v, "outputDirectory")
        && dir != &Value::Bool(false)
    {
        return refuse(
            "outputDirectory",
            "`{{ outputDir }}` is not supported (deprecated in Kestra); write the files in the working directory and list them in `outputFiles`",
        );
    }
    let warning_on_stderr = match present(v, "warningOnStdErr") {
        Some(Value::Bool(false)) | None => None,
        Some(w) if is_template(w) => Some(w.clone()),
        Some(_) => return refuse("warningOnStdErr", WARNING_ON_STDERR_REFUSED),
    };
    if flavor.python() {
        check_python_properties(v)?;
    }
    if let Some(Value::Array(items)) = present(v, "interpreter")
        && items.is_empty()
    {
        return refuse(
            "interpreter",
            "the list is empty; remove it for the default [\"/bin/sh\", \"-c\"]",
        );
    }
    for name in ["env", "inputFiles"] {
        if let Some(x) = present(v, name)
            && !(x.is_object() || x.is_string())
        {
            return refuse(name, "must be a map (or a template giving one)");
        }
    }
    let body = present(v, flavor.body_property())
        .cloned()
        .ok_or_else(|| format!("property `{}` is required", flavor.body_property()))?;
    let task = ScriptTask {
        flavor,
        body,
        before_commands: present(v, "beforeCommands").cloned(),
        env: present(v, "env").cloned(),
        interpreter: present(v, "interpreter").cloned(),
        input_files: present(v, "inputFiles").cloned(),
        output_files: present(v, "outputFiles").cloned(),
        fail_fast: present(v, "failFast").cloned(),
        warning_on_stderr,
        container_image: present(v, "containerImage").map(scalar_text),
    };
    Ok(TaskKind::Runnable(Arc::new(task)))
}

const WARNING_ON_STDERR_REFUSED: &str = "`true` is not supported: as in Kestra 0.23 and later, \
     output on stderr does not change a script task's state (stderr lines are logged at ERROR; \
     a non-zero exit code fails the task); remove the property or set it to false";

fn check_task_runner(runner: &Value) -> Result<(), String> {
    let Some(map) = runner.as_object() else {
        return Err(format!(
            "property `taskRunner` must be a map such as {{type: {PROCESS_RUNNER}}}"
        ));
    };
    let type_name = map.get("type").map(scalar_text).unwrap_or_default();
    if type_name == DOCKER_RUNNER {
        return Err(format!(
            "property `taskRunner`: the Docker runner (`{DOCKER_RUNNER}`) is not supported: swoop runs scripts as local processes; \
             use `taskRunner: {{type: {PROCESS_RUNNER}}}` (the default, so you may remove `taskRunner`) and install what the script needs on the worker"
        ));
    }
    if type_name != PROCESS_RUNNER {
        return Err(format!(
            "property `taskRunner`: task runner `{type_name}` is not supported; use the Process runner, `taskRunner: {{type: {PROCESS_RUNNER}}}` (the default)"
        ));
    }
    if let Some(extra) = map.keys().find(|k| k.as_str() != "type") {
        return Err(format!(
            "property `taskRunner`: unknown property `{extra}` (the Process runner has only `type`)"
        ));
    }
    Ok(())
}

fn check_python_properties(v: &Value) -> Result<(), String> {
    const INSTALL: &str = "swoop does not install Python packages; install them on the worker, or in `beforeCommands` \
         (e.g. `python3 -m venv .venv && . .venv/bin/activate && pip install …`)";
    if present(v, "dependencies").is_some() {
        return Err(format!("property `dependencies`: {INSTALL}"));
    }
    for name in ["packageManager", "dependencyCacheEnabled"] {
        if present(v, name).is_some() {
            return Err(format!(
                "property `{name}`: only applies to `dependencies`, and {INSTALL}; remove it"
            ));
        }
    }
    if present(v, "pythonVersion").is_some() {
        return Err(
            "property `pythonVersion`: swoop runs the worker's `python3` and does not install other versions; \
             remove it (or call another interpreter explicitly in `commands`)"
                .into(),
        );
    }
    Ok(())
}

/// Inserts the Pebble aliases after the `from __future__` imports (which must come first).
fn with_python_aliases(script: &str) -> String {
    let lines: Vec<&str> = script.lines().collect();
    let after_future = lines
        .iter()
        .rposition(|l| l.starts_with("from __future__ import"))
        .map_or(0, |i| i + 1);
    let mut out = String::with_capacity(script.len() + PYTHON_ALIASES.len() + 1);
    for line in &lines[..after_future] {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(PYTHON_ALIASES);
    for line in &lines[after_future..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `'text'` for the shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl ScriptTask {
    /// Renders everything into what to launch; writes the input files (and the Python
    /// script) into `dir`.
    async fn prepare(
        &self,
        ctx: &dyn RunContext,
        dir: &Path,
    ) -> Result<(Launch, OutputGlobs, Vec<String>), TaskError> {
        let dir_text = dir.to_string_lossy().into_owned();
        let prepared = |v: &Value| with_working_dir(v, &dir_text);

        if let Some(w) = &self.warning_on_stderr
            && render_as::<bool>(ctx, "warningOnStdErr", w)?
        {
            return Err(TaskError::permanent(format!(
                "property `warningOnStdErr`: {WARNING_ON_STDERR_REFUSED}"
            )));
        }
        if let Some(image) = &self.container_image {
            ctx.log(
                LogLevel::Warn,
                format!("containerImage `{image}` is ignored: the Process runner runs the script on the worker itself"),
            );
        }
        let fail_fast = match &self.fail_fast {
            Some(v) => render_as::<bool>(ctx, "failFast", v)?,
            None => true,
        };
        let interpreter = match &self.interpreter {
            Some(v) => render_list(ctx, "interpreter", &prepared(v))?,
            None => DEFAULT_INTERPRETER.iter().map(|s| s.to_string()).collect(),
        };
        if interpreter.is_empty() {
            return Err(TaskError::permanent(
                "property `interpreter`: the list is empty",
            ));
        }
        let mut lines: Vec<String> = Vec::new();
        if fail_fast {
            lines.push("set -e".into());
        }
        if let Some(before) = &self.before_commands {
            lines.extend(render_list(ctx, "beforeCommands", &prepared(before))?);
        }
        let body = prepared(&self.body);
        match self.flavor {
            Flavor::ShellCommands | Flavor::PythonCommands => {
                lines.extend(render_list(ctx, "commands", &body)?);
            }
            Flavor::ShellScript => lines.push(render_text(ctx, "script", &body)?),
            Flavor::PythonScript => {
                let code = with_python_aliases(&render_text(ctx, "script", &body)?);
                let path = dir.join(PYTHON_SCRIPT_FILE);
                tokio::fs::write(&path, code).await.map_err(|e| {
                    TaskError::new(format!(
                        "cannot write the script into the working directory: {e}"
                    ))
                })?;
                lines.push(format!("python3 {}", shell_quote(&path.to_string_lossy())));
            }
        }

        let mut env = vec![("WORKING_DIR".to_string(), dir_text.clone())];
        if self.flavor.python() {
            for (k, v) in [
                ("PYTHONUNBUFFERED", "true"),
                ("PIP_ROOT_USER_ACTION", "ignore"),
                ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            ] {
                env.push((k.into(), v.into()));
            }
        }
        if let Some(e) = &self.env {
            env.extend(render_env(ctx, &prepared(e))?);
        }

        if let Some(inputs) = &self.input_files {
            let files = render_input_files(ctx, &prepared(inputs))?;
            if self.flavor == Flavor::PythonScript
                && files.iter().any(|(name, _)| name == PYTHON_SCRIPT_FILE)
            {
                return Err(TaskError::permanent(format!(
                    "property `inputFiles`: `{PYTHON_SCRIPT_FILE}` is the name swoop gives the script; rename the file"
                )));
            }
            write_input_files(ctx, dir, &files).await?;
        }
        let patterns = match &self.output_files {
            Some(v) => render_list(ctx, "outputFiles", v)?,
            None => Vec::new(),
        };
        let globs = OutputGlobs::new(&patterns)?;
        let launch = Launch {
            interpreter,
            script: lines.join("\n"),
            dir: dir.to_path_buf(),
            env,
        };
        Ok((launch, globs, patterns))
    }
}

#[async_trait]
impl RunnableTask for ScriptTask {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let workdir = tempfile::Builder::new()
            .prefix("swoop-script-")
            .tempdir()
            .map_err(|e| TaskError::new(format!("cannot create a working directory: {e}")))?;
        let dir = workdir.path().to_path_buf();
        let result = async {
            let (launch, globs, patterns) = self.prepare(ctx, &dir).await?;
            let finished = process::run(ctx, launch).await?;
            if !finished.status.success() {
                return Err(TaskError::new(process::failure_message(
                    &finished.status,
                    &finished.stderr,
                )));
            }
            let skip = (self.flavor == Flavor::PythonScript).then_some(PYTHON_SCRIPT_FILE);
            let output_files = store_output_files(ctx, &dir, &globs, &patterns, skip).await?;
            let mut vars = finished.stdout.vars;
            vars.extend(finished.stderr.vars);
            let outputs = json!({
                "exitCode": finished.status.code().unwrap_or(0),
                "vars": vars,
                "outputFiles": output_files,
                "stdOutLineCount": finished.stdout.lines,
                "stdErrLineCount": finished.stderr.lines,
            });
            Ok(match outputs {
                Value::Object(map) => map,
                _ => Map::new(),
            })
        }
        .await;
        // Removing a big tree blocks: off the runtime's threads. (A dropped future removes it
        // in `TempDir`'s own drop.)
        let removed = tokio::task::spawn_blocking(move || workdir.close()).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a script's working directory");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_aliases_come_after_future_imports() {
        assert_eq!(
            with_python_aliases("print(1)"),
            format!("{PYTHON_ALIASES}print(1)\n")
        );
        let code = with_python_aliases("from __future__ import annotations\nx = 1");
        assert_eq!(
            code,
            format!("from __future__ import annotations\n{PYTHON_ALIASES}x = 1\n")
        );
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("/tmp/a'b"), r"'/tmp/a'\''b'");
    }

    #[test]
    fn build_refuses_what_swoop_does_not_do() {
        let base = json!({"id": "t", "type": "x", "commands": ["echo"]});
        let refused = |patch: Value, flavor: Flavor| {
            let v = crate::props::patched(base.clone(), patch);
            match build(&v, flavor) {
                Ok(_) => panic!("accepted {v}"),
                Err(e) => e,
            }
        };
        let e = refused(
            json!({"taskRunner": {"type": DOCKER_RUNNER}}),
            Flavor::ShellCommands,
        );
        assert!(
            e.contains("Process runner") || e.contains(PROCESS_RUNNER),
            "{e}"
        );
        let e = refused(json!({"runner": "DOCKER"}), Flavor::ShellCommands);
        assert!(e.contains("`runner`"), "{e}");
        let e = refused(json!({"warningOnStdErr": true}), Flavor::ShellCommands);
        assert!(e.contains("Kestra 0.23"), "{e}");
        let e = refused(
            json!({"dependencies": ["requests"]}),
            Flavor::PythonCommands,
        );
        assert!(e.contains("beforeCommands"), "{e}");
        let e = refused(json!({"pythonVersion": "3.12"}), Flavor::PythonCommands);
        assert!(e.contains("pythonVersion"), "{e}");
        let e = refused(json!({"targetOS": "WINDOWS"}), Flavor::ShellCommands);
        assert!(e.contains("targetOS"), "{e}");
        let e = refused(
            json!({"namespaceFiles": {"enabled": true}}),
            Flavor::ShellCommands,
        );
        assert!(e.contains("inputFiles"), "{e}");
        let e = refused(
            json!({"taskRunner": {"type": PROCESS_RUNNER, "x": 1}}),
            Flavor::ShellCommands,
        );
        assert!(e.contains("`x`"), "{e}");
        let fine = crate::props::patched(
            base.clone(),
            json!({"warningOnStdErr": false, "taskRunner": {"type": PROCESS_RUNNER}, "runner": "PROCESS", "namespaceFiles": {"enabled": false}}),
        );
        assert!(build(&fine, Flavor::ShellCommands).is_ok());
    }
}
