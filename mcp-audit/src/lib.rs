//! # mcp-audit
//!
//! What happened, provably: an audit record for every MCP message in both directions, sinks
//! behind a trait (JSON-lines files with rotation and a SHA-256 hash chain, OpenTelemetry OTLP),
//! a bounded queue with an explicit overflow policy between the request path and the sinks,
//! metrics in the Prometheus text format, export to CSV/JSON, and webhook alerts.
//!
//! [`AuditLayer`] is the outermost MCP-level layer of the reference gateway. It records the
//! client's message, propagates W3C trace context inward (`_meta.traceparent`, and `ctx.trace` for
//! the HTTP `traceparent` header), wraps the reverse path ([`mcp_gateway_core::Downstream`]) so
//! notifications and server-to-client requests are recorded too, and records the answer with what
//! inner layers decided (policy decisions, DLP findings, upstream latency from
//! [`mcp_gateway_core::Annotations`]).
//!
//! ```
//! use mcp_audit::{AuditLayer, Auditor, LaneConfig, Metrics, sink::{FileSinkConfig, JsonlFileSink}};
//! use mcp_gateway_core::{BoxError, McpRequest, Method, RequestId};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let dir = std::env::temp_dir().join(format!("mcp-audit-doc-{}", std::process::id()));
//! let metrics = Metrics::new();
//! let auditor = Auditor::builder()
//!     .sink(LaneConfig::new("file").durable(true), JsonlFileSink::open(FileSinkConfig::new(&dir))?)
//!     .sink(LaneConfig::new("metrics"), metrics.clone())
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(AuditLayer::new(auditor.clone()).gateway("gw-1"))
//!     .service(service_fn(|req: McpRequest| async move {
//!         Ok::<_, BoxError>(req.reply(serde_json::json!({"content": []})))
//!     }));
//! let mut params = serde_json::Map::new();
//! params.insert("name".into(), "echo".into());
//! svc.oneshot(McpRequest::new(Some(RequestId::Number(1)), Method::ToolsCall, params)).await?;
//! auditor.flush(std::time::Duration::from_secs(5)).await;
//! assert_eq!(mcp_audit::chain::verify_dir(&dir, "audit")?.records, 2);
//! assert!(metrics.render_prometheus().contains("mcp_calls_total"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `otlp` | yes | [`sink::otlp::OtlpSink`]: traces, logs and metrics over OTLP HTTP/protobuf |
//! | `tokenizer` | yes | token estimates in `o200k_base` (bpe-openai: exact, embedded, offline) |

pub mod alerts;
pub mod auditor;
pub mod chain;
pub mod cli;
pub mod config;
pub mod event;
pub mod export;
pub mod layer;
pub mod metrics;
pub mod scrub;
pub mod sink;
pub mod time;
pub mod tokens;

pub use auditor::{Auditor, AuditorBuilder, LaneConfig, LaneStats, Overflow, Submitted};
pub use config::Config;
pub use event::{
    AuditEvent, AuditIdentity, DlpFinding, Leg, LegSpans, MessageKind, PolicyDecision,
};
pub use layer::{Audit, AuditLayer, Durability, ResponseFuture};
pub use metrics::Metrics;
pub use scrub::{Scrubber, SharedScrubber};
pub use sink::AuditSink;
