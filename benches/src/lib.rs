//! End-to-end load harness for the MCP gateway, and the peers it measures against.
//!
//! Three binaries (see `benches/README.md` for the exact commands and measured numbers):
//!
//! | binary | what it is |
//! |---|---|
//! | `echo-upstream` | a fast rmcp 3.9 Streamable HTTP MCP server with one tool, `echo {message}` |
//! | `hyper-proxy` | a bare hyper 1 reverse proxy to one upstream: the "one proxy hop" yardstick |
//! | `load` | starts the upstream, the proxy and the reference gateway, drives `tools/call echo` through each at several concurrencies, checks every answer, prints a table |
//!
//! This library holds the parts of the harness that are worth testing on their own: the MCP client
//! over one raw HTTP/1.1 connection ([`client`]), the JSON / SSE answer parser ([`sse`]), CPU
//! accounting of a process from `/proc` ([`cpu`]) and the result statistics ([`stats`]).
//!
//! ```
//! use mcp_gateway_benches::sse::SseParser;
//!
//! let mut parser = SseParser::default();
//! let mut events = Vec::new();
//! parser.push(b"id: 1\ndata: {\"jsonrpc\":\"2.0\",", &mut events);
//! parser.push(b"\"id\":7,\"result\":{}}\n\n", &mut events);
//! assert_eq!(events, vec![br#"{"jsonrpc":"2.0","id":7,"result":{}}"#.to_vec()]);
//! ```
//!
//! This crate has no cargo features.

pub mod client;
pub mod cpu;
pub mod sse;
pub mod stats;

/// Completes on Ctrl-C or SIGTERM (the binaries' shutdown signal).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, only SIGTERM stops us.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
