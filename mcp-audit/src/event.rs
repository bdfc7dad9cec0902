//! The audit event: one record per MCP message, in both directions.

use std::sync::Arc;

use mcp_gateway_core::{
    Annotation, Direction, McpRequest, RequestContext,
    identity::{AuthMethod, PrincipalKind},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which leg of a call a message travels on. One trace id joins all four; each has a span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// A client message arriving at the gateway.
    ClientToGateway,
    /// The gateway forwarding a message to an upstream.
    GatewayToUpstream,
    /// An upstream's answer (or reverse-path message) arriving at the gateway.
    UpstreamToGateway,
    /// The gateway's answer (or a relayed reverse-path message) going to the client.
    GatewayToClient,
}

impl Leg {
    /// `client_to_gateway`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientToGateway => "client_to_gateway",
            Self::GatewayToUpstream => "gateway_to_upstream",
            Self::UpstreamToGateway => "upstream_to_gateway",
            Self::GatewayToClient => "gateway_to_client",
        }
    }
}

/// What kind of JSON-RPC message the event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A request (has an id, expects an answer).
    Request,
    /// A notification (no id).
    Notification,
    /// An answer: a result or an error.
    Response,
}

/// The span ids of the four legs of one call (16 hex digits each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegSpans {
    /// The caller's span from its `traceparent`, if it sent one (the remote parent).
    #[serde(default)]
    pub caller: Option<String>,
    /// Client to gateway: the gateway's server span for the message.
    pub client_to_gateway: String,
    /// Gateway to upstream: the span propagated in `traceparent` to the upstream.
    pub gateway_to_upstream: String,
    /// Upstream to gateway: the upstream's answer.
    pub upstream_to_gateway: String,
    /// Gateway to client: the answer the client sees.
    pub gateway_to_client: String,
}

/// Who called, as far as audit records it (no secrets: token ids, never tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditIdentity {
    /// The stable subject.
    pub subject: String,
    /// Teams or groups.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `human` or `agent`.
    pub kind: PrincipalKind,
    /// How they authenticated.
    pub auth_method: AuthMethod,
    /// The token's `jti` or the API key id.
    #[serde(default)]
    pub token_id: Option<String>,
    /// The issuer that vouched for them.
    #[serde(default)]
    pub issuer: Option<String>,
}

impl AuditIdentity {
    /// From the core identity.
    pub fn from_identity(identity: &mcp_gateway_core::Identity) -> Self {
        Self {
            subject: identity.subject.to_string(),
            teams: identity.teams.clone(),
            roles: identity.roles.clone(),
            kind: identity.kind,
            auth_method: identity.auth_method.clone(),
            token_id: identity.token_id.clone(),
            issuer: identity.issuer.clone(),
        }
    }
}

/// A policy decision recorded on the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// The rule or check.
    pub rule: String,
    /// `allow`, `deny`, `hide`, ...
    pub effect: String,
    /// Why.
    pub reason: String,
}

/// A DLP finding: kinds and counts, never the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlpFinding {
    /// The detector.
    pub detector: String,
    /// Which way the content travelled.
    pub direction: Direction,
    /// How many matches.
    pub count: u32,
    /// What was done.
    pub action: String,
}

/// Any other annotation a layer recorded (`key`, `value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherAnnotation {
    /// A short key.
    pub key: String,
    /// The value.
    pub value: Value,
}

/// One audit record: what happened to one MCP message.
///
/// Serialized as one JSON object per line (see [`crate::chain`]); field order is stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC timestamp with milliseconds.
    pub timestamp: String,
    /// Milliseconds since the Unix epoch (same instant as `timestamp`).
    pub ts_ms: u64,
    /// A unique id (32 hex digits).
    pub event_id: String,
    /// The gateway instance that saw the message.
    pub gateway: Option<String>,
    /// The client's session id (`None` for stateless requests).
    pub session_id: Option<String>,
    /// The JSON-RPC id (`None` for notifications).
    pub request_id: Option<Value>,
    /// Which way the message travels.
    pub direction: Direction,
    /// Request, notification or response.
    pub kind: MessageKind,
    /// The leg this record describes.
    pub leg: Leg,
    /// The trace id joining all legs (32 hex digits).
    pub trace_id: String,
    /// The span id of this record's leg.
    pub span_id: String,
    /// The span the client's `traceparent` named, if any.
    pub parent_span_id: Option<String>,
    /// The span ids of all four legs.
    pub spans: LegSpans,
    /// The verified caller, if any.
    pub identity: Option<AuditIdentity>,
    /// The client's name from `clientInfo`.
    pub client_name: Option<String>,
    /// The client's version from `clientInfo`.
    pub client_version: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The peer's socket address.
    pub remote_addr: Option<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// The upstream server.
    pub server: Option<String>,
    /// The managed instance that served the call.
    pub instance: Option<String>,
    /// The JSON-RPC method.
    pub method: String,
    /// `tool`, `prompt`, `resource`, `resource_template`.
    pub feature_kind: Option<String>,
    /// The feature's name or URI as the client used it.
    pub feature: Option<String>,
    /// The arguments, scrubbed by the configured [`crate::Scrubber`].
    pub arguments: Option<Value>,
    /// `ok` or `error` (answers only). A tool result with `isError: true` is an `error` without an
    /// `error_code` (its first text content, scrubbed, is the `error_message`).
    pub status: Option<String>,
    /// The JSON-RPC error code, when the answer is a JSON-RPC error.
    pub error_code: Option<i32>,
    /// The JSON-RPC error message (scrubbed).
    pub error_message: Option<String>,
    /// Policy decisions recorded by the policy layer.
    #[serde(default)]
    pub policy: Vec<PolicyDecision>,
    /// DLP findings (kinds and counts only).
    #[serde(default)]
    pub dlp: Vec<DlpFinding>,
    /// Other annotations (e.g. `rug_pull`, `kill_switch`, `oauth_failure`).
    #[serde(default)]
    pub annotations: Vec<OtherAnnotation>,
    /// Time spent waiting for the upstream, in milliseconds.
    pub upstream_latency_ms: Option<f64>,
    /// Time from receipt to answer, in milliseconds.
    pub total_latency_ms: Option<f64>,
    /// Size of the client's message (JSON bytes).
    pub bytes_in: Option<u64>,
    /// Size of the answer (JSON bytes).
    pub bytes_out: Option<u64>,
    /// Tokens in the client's message (BPE tokenizer, see [`crate::tokens`]).
    pub tokens_in: Option<u64>,
    /// Tokens in the answer.
    pub tokens_out: Option<u64>,
    /// The negotiated protocol version.
    pub protocol_version: Option<String>,
}

