//! Script tasks, run with the Process runner: `io.kestra.plugin.scripts.shell.Commands`,
//! `…shell.Script`, `…python.Commands` and `…python.Script`. Each run gets a fresh temporary
//! working directory (`inputFiles` written in, `outputFiles` streamed to internal storage, then
//! removed); the interpreter runs in its own process group, which a kill, a timeout or a
//! dropped future terminates whole. The Docker runner and anything that needs it are refused
//! when the flow is built.
//!
//! - `task`: the properties (checked at build) and the run;
//! - `process`: starting, watching and stopping the process group;
//! - `files`: input and output files; `render`: rendering lists, `env`, `{{ workingDir }}`.

mod files;
mod process;
mod render;
mod task;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TaskFactory};
use task::Flavor;

pub use process::KILL_GRACE;

/// The properties every script task has, then the flavour's own.
macro_rules! script_properties {
    ($($own:expr),* $(,)?) => {
        const { &[
            PropSpec::optional("beforeCommands", PropType::StringOrList),
            PropSpec::optional("env", PropType::Any),
            PropSpec::optional("interpreter", PropType::StringOrList),
            PropSpec::optional("inputFiles", PropType::Any),
            PropSpec::optional("outputFiles", PropType::StringOrList),
            PropSpec::optional("warningOnStdErr", PropType::Bool),
            PropSpec::optional("failFast", PropType::Bool),
            PropSpec::optional("taskRunner", PropType::Map),
            PropSpec::optional("containerImage", PropType::String),
            PropSpec::optional("targetOS", PropType::Enum(&["AUTO", "LINUX", "WINDOWS"])),
            // Deprecated in Kestra, refused unless they ask for what swoop does anyway.
            PropSpec::optional("runner", PropType::Enum(&["PROCESS", "DOCKER"])),
            PropSpec::optional("docker", PropType::Any),
            PropSpec::optional("namespaceFiles", PropType::Any),
            PropSpec::optional("outputDirectory", PropType::Bool),
            $($own),*
        ] }
    };
}

/// Python's own properties, all refused (see `task`).
macro_rules! python_properties {
    ($body:expr) => {
        script_properties![
            $body,
            PropSpec::optional("dependencies", PropType::StringOrList),
            PropSpec::optional("pythonVersion", PropType::String),
            PropSpec::optional("packageManager", PropType::Enum(&["UV", "PIP"])),
            PropSpec::optional("dependencyCacheEnabled", PropType::Bool),
        ]
    };
}

pub fn register(registry: &mut Registry) {
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.scripts.shell.Commands"],
        properties: script_properties![PropSpec::required("commands", PropType::StringOrList)],
        build: |_, v| task::build(v, Flavor::ShellCommands),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.scripts.shell.Script"],
        properties: script_properties![PropSpec::required("script", PropType::String)],
        build: |_, v| task::build(v, Flavor::ShellScript),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.scripts.python.Commands"],
        properties: python_properties!(PropSpec::required("commands", PropType::StringOrList)),
        build: |_, v| task::build(v, Flavor::PythonCommands),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.scripts.python.Script"],
        properties: python_properties!(PropSpec::required("script", PropType::String)),
        build: |_, v| task::build(v, Flavor::PythonScript),
    });
}
