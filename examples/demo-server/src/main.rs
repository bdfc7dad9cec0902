//! Run with `cargo run -p demo-server` (speaks MCP over stdin/stdout; logs go to stderr,
//! filtered by `RUST_LOG`, default `warn`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match demo_server::run_stdio().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "demo-server stopped");
            eprintln!("demo-server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
