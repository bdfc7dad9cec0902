//! Run with `cargo run -p conformance-server -- stdio` or `cargo run -p conformance-server -- http --port 3002`.

use clap::{Parser, Subcommand};

/// The MCP conformance suite's server fixture.
#[derive(Debug, Parser)]
#[command(name = "conformance-server", version)]
struct Cli {
    #[command(subcommand)]
    transport: Transport,
}

#[derive(Debug, Subcommand)]
enum Transport {
    /// Speak MCP over stdin/stdout.
    Stdio,
    /// Serve Streamable HTTP on 127.0.0.1 (endpoint /mcp).
    Http {
        /// TCP port (0 picks a free one; the address is printed on stdout).
        #[arg(long, default_value_t = 3002)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = match cli.transport {
        Transport::Stdio => conformance_server::run_stdio().await,
        Transport::Http { port } => serve_http(port).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("conformance-server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve_http(port: u16) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    conformance_server::http::serve(listener, shutdown).await?;
    Ok(())
}
