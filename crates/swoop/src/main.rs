//! The `swoop` binary: `server local`, `flow validate`, `flow run`, `bench`.

mod bench;
#[cfg(feature = "kafka")]
mod bench_kafka;
#[cfg(feature = "kafka")]
mod bench_kafka_drain;
mod bench_pages;
mod flow_cmd;
mod http_access;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use swoop_engine::Engine;
use swoop_engine::flows_dir::FlowsDir;
use swoop_store::{SqliteOptions, SqliteStore, SyncMode};

/// mimalloc instead of glibc's malloc: an event's path allocates on several threads (consumer,
/// runtime, store writer), where glibc's arenas contend (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "swoop",
    version,
    about = "Event-driven workflow orchestrator (Kestra flow syntax)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: `swoop server local` (or `swoop server`, the same) on the embedded
    /// store, or as one node of several with `--db postgres://…`.
    Server(Box<ServerCommand>),
    /// Work with flow files.
    Flow {
        #[command(subcommand)]
        command: FlowCommand,
    },
    /// Measure: executions/s, latency percentiles, peak memory.
    Bench(BenchCommand),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCommand {
    #[command(subcommand)]
    kind: Option<BenchKind>,
    /// (without a subcommand: the engine bench)
    #[command(flatten)]
    engine: bench::BenchArgs,
}

