//! # mcp-dlp
//!
//! Data loss prevention for MCP traffic, as a `tower` layer over the gateway's MCP-level service
//! contract (`Service<McpRequest, Response = McpResponse, Error = BoxError>`).
//!
//! - **Detectors** ([`detector`]): e-mail, phone numbers, US SSN, payment cards (Luhn), IBAN
//!   (mod-97), IPv4/IPv6, AWS access and secret keys, GitHub, GitLab, Slack, Stripe, OpenAI,
//!   Anthropic and Google tokens, JWTs, PEM private keys, generic high-entropy secrets, and custom
//!   detectors — all compiled into **one** `regex-automata` automaton, so a scan reads the text
//!   once. Validators (Luhn, IBAN, entropy, context words) cut false positives. Matching is
//!   linear-time whatever the pattern (see [`detector`] for why).
//! - **Actions** ([`action`]): block, redact (`[REDACTED:<kind>]`), replace, mask (keep the last
//!   N characters), hash (HMAC-SHA256 under the gateway key, via `ring`), warn, allow; chosen by
//!   [`Rule`]s scoped per detector, direction, server and tool.
//! - **JSON-aware scanning** ([`Scanner`]): strings are rewritten in place and stay strings,
//!   numbers stay numbers, depth is bounded (deeper content is blocked), binary content (`image`,
//!   `audio`, `blob`) and `_meta` are skipped.
//! - **The layer** ([`DlpLayer`] / [`Dlp`]): request params on the way in, the result on the way
//!   out, and the reverse path (progress and log notifications, sampling and elicitation requests
//!   and their answers) by wrapping `ctx.downstream`. Findings (kinds and counts, never data) go to
//!   `ctx.annotations` as `Annotation::Dlp`; a block answers `codes::DLP_BLOCKED` with
//!   `data.rule`.
//! - **External engines** ([`external`]): a trait and an HTTP webhook engine with timeouts and
//!   fail-open / fail-closed.
//! - **Prompt-injection heuristics** ([`injection`]) on content from upstreams, as a score.
//! - **[`Redactor`]**: the same engine as a plain API for audit and logs.
//! - **Config** ([`Config`], the `[dlp]` TOML section) and **CLI** ([`cli`], `dlp scan`).
//!
//! ```
//! use mcp_dlp::{Action, DlpLayer, Rule};
//! use mcp_gateway_core::{BoxError, McpRequest, Method, codes};
//! use serde_json::json;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let dlp = DlpLayer::new().rule(Rule::new("no-cloud-keys", Action::Block).detectors(["aws_access_key"]));
//! // an upstream that echoes its arguments
//! let svc = ServiceBuilder::new().layer(dlp).service(service_fn(|req: McpRequest| async move {
//!     let args = req.arguments().cloned().unwrap_or_default();
//!     Ok::<_, BoxError>(req.reply(json!({"content": [{"type": "text", "text": args["text"]}]})))
//! }));
//!
//! let call = |text: &str| McpRequest::new(
//!     Some(mcp_gateway_core::RequestId::Number(1)),
//!     Method::ToolsCall,
//!     json!({"name": "echo", "arguments": {"text": text}}).as_object().cloned().unwrap_or_default(),
//! );
//! let res = svc.clone().oneshot(call("mail bob@example.com")).await?;
//! assert_eq!(res.body.unwrap()["content"][0]["text"], "mail [REDACTED:email]");
//!
//! let res = svc.oneshot(call("key AKIAIOSFODNN7EXAMPLE")).await?;
//! let err = res.body.unwrap_err();
//! assert_eq!(err.code.0, codes::DLP_BLOCKED);
//! assert_eq!(err.data.unwrap()["rule"], "no-cloud-keys");
//! # Ok(())
//! # }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | everything is always built |

pub mod action;
pub mod cli;
pub mod config;
pub mod detector;
pub mod external;
pub mod injection;
mod layer;
mod prefilter;
mod redactor;
pub mod scan;
mod validate;

pub use action::{Action, HashKey, Rule, Scope};
pub use config::{Config, ConfigError};
pub use detector::{Detector, Detectors, DetectorsBuilder, Validator};
pub use external::{EngineRule, ExternalEngine, FailMode, Inspection, Verdict, WebhookEngine};
pub use layer::{Dlp, DlpLayer, DlpReport, ResponseFuture};
pub use redactor::Redactor;
pub use scan::{Report, Scanner};
