//! Run with `cargo run --release -p mcp-gateway-benches --bin echo-upstream -- --port 0`.
//!
//! A fast MCP server for load tests: rmcp 3.9's `StreamableHttpService` (legacy sessions on, JSON
//! answers for stateless 2026-07-28 requests) behind hyper, with TCP_NODELAY on every accepted
//! socket. It has one tool, `echo {message}`, which returns the message as text. It prints
//! `listening on http://ADDR/mcp` once it accepts connections, and stops on Ctrl-C or SIGTERM.

use std::{net::SocketAddr, sync::Arc};

use clap::Parser;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use mcp_gateway_benches::shutdown_signal;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
        Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};

#[derive(Parser, Debug)]
#[command(
    name = "echo-upstream",
    about = "A fast rmcp Streamable HTTP MCP server with an echo tool."
)]
struct Args {
    /// Port on 127.0.0.1 (0 = pick a free one; the chosen address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// The server: one `echo` tool. Cloning is an `Arc` clone, so the per-session factory is cheap.
#[derive(Clone)]
struct Echo {
    tools: Arc<[Tool]>,
}

impl Echo {
    fn new() -> Self {
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "message": { "type": "string", "description": "The text to send back." } },
            "required": ["message"],
        });
        let schema: JsonObject = match schema {
            serde_json::Value::Object(map) => map,
            _ => JsonObject::new(),
        };
        Self {
            tools: Arc::from(vec![Tool::new(
                "echo",
                "Echo the message back.",
                Arc::new(schema),
            )]),
        }
    }
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("echo-upstream", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if request.name != "echo" {
            return Err(McpError::invalid_params(
                format!("unknown tool `{}`", request.name),
                None,
            ));
        }
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(serde_json::Value::as_str);
        Ok(match message {
            Some(text) => CallToolResult::success(vec![ContentBlock::text(text.to_owned())]),
            None => {
                CallToolResult::error(vec![ContentBlock::text("`message` (a string) is required")])
            }
        }
        .into())
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo-upstream: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-upstream: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_json_response(true);
    let cancel = config.cancellation_token.clone();
    let echo = Echo::new();
    let service = TowerToHyperService::new(StreamableHttpService::new(
        move || Ok(echo.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    ));
    println!("listening on http://{}/mcp", listener.local_addr()?);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    eprintln!("echo-upstream: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without it, multi-write SSE replies meet the client's delayed ACK (~40 ms per call).
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("echo-upstream: cannot set TCP_NODELAY: {e}");
        }
        let service = service.clone();
        tokio::spawn(async move {
            // Errors here are a client going away mid-request: nothing to do.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    cancel.cancel();
    Ok(())
}
