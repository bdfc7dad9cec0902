//! # mcp-policy
//!
//! What each caller of an MCP gateway may see and do, as tower layers over the core contract
//! (`Service<McpRequest, Response = McpResponse, Error = BoxError>`):
//!
//! - **Provisioning**, fail-closed: per gateway, server and feature kind, `allow-all`,
//!   `allow-selected` or `block-all` (the default). Newly discovered features under
//!   `allow-selected` wait for approval and raise [`PolicyEvent::FeaturePending`].
//! - **Scoping** rules per team, identity, role, agent or client, with **conditions** in a small
//!   CEL-syntax expression language compiled at load ([`expr`]). With no rules nothing is visible;
//!   a hidden feature is answered exactly like a missing one.
//! - **Tool pinning** ([`pin`]): SHA-256 of name, title, description, schemas and annotations; a
//!   changed pinned tool is withheld ([`PolicyEvent::RugPull`]) until re-approved.
//! - **Threat checks** ([`threat`]): poisoning, mimicry (Unicode confusables, edit distance),
//!   cross-server shadowing; severities map to block or warn.
//! - **Kill switches** and **rate limits** (GCRA), **metadata overrides** (rename, replace or
//!   shorten descriptions, hide or pin parameters), **reload** all-or-nothing with line numbers.
//!
//! Place [`PolicyLayer`] after the core route layer (it reads `ctx.target` and the
//! `ListOrigins` of merged lists), and [`ExposedNamesLayer`] before it when tools are renamed.
//!
//! ```
//! use mcp_gateway_core::{BoxError, ListOrigins, McpRequest, McpResponse, Method, codes};
//! use mcp_policy::{PolicyHandle, PolicyLayer, config::{compile_document, parse_document}, layer::target};
//! use serde_json::json;
//! use std::sync::Arc;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let text = r#"
//! [servers.time]
//! tools = "allow-all"
//!
//! [[rules]]
//! name = "ops-time"
//! teams = ["ops"]
//! server = "time"
//! "#;
//! let engine = compile_document(&parse_document(text, None)?, Some(text), None)?;
//! let handle = PolicyHandle::new(engine);
//!
//! // Stands in for route + dispatch: one upstream tool.
//! let upstream = service_fn(|req: McpRequest| async move {
//!     let mut res = req.reply(json!({"tools": [{"name": "time__now", "inputSchema": {"type": "object"}}]}));
//!     res.extensions.insert(ListOrigins(Arc::new(vec![target("time", "now", "time__now")])));
//!     Ok::<_, BoxError>(res)
//! });
//! let svc = ServiceBuilder::new().layer(PolicyLayer::new(handle)).service(upstream);
//!
//! // An anonymous caller is in no team: the list is empty.
//! let res = svc.oneshot(McpRequest::new(Some(mcp_gateway_core::RequestId::Number(1)), Method::ToolsList, Default::default())).await?;
//! assert_eq!(res.body.ok().map(|b| b["tools"].as_array().map(Vec::len)), Some(Some(0)));
//! # let _ = codes::INVALID_PARAMS;
//! # Ok(())
//! # }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | everything is always built |

pub mod cli;
pub mod config;
pub mod engine;
pub mod expr;
pub mod layer;
pub mod pin;
pub mod ratelimit;
mod state;
pub mod threat;

pub use config::{Config, Document, LoadError};
pub use engine::Engine;
pub use layer::{ExposedNames, ExposedNamesLayer, Policy, PolicyLayer, ResponseFuture, RetryAfter};
pub use pin::{ApprovalStore, FileStore, MemoryStore};
pub use state::{
    AdminError, KillTarget, PolicyEvent, PolicyHandle, RECENT_EVENTS, RecordedEvent, WithheldTool,
};
