//! `swoop flow validate` and `swoop flow run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value};
use swoop_core::Flow;
use swoop_core::model::ExecutionTrigger;
use swoop_engine::NewExecution;
use swoop_engine::flows_dir::FlowsDir;
use swoop_store::SyncMode;

/// Prints every problem of every file as `FILE:LINE:COLUMN: message`; exit 1 if any.
pub fn validate(files: &[PathBuf]) -> ExitCode {
    let registry = swoop_plugins::registry();
    let mut failed = false;
    for file in files {
        let source = match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => {
                println!("{}:0:0: cannot read the file: {e}", file.display());
                failed = true;
                continue;
            }
        };
        match Flow::parse(&source, &registry) {
            Ok(flow) => eprintln!(
                "{}: flow `{}.{}` is valid",
                file.display(),
                flow.namespace,
                flow.id
            ),
            Err(problems) => {
                failed = true;
                for p in problems {
                    println!("{}:{}:{}: {}", file.display(), p.line, p.column, p.message);
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The flow file to run.
    file: PathBuf,
    /// An input, as KEY=VALUE (repeatable).
    #[arg(long = "input", value_name = "KEY=VALUE")]
    inputs: Vec<String>,
    /// A JSON file whose object becomes the trigger's variables (`trigger.value`, …), as if the
    /// flow's first trigger had fired with them.
    #[arg(long, value_name = "EVENT.json")]
    trigger: Option<PathBuf>,
    /// A folder of other flows the run may need (Subflow targets).
    #[arg(long, value_name = "DIR")]
    flows: Option<PathBuf>,
}

fn read_trigger(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str::<Value>(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?
    {
        Value::Object(m) => Ok(m),
        _ => anyhow::bail!(
            "{} must hold a JSON object: its keys become `trigger.*`",
            path.display()
        ),
    }
}

/// Runs the flow on a throw-away store and prints the execution; exit 0 on SUCCESS or WARNING.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
    let engine = crate::start_engine(scratch.path(), SyncMode::Normal).await?;
    if let Some(dir) = &args.flows {
        FlowsDir::default().sync(&engine, dir).await;
    }
    let flow = match engine.put_flow(&source).await {
        Ok(f) => f,
        Err(swoop_engine::EngineError::Invalid { details, message }) => {
            for d in &details {
                eprintln!(
                    "{}:{}:{}: {}",
                    args.file.display(),
                    d.line,
                    d.column,
                    d.message
                );
            }
            anyhow::bail!("{}: {message}", args.file.display());
        }
        Err(e) => return Err(e.into()),
    };
    let mut inputs = Map::new();
    for pair in &args.inputs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--input `{pair}` must be KEY=VALUE"))?;
        inputs.insert(k.to_string(), Value::String(v.to_string()));
    }
    let trigger = match &args.trigger {
        None => None,
        Some(path) => {
            let variables = read_trigger(path)?;
            let (id, type_name) = flow
                .triggers
                .first()
                .map(|t| (t.id.clone(), t.type_name.clone()))
                .unwrap_or_else(|| {
                    (
                        "manual".into(),
                        "io.kestra.plugin.core.trigger.Manual".into(),
                    )
                });
            Some(ExecutionTrigger {
                id,
                type_name,
                variables: variables.into(),
            })
        }
    };
    let created = engine
        .execute(NewExecution {
            namespace: flow.namespace.clone(),
            flow_id: flow.id.clone(),
            inputs,
            trigger,
            ..Default::default()
        })
        .await?;
    let execution = engine.wait_for_end(&created.id, None).await?;
    engine.store().flush().await?;
    for log in engine.store().logs_for_execution(&execution.id).await? {
        eprintln!(
            "{} {:?} [{}] {}",
            log.timestamp.format("%H:%M:%S%.3f"),
            log.level,
            log.task_id.as_deref().unwrap_or("-"),
            log.message
        );
    }
    println!("{}", serde_json::to_string_pretty(&execution)?);
    engine.shutdown().await;
    Ok(if execution.state.current.is_successful() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
