//! The downstream Streamable HTTP adapter: MCP clients talk HTTP to the gateway here.
//!
//! [`StreamableHttp`] is a `tower::Service<http::Request<B>>` in front of any MCP-level service
//! (`tower::Service<McpRequest, Response = McpResponse, Error = BoxError>`). It checks the HTTP
//! side (Host, Origin, Accept, Content-Type, body size, `MCP-Protocol-Version`), frames
//! JSON-RPC, keeps sessions, fills the [`RequestContext`](crate::RequestContext) (identity from
//! the request extensions, session, trace, origin, and a per-request
//! [`Downstream`](crate::Downstream)), and answers with JSON or SSE. [`serve`] runs it (or any
//! tower HTTP service) on a TCP listener.
//!
//! ```no_run
//! use mcp_gateway_core::{BoxError, McpRequest, http::{HttpConfig, StreamableHttp, serve}};
//! use tower::service_fn;
//!
//! # async fn run() -> Result<(), BoxError> {
//! let mcp = service_fn(|req: McpRequest| async move {
//!     Ok::<_, BoxError>(req.reply(serde_json::json!({})))
//! });
//! let adapter = StreamableHttp::new(mcp, HttpConfig::new())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, adapter, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Protocol support
//!
//! | feature | 2025-06-18 / 2025-11-25 (sessions) | 2026-07-28 (stateless) |
//! |---|---|---|
//! | POST one JSON-RPC message; batches refused (-32600) | yes | yes |
//! | Accept must allow JSON and SSE (406), Content-Type JSON (415), body limit (413) | yes | yes |
//! | Host allow-list (403, DNS rebinding), Origin check (403) | yes | yes |
//! | `MCP-Protocol-Version`: unsupported -> 400; must equal the negotiated version | yes | must equal `_meta` version (-32020) |
//! | `initialize` -> sealed `Mcp-Session-Id` (AES-256-GCM, identity-bound) | yes | n/a |
//! | session resumes on any process with the same key; forged / other identity / expired / DELETEd -> 404 | yes | n/a |
//! | per-request `_meta` (`io.modelcontextprotocol/protocolVersion`, `clientInfo`, `clientCapabilities`) -> `ctx.session` | n/a | yes |
//! | `Mcp-Method` / `Mcp-Name` headers checked against the body (400, -32020) | when sent | when sent |
//! | response: JSON if the answer comes first, SSE as soon as a reverse-path message comes | yes | yes |
//! | progress, logging and other notifications on the request's stream | yes | yes |
//! | server-to-client requests (sampling, elicitation, roots) on the request's stream, answered by POST | yes | refused: `Downstream::request` errs, dispatch returns `InputRequiredResult` |
//! | `notifications/cancelled` aborts the in-flight request | yes | passed inward only |
//! | SSE event ids `<stream>-<seq>`, replay buffer, GET with `Last-Event-ID` | yes | no (nothing to resume) |
//! | client disconnect is not cancellation: the request runs on, its events are buffered (or sent on the GET stream) | yes | runs on, events dropped |
//! | GET stream: list changes, unsolicited messages, updates of subscribed resources; one per session (409) | yes | 405 |
//! | `subscriptions/listen`: acknowledged filter, then matching notifications tagged with `subscriptionId` | yes | yes |
//! | DELETE ends the session on this process | yes | n/a |
//!
//! ## Why not rmcp's `StreamableHttpService`
//!
//! rmcp 3.9 is the protocol implementation everywhere else; on the downstream side it falls
//! short of what the gateway needs:
//!
//! - **Session ids cannot carry the session.** rmcp's `SessionManager::create_session()` runs
//!   before `initialize` reaches the handler and takes no arguments, so an id cannot contain what
//!   `initialize` produced (client info, capabilities, negotiated version, upstream session ids).
//!   Resuming on another process needs a shared `session_store` that replays `initialize`. Here
//!   the id *is* the session, sealed with AES-256-GCM and bound to the caller: any replica with
//!   the key resumes it, with no store and no replay.
//! - **Handler shape.** It wants a `ServerHandler` built per session (and per stateless POST,
//!   each with its own serve loop and `Peer`), not a tower service over raw JSON; typed model
//!   structs drop unknown fields, which a pass-through gateway must keep.
//! - **Hot-path cost.** Per POST: two tokio `RwLock` reads in `LocalSessionManager`, two round
//!   trips to the session's worker task, a `RwLock` write per response in `Peer`, and legacy
//!   responses are always SSE. Here a legacy POST is one sharded `Mutex` lookup, the inner call
//!   runs in one spawned task, and the answer is plain JSON unless a reverse-path message comes
//!   first.
//! - **Routing the reverse path.** A server-to-client request relayed from inside an upstream
//!   handler gets tagged with the upstream's request id and can land on the wrong stream; here
//!   every request has its own [`Downstream`](crate::Downstream) bound to its own stream.
//!
//! Measured by `cargo bench -p mcp-gateway-core --bench http_adapter` on the 2-core dev machine
//! while other builds ran (load average ~12, so absolute numbers are inflated and noisy; compare
//! them with each other). Criterion's middle estimate, with its interval:
//!
//! | case | time |
//! |---|---|
//! | seal a session id (claims with client info, capabilities, 2 upstream sessions) | 5.2 µs (4.6–6.0) |
//! | open a session id (only on the first request a process sees for that session) | 7.6 µs (5.8–10.6) |
//! | POST `tools/call` in a legacy session -> `McpRequest` -> echo -> JSON body | 43 µs (26–66) |
//! | POST `tools/call`, stateless 2026-07-28 with `_meta` -> JSON body | 27 µs (26–29) |
//! | POST `tools/call` with one progress notification -> SSE body of two events | 24 µs (23–25) |
//!
//! The POST cases include building the HTTP request, one `tokio::spawn` for the inner call and
//! collecting the body, on a current-thread runtime. A session id is opened once per process;
//! later requests find the session in memory (one sharded `Mutex` lookup and a SHA-256 of the
//! caller's binding), so sealing costs nothing on the hot path. `tests/http_sessions.rs` measures
//! 10,000 sessions at about 3.7 KB each (36 MB resident, ids included).
//!
//! ## Sessions
//!
//! In-memory session state (subscriptions, open streams, replay buffer, pending
//! server-to-client requests, in-flight requests) lives in a sharded map and is dropped after
//! the idle timeout when nothing is open or running; a later request with the same id rebuilds
//! it from the sealed id, exactly as another replica would. Ids older than the maximum session
//! age are refused. DELETEd ids are remembered (bounded) and refused on this process.

mod body;
mod checks;
mod config;
mod serve;
mod service;
mod state;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use service::fuzz_parse as fuzz_parse_message;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use state::parse_event_id;

pub use body::BoxBody;
pub use config::{HttpConfig, HttpSettings, SettingsError};
pub use serve::{
    DEFAULT_GRACE, DEFAULT_HEADER_READ_TIMEOUT, ServeOptions, open_connections, serve, serve_with,
    serve_with_grace,
};
pub use service::{
    HEADER_LAST_EVENT_ID, HEADER_MCP_METHOD, HEADER_MCP_NAME, HEADER_MISMATCH,
    HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID, META_CLIENT_CAPABILITIES, META_CLIENT_INFO,
    META_PROTOCOL_VERSION, META_SUBSCRIPTION_ID, STATELESS_VERSION, SUPPORTED_VERSIONS,
    StreamableHttp,
};
