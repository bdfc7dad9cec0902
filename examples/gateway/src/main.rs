//! Run with `cargo run -p mcp-gateway` (serves the built-in default config on
//! http://127.0.0.1:8080/mcp) or `cargo run -p mcp-gateway -- --config gateway.toml`.
//!
//! The reference MCP gateway: every layer of the workspace assembled and driven by a TOML file.

mod admin_cli;
mod connect;
mod stack;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use mcp_gateway::config;
use mcp_gateway_core::{
    BoxError,
    dispatch::DispatchConfig,
    gateway::Gateway,
    http::{HttpConfig, ServeOptions, StreamableHttp, serve_with},
    session::SessionKey,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "mcp-gateway",
    version,
    about = "One governed MCP endpoint in front of many MCP servers."
)]
struct Cli {
    /// The configuration file (TOML). Without it, a built-in default that fronts the demo server.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the configuration and report every problem with its line number.
    Check,
    /// Print the built-in default configuration.
    DefaultConfig,
    /// Run the demo MCP server on stdin/stdout (used by the default configuration).
    #[command(hide = true)]
    DemoServer,
    /// Data loss prevention tools.
    Dlp {
        #[command(subcommand)]
        command: DlpCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit log tools (verify the hash chain, export).
    Audit {
        #[command(subcommand)]
        command: mcp_audit::cli::AuditCommand,
    },
    /// Set, lift and list kill switches of a running gateway (through its admin endpoint).
    KillSwitch(admin_cli::KillSwitchArgs),
    /// Create, revoke and list API keys (`[identity.api_keys]`).
    ApiKey(mcp_identity::cli::ApiKeyArgs),
    /// Manage the credential vault (`[identity.vault]`).
    Vault(mcp_identity::cli::VaultArgs),
    /// Managed servers.
    Managed {
        #[command(subcommand)]
        command: ManagedCommand,
    },
    /// Connect to an MCP server as a client (the gateway's upstream connection and OAuth
    /// client), list its tools and call some; one JSON document per line on stdout.
    Connect(connect::ConnectArgs),
}

#[derive(Subcommand, Debug)]
enum DlpCommand {
    /// Scan text with the configured (or built-in) detectors; one JSON line per record.
    Scan(mcp_dlp::cli::ScanArgs),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Vet tool definitions (JSON lines) for poisoning, mimicry and shadowing.
    ScanTools(mcp_policy::cli::ScanToolsArgs),
}

#[derive(Subcommand, Debug)]
enum ManagedCommand {
    /// Print the generated docker command (or Kubernetes manifest, compose file) for a managed server.
    Command(mcp_managed::cli::CommandArgs),
}

/// mimalloc: per-thread free lists for the many small, short-lived allocations of each call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::DemoServer)) {
        // Before logging and config: the demo server's stdout is pure JSON-RPC.
        return run_demo_server();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = match cli.command {
        // Needs no configuration.
        Some(Command::Connect(args)) => return run_connect(args),
        other => other,
    };
    let text = match &cli.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mcp-gateway: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => config::default_text(),
    };
    let source = cli.config.as_ref().map_or_else(
        || "<built-in default>".to_owned(),
        |p| p.display().to_string(),
    );
    let settings = match config::parse(&text) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{source}: {e}");
            }
            eprintln!("mcp-gateway: {} problem(s) in {source}", errors.len());
            return ExitCode::from(2);
        }
    };
    match command.unwrap_or(Command::Serve) {
        Command::Check => {
            println!("{source}: ok ({} server(s))", settings.upstreams.len());
            ExitCode::SUCCESS
        }
        Command::DefaultConfig => {
            print!("{}", config::default_text());
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mcp-gateway: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mcp-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DemoServer => run_demo_server(),
        Command::Connect(args) => run_connect(args),
        Command::Dlp {
            command: DlpCommand::Scan(args),
        } => {
            let stdin = std::io::stdin();
            match mcp_dlp::cli::run(
                &args,
                settings.dlp.as_ref(),
                stdin.lock(),
                std::io::stdout().lock(),
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail("dlp scan", e),
            }
        }
        Command::Policy {
            command: PolicyCommand::ScanTools(args),
        } => {
            let stdin = std::io::stdin();
            match mcp_policy::cli::scan_tools(&args, stdin.lock(), std::io::stdout().lock()) {
                Ok(summary) if summary.flagged > 0 => ExitCode::from(1),
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail("policy scan-tools", e),
            }
        }
        Command::Audit { command } => {
            let dir = settings
                .audit
                .as_ref()
                .and_then(|a| a.file.as_ref())
                .map(|f| f.dir.clone());
            let code = mcp_audit::cli::run(
                &command,
                dir.as_deref(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
        Command::KillSwitch(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail("kill-switch", e),
            };
            match runtime.block_on(admin_cli::kill_switch(
                &args,
                &settings,
                &mut std::io::stdout().lock(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("kill-switch", e),
            }
        }
        Command::ApiKey(args) => match mcp_identity::cli::run_api_key(
            &args,
            settings.identity.as_ref(),
            &mut std::io::stdout().lock(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("api-key", e),
        },
        Command::Vault(args) => match mcp_identity::cli::run_vault(
            &args,
            settings.identity.as_ref(),
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("vault", e),
        },
        Command::Managed {
            command: ManagedCommand::Command(args),
        } => {
            match mcp_managed::cli::command(&args, &settings.managed, &mut std::io::stdout().lock())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("managed command", e),
            }
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("mcp-gateway {what}: {e}");
    ExitCode::from(2)
}

fn run_connect(args: connect::ConnectArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail("connect", e),
    };
    match runtime.block_on(connect::run(args, &mut std::io::stdout().lock())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-gateway connect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo_server() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo_server::run_stdio()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: config::Settings) -> Result<(), BoxError> {
    let mut dispatch = DispatchConfig {
        instructions: settings.instructions.clone(),
        list_fail_mode: settings.list_fail_mode,
        allow_link_local: settings.allow_link_local,
        ..DispatchConfig::default()
    };
    if let Some(n) = settings.page_size {
        dispatch.page_size = n;
    }
    let events = mcp_gateway_core::EventBus::default();
    let managed = stack::managed(&settings, &events)?;
    let mut builder = Gateway::builder()
        .naming(settings.naming.clone())
        .dispatch_config(dispatch)
        .events(events);
    for upstream in settings.upstreams.iter().cloned() {
        builder = builder.upstream(upstream);
    }
    let mut relays = Vec::new();
    if let Some(m) = &managed {
        for (upstream, relay) in stack::catalog_relays(&settings, m).await? {
            builder = builder.upstream(upstream);
            relays.push(relay);
        }
    }
    let gateway = builder.build()?;
    let parts = match stack::mcp_stack(&settings, &gateway, managed.clone()) {
        Ok(p) => p,
        Err(e) => {
            // The catalog upstreams may already have started managed instances.
            if let Some(m) = &managed {
                m.shutdown().await;
            }
            gateway.shutdown().await;
            return Err(e);
        }
    };
    let served = serve_gateway(&settings, &gateway, &parts).await;
    drop(relays);
    stack::shutdown(&parts).await;
    tracing::info!("stopping upstreams");
    gateway.shutdown().await;
    tracing::info!("stopped");
    served
}

/// Serves the HTTP front until a shutdown signal (or a failure to listen).
async fn serve_gateway(
    settings: &config::Settings,
    gateway: &Gateway,
    parts: &stack::Parts,
) -> Result<(), BoxError> {
    let key = match &settings.session_key {
        Some(k) => SessionKey::from_encoded(k)?,
        None => SessionKey::generate()?,
    };
    let mut http = HttpConfig::new()
        .session_key(key)
        .events(gateway.events().clone());
    if let Some(path) = &settings.path {
        http = http.path(path.clone());
    }
    if let Some(n) = settings.max_body_bytes {
        http = http.max_body_bytes(n);
    }
    if let Some(ms) = settings.body_read_timeout_ms {
        http = http.body_read_timeout(Duration::from_millis(ms));
    }
    for h in &settings.allowed_hosts {
        http = http.allowed_host(h.clone());
    }
    for o in &settings.allowed_origins {
        http = http.allowed_origin(o.clone());
    }
    if let Some(name) = &settings.gateway_name {
        http = http.gateway_name(name.clone());
    }
    let path = http.get_path().to_owned();
    let adapter = StreamableHttp::new(parts.mcp.clone(), http)?;
    let front = stack::http_front(adapter.clone(), parts, settings);

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local = listener.local_addr()?;
    let pending = gateway.ready(Duration::from_secs(30)).await;
    if !pending.is_empty() {
        tracing::warn!(
            ?pending,
            "serving before these upstreams are ready; they join when they connect"
        );
    }
    tracing::info!("MCP endpoint: http://{local}{path}");
    // A machine-readable line for scripts and tests (the port may have been 0).
    println!("listening on http://{local}{path}");
    let streams = adapter.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Standing GET and listen streams would otherwise hold the graceful shutdown open.
        streams.close_streams();
    };
    let mut serve_options = ServeOptions::default();
    if let Some(ms) = settings.header_read_timeout_ms {
        serve_options.header_read_timeout = Duration::from_millis(ms);
    }
    serve_with(listener, front, shutdown, serve_options).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested: finishing in-flight calls");
}