#[derive(Subcommand)]
enum BenchKind {
    /// One-Log-task executions through the engine on the SQLite store (the default).
    Engine(bench::BenchArgs),
    /// Kafka records → executions against a running broker, next to a bare consumer.
    #[cfg(feature = "kafka")]
    Kafka(bench_kafka::KafkaBenchArgs),
    /// A Kafka backlog drained by swoop, next to a hand-rolled consumer doing the same work.
    #[cfg(feature = "kafka")]
    KafkaDrain(bench_kafka_drain::KafkaDrainArgs),
    /// The executions pages' API calls with many executions stored (1,000,000 by default).
    Pages(bench_pages::PagesArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ServerCommand {
    #[command(subcommand)]
    mode: Option<ServerMode>,
    /// (without a subcommand: as `local`)
    #[command(flatten)]
    args: LocalArgs,
}

#[derive(Subcommand)]
enum ServerMode {
    /// Everything in one process: on the embedded SQLite store, or with `--db postgres://…` as
    /// one node of a cluster.
    Local(LocalArgs),
}

#[derive(clap::Args)]
struct LocalArgs {
    /// HTTP port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Where the store keeps its data (and internal storage its files).
    #[arg(long, default_value = "./swoop-data")]
    data_dir: PathBuf,
    /// The store: `sqlite` (the default: `<data-dir>/swoop.db`) or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/database`). Internal storage stays in
    /// `<data-dir>/storage`.
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// A folder of flow files, loaded at start and reloaded when they change.
    #[arg(long)]
    flows: Option<PathBuf>,
    /// `normal` survives a process crash; `full` also survives power loss (slower).
    #[arg(long, value_enum, default_value_t = Sync::Normal)]
    sync: Sync,
    #[command(flatten)]
    access: http_access::AccessArgs,
    #[command(flatten)]
    node: NodeArgs,
}

/// How a node takes part in a cluster (with `--db postgres://…`; Kestra's setting names).
#[derive(clap::Args)]
struct NodeArgs {
    /// What this node does: `all`, or a comma-separated subset of `executor`, `worker` (one
    /// role in swoop: runs executions), `scheduler` (runs triggers), `webserver` (the API).
    #[arg(long, default_value = "all")]
    roles: String,
    /// The node's name, unique among the running nodes; a restarted node keeps it and takes
    /// back what its graceful stop kept. Default: `<hostname>:<port>`.
    #[arg(long)]
    node_name: Option<String>,
    /// `heartbeatInterval`: how often the node heartbeats (ISO-8601).
    #[arg(long, default_value = "PT3S", value_parser = iso_duration)]
    heartbeat_interval: Duration,
    /// `liveness.timeout`: a node silent this long is DISCONNECTED; its executions resume on
    /// the other nodes and its triggers move.
    #[arg(long, default_value = "PT45S", value_parser = iso_duration)]
    liveness_timeout: Duration,
    /// `initialDelay`: how long after its start a node waits before it judges the others.
    #[arg(long, default_value = "PT45S", value_parser = iso_duration)]
    initial_delay: Duration,
    /// `terminationGracePeriod`: how long a graceful stop lets executions end, and keeps its
    /// trigger leases for a restart under the same name.
    #[arg(long, default_value = "PT5M", value_parser = iso_duration)]
    termination_grace_period: Duration,
}

fn iso_duration(text: &str) -> Result<Duration, String> {
    swoop_core::duration::parse_duration(text)
}

impl NodeArgs {
    /// The node's settings with a PostgreSQL store; `None` on SQLite (one node alone), where
    /// only the defaults are accepted.
    fn settings(&self, db: &str, port: u16) -> anyhow::Result<Option<swoop_engine::NodeSettings>> {
        let roles = swoop_store::cluster::Roles::parse(&self.roles).map_err(anyhow::Error::msg)?;
        if !is_postgres(db) {
            anyhow::ensure!(
                roles == swoop_store::cluster::Roles::ALL && self.node_name.is_none(),
                "--roles and --node-name are for several nodes on one PostgreSQL (--db postgres://…); the `{db}` store runs one node with every role"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            self.liveness_timeout >= self.heartbeat_interval * 2,
            "--liveness-timeout ({:?}) must be at least twice --heartbeat-interval ({:?}): a node would be declared DISCONNECTED between two of its heartbeats",
            self.liveness_timeout,
            self.heartbeat_interval
        );
        let name = match &self.node_name {
            Some(n) => n.clone(),
            None => format!("{}:{port}", hostname()),
        };
        let mut settings = swoop_engine::NodeSettings::new(name, roles);
        settings.heartbeat_interval = self.heartbeat_interval;
        settings.liveness_timeout = self.liveness_timeout;
        settings.initial_delay = self.initial_delay;
        settings.termination_grace_period = self.termination_grace_period;
        Ok(Some(settings))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

#[derive(Clone, Copy, ValueEnum)]
enum Sync {
    Normal,
    Full,
}

#[derive(Subcommand)]
enum FlowCommand {
    /// Check flow files; prints every problem as FILE:LINE:COLUMN: message.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a flow once, in-process, on a throw-away store; prints the execution as JSON.
    Run(flow_cmd::RunArgs),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWOOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(command) => {
                let ServerCommand { mode, args } = *command;
                let args = match mode {
                    Some(ServerMode::Local(args)) => args,
                    None => args,
                };
                init_tracing("info");
                server_local(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Flow {
                command: FlowCommand::Validate { files },
            } => Ok(flow_cmd::validate(&files)),
            Command::Flow {
                command: FlowCommand::Run(args),
            } => {
                init_tracing("warn");
                flow_cmd::run(args).await
            }
            Command::Bench(cmd) => {
                init_tracing("warn");
                let done = match cmd.kind {
                    None => bench::run(cmd.engine).await,
                    Some(BenchKind::Engine(args)) => bench::run(args).await,
                    #[cfg(feature = "kafka")]
                    Some(BenchKind::Kafka(args)) => bench_kafka::run(args).await,
                    #[cfg(feature = "kafka")]
                    Some(BenchKind::KafkaDrain(args)) => bench_kafka_drain::run(args).await,
                    Some(BenchKind::Pages(args)) => bench_pages::run(args).await,
                };
                done.map(|()| ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the SQLite store and internal storage (`<data dir>/storage`) and starts the engine.
pub async fn start_engine(
    data_dir: &std::path::Path,
    sync: SyncMode,
) -> anyhow::Result<Arc<Engine>> {
    start_engine_on(data_dir, "sqlite", sync).await
}

/// Opens the store `db` names (`sqlite`, or a `postgres://` URL) and internal storage
/// (`<data dir>/storage`), and starts the engine.
pub async fn start_engine_on(
    data_dir: &std::path::Path,
    db: &str,
    sync: SyncMode,
) -> anyhow::Result<Arc<Engine>> {
    start_node_on(data_dir, db, sync, None).await
}

/// [`start_engine_on`] as one node of a cluster when `node` is given.
pub async fn start_node_on(
    data_dir: &std::path::Path,
    db: &str,
    sync: SyncMode,
    node: Option<swoop_engine::NodeSettings>,
) -> anyhow::Result<Arc<Engine>> {
    let store: Arc<dyn swoop_store::Store> = if db == "sqlite" {
        SqliteStore::open(SqliteOptions {
            path: data_dir.join("swoop.db"),
            sync,
            ..Default::default()
        })
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?
    } else if is_postgres(db) {
        swoop_store::PostgresStore::connect(db)
            .await
            .context("cannot open the PostgreSQL store")?
    } else {
        anyhow::bail!(
            "--db `{db}` is neither `sqlite` nor a PostgreSQL URL (postgres://user:password@host:5432/database)"
        );
    };
    let storage_dir = data_dir.join("storage");
    let storage = swoop_store::LocalStorage::open(&storage_dir)
        .with_context(|| format!("cannot open internal storage in {}", storage_dir.display()))?;
    let registry = Arc::new(swoop_plugins::registry());
    Engine::start_node(store, registry, Arc::new(storage), node)
        .await
        .context("cannot start the engine")
}

async fn server_local(args: LocalArgs) -> anyhow::Result<()> {
    let sync = match args.sync {
        Sync::Normal => SyncMode::Normal,
        Sync::Full => SyncMode::Full,
    };
    let settings = args.node.settings(&args.db, args.port)?;
    let auth = args.access.auth_for(&args.host)?;
    let serves = settings.as_ref().is_none_or(|s| s.roles.serves);
    let engine = start_node_on(&args.data_dir, &args.db, sync, settings).await?;
    if let Some(dir) = &args.flows {
        anyhow::ensure!(dir.is_dir(), "--flows {} is not a folder", dir.display());
        // Load once before serving, then keep watching.
        let mut flows = FlowsDir::default();
        let loaded = flows.sync(&engine, dir).await;
        tracing::info!(dir = %dir.display(), loaded, "flows loaded");
        tokio::spawn(FlowsDir::watch(
            engine.clone(),
            dir.clone(),
            Duration::from_millis(500),
        ));
    }
    // Cancelled when the cluster declared this node DISCONNECTED: it stops without saving.
    let lost = engine.node().map(|n| n.lost.clone()).unwrap_or_default();
    let stop = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                _ = stop_signal() => tracing::info!("shutting down"),
                _ = lost.cancelled() => {}
            }
        }
    };
    if serves {
        let addr: SocketAddr = format!("{}:{}", args.host, args.port)
            .parse()
            .with_context(|| format!("bad address {}:{}", args.host, args.port))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(%addr, data_dir = %args.data_dir.display(), store = engine.store().backend(), "swoop server is up");
        if let Some(auth) = &auth {
            tracing::info!(user = auth.user(), "basic authentication on");
        }
        let app = swoop_server::app_with(engine.clone(), swoop_server::ServerOptions { auth });
        let shutdown_engine = engine.clone();
        let lost_now = lost.clone();
        // The engine stops inside the signal: the API keeps answering while executions end.
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop.await;
                if !lost_now.is_cancelled() {
                    shutdown_engine.shutdown().await;
                }
            })
            .await
            .context("server error")?;
    } else {
        tracing::info!(data_dir = %args.data_dir.display(), "swoop node is up (no webserver role: no API here)");
        stop.await;
        if !lost.is_cancelled() {
            engine.shutdown().await;
        }
    }
    if lost.is_cancelled() {
        // Exit at once: nothing of this process may run on (its sources, its executions'
        // tasks), and waiting for their threads would only delay the restart.
        eprintln!(
            "error: this node was declared DISCONNECTED by the cluster (it missed its heartbeats for --liveness-timeout: frozen, or cut off from PostgreSQL); the other nodes took over its executions and triggers, so it stopped without writing anything more; start it again"
        );
        std::process::exit(3);
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
