//! `bytebot`: the one binary. Subcommands wire the crates together.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad command line or config.

mod agent;
mod bottle;
mod config;
mod gateway;
mod task;
mod token;

use anyhow::{Context, Result};
use bytebot_desktop::Server;
use clap::{Args, Parser, Subcommand};
use config::{Config, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: many small short-lived allocations per request (headers,
/// JSON values, SQL arguments) cost a fifth of the gateway's CPU under load with glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A self-hosted computer-use system: an AI agent operates a real Linux desktop.
#[derive(Debug, Parser)]
#[command(name = "bytebot", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Config file (TOML). Default: $BYTEBOT_CONFIG, else ./bytebot.toml if present, else built-in defaults.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  bytebot up                              start everything on this machine and print the URL and token
  bytebot desktop --listen 0.0.0.0:9990   serve the desktop API (Bytebot-compatible) on all interfaces
  bytebot gateway --desktop http://127.0.0.1:9990   serve plan/approve/execute for AI front-ends
  bytebot agent --desktop http://127.0.0.1:9990 --database postgres://bytebot@db/bytebot   run tasks from a shared queue
  bytebot task new 'Open the calculator and add 2 and 2' --watch   queue a task and follow it live
  bytebot task list --status RUNNING      list tasks
  bytebot -c bytebot.toml mcp             serve the MCP tools on stdio (for Claude Desktop and other MCP clients)
  bytebot config check -c bytebot.toml    validate a config file and print the result
  bytebot bottle run --policy coding-agent -- npm test   run a command sandboxed, egress audited, record signed
  bytebot verify ~/.local/share/bytebot/bottle/runs/ID.intoto.jsonl   check a run's signed record offline
Environment: BYTEBOT_TOKEN sets the token; BYTEBOT_<SECTION>_<KEY> overrides any key (e.g. BYTEBOT_DESKTOP_RESOLUTION=1920x1080).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Start everything on one machine with embedded defaults and print where each part listens.
    Up(DesktopArgs),
    /// Serve the desktop daemon: Bytebot's POST /computer-use plus the /v1 API.
    Desktop(DesktopArgs),
    /// Serve the gateway: plan → approve → execute for Open WebUI, MCP clients and scripts.
    Gateway(GatewayArgs),
    /// Serve the gateway's MCP tools on stdin/stdout for a desktop MCP client (as key `local`, or --key).
    Mcp(McpArgs),
    /// Run the agent: workers that take tasks from the queue and drive a desktop, plus the task API.
    Agent(AgentArgs),
    /// Create, list and watch tasks (a client of the agent's API).
    #[command(subcommand)]
    Task(TaskCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run untrusted commands sandboxed: egress only through an auditing proxy that holds the secrets.
    #[command(subcommand)]
    Bottle(bottle::BottleCommand),
    /// Check a bottle run's signed provenance record offline and print what ran and what it wrote.
    Verify(bottle::VerifyArgs),
}

#[derive(Debug, Args)]
struct DesktopArgs {
    /// Address to listen on (overrides desktop.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// X display to drive, e.g. :0 (overrides desktop.display and $DISPLAY). Without one, bytebot starts its own Xvfb.
    #[arg(long, value_name = "DISPLAY")]
    display: Option<String>,
    /// Always start our own Xvfb, even when $DISPLAY is set.
    #[arg(long)]
    own_display: bool,
}

#[derive(Debug, Args)]
struct GatewayArgs {
    /// Address to listen on (overrides gateway.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Base URL of the desktop daemon to drive (overrides gateway.desktop_url).
    #[arg(long, value_name = "URL")]
    desktop: Option<String>,
}

#[derive(Debug, Args)]
struct McpArgs {
    /// Act as this configured key (gateway.keys) and its profile instead of `local` (gateway.local_profile).
    #[arg(long, value_name = "ID")]
    key: Option<String>,
    /// Base URL of the desktop daemon to drive (overrides gateway.desktop_url).
    #[arg(long, value_name = "URL")]
    desktop: Option<String>,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Address of the task API (overrides agent.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Base URL of the desktop daemon to drive (default: gateway.desktop_url).
    #[arg(long, value_name = "URL")]
    desktop: Option<String>,
    /// Database URL: sqlite:/path/file.db or postgres://… (overrides store.url).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Queue a task.
    New {
        /// What the agent should do.
        description: String,
        /// Model id (see GET /tasks/models); default: agent.default_model.
        #[arg(long)]
        model: Option<String>,
        /// LOW, MEDIUM, HIGH or URGENT.
        #[arg(long)]
        priority: Option<String>,
        /// Follow the task live until it stops running.
        #[arg(long)]
        watch: bool,
        /// The agent's URL (default: http://agent.listen).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// List tasks, newest first.
    List {
        /// Only this status (PENDING, RUNNING, NEEDS_HELP, …; comma-separated for several).
        #[arg(long)]
        status: Option<String>,
        /// Only tasks whose description contains this.
        #[arg(long)]
        search: Option<String>,
        /// How many (1-200).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The agent's URL (default: http://agent.listen).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Follow a task's steps live until it stops running.
    Watch {
        /// The task id.
        id: String,
        /// The agent's URL (default: http://agent.listen).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the config (file plus environment) and print the effective values.
    Check,
}

fn main() {
    // The sandbox's init (`bytebot __bottle-init …` inside a bottle): before clap, config and
    // logging, none of which it needs, because its start-up is part of every bottle run's.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == bottle::INIT_SUBCOMMAND)
    {
        let args = std::env::args_os().skip(2).collect();
        std::process::exit(bytebot_bottle::sandbox::init_main(args));
    }
    let cli = Cli::parse();
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    init_logs(&config);
    let result = match cli.command {
        Command::Config(ConfigCommand::Check) => {
            println!("config is valid\n{config:#?}");
            Ok(())
        }
        Command::Up(args) => run_desktop(config, args, true),
        Command::Desktop(args) => run_desktop(config, args, false),
        Command::Gateway(args) => run_gateway(config, args),
        Command::Mcp(args) => run_mcp(config, args),
        Command::Agent(args) => run_agent(config, args),
        Command::Task(cmd) => run_task(config, cmd),
        Command::Bottle(cmd) => std::process::exit(bottle::main(&config, cmd)),
        Command::Verify(args) => std::process::exit(bottle::verify(&config, args)),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        let code = if e.downcast_ref::<gateway::StartupConfigError>().is_some() {
            2
        } else {
            1
        };
        std::process::exit(code);
    }
}

fn load_config(flag: Option<&std::path::Path>) -> Result<Config> {
    let from_env = std::env::var_os("BYTEBOT_CONFIG").map(PathBuf::from);
    let local = PathBuf::from("bytebot.toml");
    let path = flag
        .map(PathBuf::from)
        .or(from_env)
        .or_else(|| local.exists().then_some(local));
    Config::load(path.as_deref(), std::env::vars())
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rmcp logs every MCP message at info; keep that for RUST_LOG=rmcp=info.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{},rmcp=warn", config.log.level))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_desktop(mut config: Config, args: DesktopArgs, up: bool) -> Result<()> {
    if let Some(listen) = args.listen {
        config.desktop.listen = listen;
    }
    if args.own_display {
        config.desktop.display = None;
    } else if let Some(d) = args
        .display
        .or_else(|| config.desktop.display.clone())
        .or_else(|| std::env::var("DISPLAY").ok().filter(|d| !d.is_empty()))
    {
        config.desktop.display = Some(d);
    }
    let token = token::resolve(&config)?;
    let workspace = config.workspace();
    let listen = config.desktop.listen;
    let vnc = config.desktop.vnc;
    let gw_config = config.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (desktop.listen / --listen): is another bytebot running?"))?;
        let server = tokio::task::spawn_blocking(move || Server::start(config.desktop, token.value.clone(), workspace).map(|s| (s, token)))
            .await
            .context("start-up task failed")??;
        let (server, token) = server;
        let url = format!("http://{}", listener.local_addr().context("listener has no address")?);
        let (gateway, agent) = if up {
            let gw = gateway::start(&gw_config, &token.value, gw_config.gateway.listen, &url).await?;
            // One store (one pool, one group writer) for both on the same file.
            let store = gw.gateway().store.clone();
            let ag = agent::start(&gw_config, &token.value, gw_config.agent.listen, &url, Some(store)).await?;
            // The gateway's `task` intent hands approved prompts to this agent.
            gw.gateway().attach_agent(std::sync::Arc::clone(&ag.agent));
            (Some(gw), Some(ag))
        } else {
            (None, None)
        };
        print_banner(&url, server.display(), &token, gateway.as_ref().map(|g| g.addr), agent.as_ref().map(|a| a.addr), vnc);
        tracing::info!(%url, display = server.display(), "desktop daemon listening");
        server.serve(listener, shutdown_signal()).await.context("HTTP server failed")?;
        if let Some(ag) = agent {
            ag.stop().await;
        }
        if let Some(gw) = gateway {
            gw.stop().await.context("gateway shutdown failed")?;
        }
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

fn run_gateway(mut config: Config, args: GatewayArgs) -> Result<()> {
    if let Some(listen) = args.listen {
        config.gateway.listen = listen;
    }
    if let Some(desktop) = args.desktop {
        config.gateway.desktop_url = desktop;
    }
    let problems = config.gateway.validate();
    if let Some(p) = problems.first() {
        anyhow::bail!(gateway::StartupConfigError(format!(
            "--desktop: {}",
            p.message
        )));
    }
    let token = token::resolve(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let desktop_url = config.gateway.desktop_url.clone();
        let server =
            gateway::start(&config, &token.value, config.gateway.listen, &desktop_url).await?;
        let url = format!("http://{}", server.addr);
        // Scripts and tests read this line to find the port.
        println!("gateway listening on {url}");
        println!("  desktop       {desktop_url}");
        println!("  token         {}  ({})", token.value, token.origin);
        println!("  openapi       {url}/openapi.json");
        tracing::info!(%url, %desktop_url, "gateway listening");
        tokio::select! {
            () = shutdown_signal() => {}
        }
        server.stop().await.context("gateway shutdown failed")?;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

fn run_agent(mut config: Config, args: AgentArgs) -> Result<()> {
    if let Some(listen) = args.listen {
        config.agent.listen = listen;
    }
    if let Some(db) = args.database {
        config.store.url = Some(db);
    }
    let desktop_url = args
        .desktop
        .unwrap_or_else(|| config.gateway.desktop_url.clone());
    let token = token::resolve(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = agent::start(
            &config,
            &token.value,
            config.agent.listen,
            &desktop_url,
            None,
        )
        .await?;
        let url = format!("http://{}", server.addr);
        // Scripts and tests read this line to find the port.
        println!("agent listening on {url}");
        println!("  desktop       {desktop_url}");
        println!("  models        {}", server.agent.catalog.ids().join(", "));
        println!("  token         {}  ({})", token.value, token.origin);
        tracing::info!(%url, %desktop_url, "agent listening");
        shutdown_signal().await;
        server.stop().await;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

fn run_task(config: Config, cmd: TaskCommand) -> Result<()> {
    let token = token::resolve(&config)?;
    let default_url = format!("http://{}", config.agent.listen);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cmd {
            TaskCommand::New {
                description,
                model,
                priority,
                watch,
                url,
            } => {
                let client =
                    task::Client::new(url.as_deref().unwrap_or(&default_url), &token.value)?;
                let t = client
                    .create(&description, model.as_deref(), priority.as_deref())
                    .await?;
                let id = t["id"].as_str().unwrap_or_default().to_string();
                println!(
                    "task {id} {} (model {})",
                    t["status"].as_str().unwrap_or("?"),
                    t["model"].as_str().unwrap_or("?")
                );
                if watch {
                    let last = client.watch(&id).await?;
                    if last != "COMPLETED" {
                        anyhow::bail!("task {id} ended as {last}");
                    }
                }
                Ok(())
            }
            TaskCommand::List {
                status,
                search,
                limit,
                url,
            } => {
                let client =
                    task::Client::new(url.as_deref().unwrap_or(&default_url), &token.value)?;
                let page = client
                    .list(status.as_deref(), search.as_deref(), limit)
                    .await?;
                for t in page["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<11} {:<6}  {}",
                        t["id"].as_str().unwrap_or("?"),
                        t["status"].as_str().unwrap_or("?"),
                        t["priority"].as_str().unwrap_or("?"),
                        t["description"].as_str().unwrap_or("")
                    );
                }
                println!("{} task(s) in all", page["total"]);
                Ok(())
            }
            TaskCommand::Watch { id, url } => {
                let client =
                    task::Client::new(url.as_deref().unwrap_or(&default_url), &token.value)?;
                let last = client.watch(&id).await?;
                println!("task {id} is {last}");
                Ok(())
            }
        }
    })
}

/// `bytebot mcp`: the gateway's MCP tools on stdio. Stdout carries only MCP
/// messages; logs go to stderr.
fn run_mcp(mut config: Config, args: McpArgs) -> Result<()> {
    if let Some(desktop) = args.desktop {
        config.gateway.desktop_url = desktop;
    }
    if let Some(p) = config.gateway.validate().first() {
        anyhow::bail!(gateway::StartupConfigError(format!(
            "{}: {}",
            p.key, p.message
        )));
    }
    let token = token::resolve(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let desktop_url = config.gateway.desktop_url.clone();
        let gw = gateway::build(&config, &token.value, config.gateway.listen, &desktop_url).await?;
        let caller = bytebot_gateway::mcp::acting_as(&gw, args.key.as_deref())
            .map_err(|e| gateway::StartupConfigError(e.to_string()))?;
        tracing::info!(key = %caller.key_id, profile = %caller.profile, %desktop_url, "serving MCP on stdio");
        tokio::select! {
            served = bytebot_gateway::mcp::serve_stdio(gw, caller) => served.context("MCP over stdio failed")?,
            () = shutdown_signal() => {}
        }
        Ok(())
    });
    // A pending read of stdin cannot be cancelled; do not wait for it on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn print_banner(
    url: &str,
    display: &str,
    token: &token::Token,
    gateway: Option<SocketAddr>,
    agent: Option<SocketAddr>,
    vnc: bool,
) {
    let up = gateway.is_some();
    let title = if up {
        "bytebot is up"
    } else {
        "bytebot desktop is up"
    };
    println!("{title}");
    println!(
        "  desktop API   {url}  (X display {display}; Bytebot-compatible POST {url}/computer-use)"
    );
    if vnc {
        println!("  live view     {url}/novnc/?token={}", token.value);
    }
    if let Some(gw) = gateway {
        println!(
            "  gateway       http://{gw}  (plan/approve/execute; OpenAPI at http://{gw}/openapi.json)"
        );
    }
    if let Some(a) = agent {
        println!(
            "  agent         http://{a}  (tasks: POST /tasks, live events at /tasks/{{id}}/events)"
        );
    }
    println!("  token         {}  ({})", token.value, token.origin);
    println!(
        "  try           curl -H 'Authorization: Bearer {}' {url}/v1/screenshot -o shot.png",
        token.value
    );
    println!("Press Ctrl+C to stop.");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
