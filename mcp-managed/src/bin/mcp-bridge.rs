//! `mcp-bridge`: runs a stdio MCP server as a child and serves it over Streamable HTTP, checking a
//! shared secret before anything reaches the child. See `mcp_managed::bridge`.
//!
//! ```text
//! MCP_BRIDGE_SECRET=... mcp-bridge --listen 127.0.0.1:0 [--allow-source CIDR]... -- CMD ARGS...
//! mcp-bridge probe http://127.0.0.1:8080/readyz
//! ```
//! On start it prints `mcp-bridge listening on ADDR` as its first line on stdout.

use std::{io::Write as _, process::ExitCode};

use clap::Parser;
use mcp_managed::bridge::{Bridge, BridgeConfig, IpNet};

/// Serve a stdio MCP server over Streamable HTTP.
#[derive(Debug, Parser)]
#[command(name = "mcp-bridge", version)]
struct Args {
    /// Address to listen on (`0.0.0.0:8080` in a container; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The environment variable holding the shared secret (removed from the child's environment).
    #[arg(long, default_value = mcp_managed::SECRET_ENV)]
    secret_env: String,
    /// Run without a shared secret (only for tests and trusted networks).
    #[arg(long)]
    insecure_no_secret: bool,
    /// Allowed source networks (repeatable); default: any.
    #[arg(long = "allow-source")]
    allow: Vec<IpNet>,
    /// The server command and its arguments (after `--`); `probe URL` checks a bridge instead.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-bridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    if args.command.first().map(String::as_str) == Some("probe") && args.command.len() == 2 {
        return match mcp_managed::bridge::probe(&args.command[1]).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcp-bridge probe: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let secret = match std::env::var(&args.secret_env) {
        Ok(s) if !s.is_empty() => Some(s),
        _ if args.insecure_no_secret => None,
        _ => {
            eprintln!(
                "mcp-bridge: no shared secret in ${}; refusing to start (use --insecure-no-secret to run without one)",
                args.secret_env
            );
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mcp-bridge: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(3);
        }
    };
    let config = BridgeConfig {
        command: args.command,
        secret,
        allow: args.allow,
        scrub_env: vec![args.secret_env],
    };
    let bridge = match Bridge::start(config, listener) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mcp-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "mcp-bridge listening on {}", bridge.local_addr());
    let _ = out.flush();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-bridge: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = parent_gone() => eprintln!("mcp-bridge: the process that started it is gone; stopping"),
    }
    bridge.shutdown();
    // Give the supervisor time to close the child's stdin and wait for it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    ExitCode::SUCCESS
}

/// Resolves when the process that started the bridge exits (the bridge is re-parented), so a
/// gateway that is killed outright leaves no instance behind. Never resolves when started by
/// PID 0 or 1 (a container's entrypoint, an init system).
async fn parent_gone() {
    let parent = std::os::unix::process::parent_id();
    if parent <= 1 {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}
