//! Run with `cargo run -p mcp-managed --example stdio-demo`: the workspace's demo MCP server over
//! stdin/stdout, built here so the tests and the bench have a fast real stdio server binary to put
//! behind the bridge (and into `FROM scratch` images).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match demo_server::run_stdio().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stdio-demo: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
