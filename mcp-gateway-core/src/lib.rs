//! # mcp-gateway-core
//!
//! The core of an MCP gateway built from `tower` layers: the message model every layer sees, the
//! connections to upstream MCP servers (stdio child processes and Streamable HTTP), the merged and
//! namespaced catalog, the routing layer, the dispatch service, and the downstream Streamable HTTP
//! adapter with sealed, identity-bound sessions.
//!
//! Every concern of the gateway is a `tower::Layer` over one service contract:
//! `tower::Service<McpRequest, Response = McpResponse, Error = BoxError>`. A refusal (unknown
//! tool, policy denial, DLP block) is an [`McpResponse`] holding a JSON-RPC error with a stable
//! code from [`codes`]; a [`BoxError`] is a failure of the gateway itself.
//!
//! ```
//! use mcp_gateway_core::{McpRequest, Method, BoxError, RequestId};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Any layer wraps any MCP-level service; here a service that answers `ping`.
//! let svc = ServiceBuilder::new().service(service_fn(|req: McpRequest| async move {
//!     Ok::<_, BoxError>(req.reply(serde_json::json!({})))
//! }));
//! let res = svc.oneshot(McpRequest::new(Some(RequestId::Number(1)), Method::Ping, Default::default())).await?;
//! assert!(!res.is_error());
//! # Ok(())
//! # }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none yet) | | everything is always built |

pub mod catalog;
pub mod dispatch;
pub mod downstream;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod message;
pub mod route;
pub mod session;
pub mod ssrf;
pub mod trace;
pub mod upstream;

pub use downstream::{Downstream, ServerMessage};
pub use events::{EventBus, GatewayEvent};
pub use identity::Identity;
pub use message::{
    Annotation, Annotations, BoxError, Direction, ErrorData, FeatureKind, JsonObject, ListFilter,
    ListOrigins, McpRequest, McpResponse, Method, Origin, RequestContext, RequestId, RetryAfter,
    SessionInfo, Target, codes, error, not_found,
};
pub use trace::TraceContext;