impl AuditEvent {
    /// An event for `method` with fresh id and timestamp and everything else empty.
    pub fn new(
        method: impl Into<String>,
        direction: Direction,
        kind: MessageKind,
        leg: Leg,
    ) -> Self {
        let now = std::time::SystemTime::now();
        let ts_ms = mcp_gateway_core::message::unix_millis(now);
        Self {
            timestamp: crate::time::format_rfc3339_millis(ts_ms),
            ts_ms,
            event_id: random_hex16(),
            gateway: None,
            session_id: None,
            request_id: None,
            direction,
            kind,
            leg,
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: None,
            spans: LegSpans::default(),
            identity: None,
            client_name: None,
            client_version: None,
            user_agent: None,
            remote_addr: None,
            origin: None,
            server: None,
            instance: None,
            method: method.into(),
            feature_kind: None,
            feature: None,
            arguments: None,
            status: None,
            error_code: None,
            error_message: None,
            policy: Vec::new(),
            dlp: Vec::new(),
            annotations: Vec::new(),
            upstream_latency_ms: None,
            total_latency_ms: None,
            bytes_in: None,
            bytes_out: None,
            tokens_in: None,
            tokens_out: None,
            protocol_version: None,
        }
    }

    /// Fills what the context says about the caller, session, origin and target.
    pub fn fill_context(&mut self, ctx: &RequestContext, gateway: Option<&Arc<str>>) {
        self.gateway = ctx
            .origin
            .gateway
            .as_deref()
            .or(gateway.map(|g| &**g))
            .map(str::to_owned);
        self.session_id = ctx.session.id.as_deref().map(str::to_owned);
        self.identity = ctx.identity.as_deref().map(AuditIdentity::from_identity);
        self.client_name = ctx.session.client_name().map(str::to_owned);
        self.client_version = ctx.session.client_version().map(str::to_owned);
        self.protocol_version = ctx.session.protocol_version.as_deref().map(str::to_owned);
        self.user_agent = ctx.origin.user_agent.clone();
        self.remote_addr = ctx.origin.remote_addr.map(|a| a.to_string());
        self.origin = ctx.origin.origin.clone();
        if let Some(target) = &ctx.target {
            self.server = Some(target.server.to_string());
            self.instance = target.instance.as_deref().map(str::to_owned);
        }
    }

    /// Fills method-specific fields from the request (feature name; arguments are set separately).
    pub fn fill_request(&mut self, req: &McpRequest) {
        self.request_id = req.id.as_ref().and_then(|id| serde_json::to_value(id).ok());
        self.feature_kind = req.method.feature().map(|f| f.as_str().to_owned());
        self.feature = req.name().or(req.uri()).map(str::to_owned);
    }

    /// Copies policy decisions, DLP findings and upstream timing out of the annotations.
    pub fn fill_annotations(&mut self, annotations: &[Annotation]) {
        for a in annotations {
            match a {
                Annotation::Policy {
                    rule,
                    effect,
                    reason,
                } => self.policy.push(PolicyDecision {
                    rule: rule.clone(),
                    effect: (*effect).to_owned(),
                    reason: reason.clone(),
                }),
                Annotation::Dlp {
                    detector,
                    direction,
                    count,
                    action,
                } => self.dlp.push(DlpFinding {
                    detector: detector.clone(),
                    direction: *direction,
                    count: *count,
                    action: (*action).to_owned(),
                }),
                Annotation::Upstream {
                    server,
                    instance,
                    latency,
                } => {
                    let ms = latency.as_secs_f64() * 1000.0;
                    self.upstream_latency_ms = Some(self.upstream_latency_ms.unwrap_or(0.0) + ms);
                    if self.server.is_none() {
                        self.server = Some(server.to_string());
                    }
                    if self.instance.is_none() {
                        self.instance = instance.as_deref().map(str::to_owned);
                    }
                }
                Annotation::Other { key, value } => self.annotations.push(OtherAnnotation {
                    key: (*key).to_owned(),
                    value: value.clone(),
                }),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }

    /// Whether the answer was an error.
    pub fn is_error(&self) -> bool {
        self.status.as_deref() == Some("error")
    }

    /// The identity's subject, or `anonymous`.
    pub fn subject(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("anonymous", |i| i.subject.as_str())
    }
}

/// 32 random hex digits from the core's fast id generator (ids, not secrets).
pub(crate) fn random_hex16() -> String {
    mcp_gateway_core::TraceContext::new_root().trace_id_hex()
}
