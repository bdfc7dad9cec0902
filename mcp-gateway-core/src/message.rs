//! The MCP-level message model: what every layer of the gateway sees.
//!
//! A client message (request or notification) becomes an [`McpRequest`]: the JSON-RPC method and
//! params exactly as the client sent them (raw JSON, so nothing the client said is lost on the way
//! to an upstream), plus a [`RequestContext`] that layers read and annotate. The answer is an
//! [`McpResponse`]: a JSON-RPC result or error. Every layer is a
//! `tower::Service<McpRequest, Response = McpResponse, Error = BoxError>`.
//!
//! A refusal (policy denial, DLP block, unknown tool) is an `McpResponse` carrying a JSON-RPC error
//! with one of the stable [`codes`]; a [`BoxError`] means the gateway itself failed.

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Map, Value};

pub use rmcp::model::{ErrorData, RequestId};

use crate::{downstream::Downstream, identity::Identity, trace::TraceContext};

/// The error type of every MCP-level service: a failure of the gateway itself, never a refusal.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A JSON object, as used for params and results.
pub type JsonObject = Map<String, Value>;

/// Stable JSON-RPC error codes the gateway answers with.
///
/// The JSON-RPC 2.0 codes keep their standard meaning; the gateway's own refusals use the
/// implementation-defined server-error range so a client can tell them apart.
pub mod codes {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i32 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Invalid method parameters, including an unknown tool, prompt or resource.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// MCP: the resource does not exist.
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// The upstream that serves this feature is unavailable (down, crashed or restarting).
    pub const UPSTREAM_UNAVAILABLE: i32 = -32010;
    /// The upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: i32 = -32011;
    /// The upstream answered with something that is not valid MCP.
    pub const UPSTREAM_PROTOCOL: i32 = -32012;
    /// Policy refused the call (used only where a refusal must be visible; hidden features answer
    /// exactly like missing ones). (-32020 is the 2026-07-28 header-mismatch error.)
    pub const POLICY_DENIED: i32 = -32023;
    /// A rate limit was exceeded; `data.retryAfterMs` says when to try again.
    pub const RATE_LIMITED: i32 = -32021;
    /// A kill switch is active for this caller, server, tool or the whole gateway.
    pub const KILL_SWITCH: i32 = -32022;
    /// DLP blocked the message; `data.rule` names the rule, never the data.
    pub const DLP_BLOCKED: i32 = -32030;
    /// The upstream requires the user to authorize; `data.authorizationUrl` says where.
    pub const UPSTREAM_AUTH_REQUIRED: i32 = -32040;
    /// The caller is not authenticated or not allowed at the MCP level.
    pub const UNAUTHORIZED: i32 = -32041;
}

/// The answers for features that do not exist. Layers that hide a feature (policy) use the same
/// functions, so a hidden feature is indistinguishable from a missing one.
pub mod not_found {
    use super::{ErrorData, codes, error};

    /// `tools/call` of an unknown tool.
    pub fn tool(name: &str) -> ErrorData {
        error(codes::INVALID_PARAMS, format!("Unknown tool: {name}"), None)
    }

    /// `prompts/get` of an unknown prompt.
    pub fn prompt(name: &str) -> ErrorData {
        error(
            codes::INVALID_PARAMS,
            format!("Unknown prompt: {name}"),
            None,
        )
    }

    /// `resources/read` (or subscribe) of an unknown resource.
    pub fn resource(uri: &str) -> ErrorData {
        error(
            codes::RESOURCE_NOT_FOUND,
            format!("Resource not found: {uri}"),
            Some(serde_json::json!({ "uri": uri })),
        )
    }

    /// An unknown method.
    pub fn method(method: &str) -> ErrorData {
        error(
            codes::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
            None,
        )
    }
}

// === Method ===

/// The JSON-RPC method of a client message, parsed once so layers match on an enum.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `initialize`
    Initialize,
    /// `notifications/initialized`
    Initialized,
    /// `ping`
    Ping,
    /// `server/discover` (2026-07-28)
    Discover,
    /// `tools/list`
    ToolsList,
    /// `tools/call`
    ToolsCall,
    /// `prompts/list`
    PromptsList,
    /// `prompts/get`
    PromptsGet,
    /// `resources/list`
    ResourcesList,
    /// `resources/templates/list`
    ResourceTemplatesList,
    /// `resources/read`
    ResourcesRead,
    /// `resources/subscribe`
    ResourcesSubscribe,
    /// `resources/unsubscribe`
    ResourcesUnsubscribe,
    /// `subscriptions/listen` (2026-07-28)
    SubscriptionsListen,
    /// `completion/complete`
    Complete,
    /// `logging/setLevel`
    SetLevel,
    /// `notifications/cancelled`
    Cancelled,
    /// `notifications/progress`
    Progress,
    /// `notifications/roots/list_changed`
    RootsListChanged,
    /// Any other method, kept verbatim.
    Other(Box<str>),
}

impl Method {
    /// Parses a method name.
    pub fn parse(method: &str) -> Self {
        match method {
            "initialize" => Self::Initialize,
            "notifications/initialized" => Self::Initialized,
            "ping" => Self::Ping,
            "server/discover" => Self::Discover,
            "tools/list" => Self::ToolsList,
            "tools/call" => Self::ToolsCall,
            "prompts/list" => Self::PromptsList,
            "prompts/get" => Self::PromptsGet,
            "resources/list" => Self::ResourcesList,
            "resources/templates/list" => Self::ResourceTemplatesList,
            "resources/read" => Self::ResourcesRead,
            "resources/subscribe" => Self::ResourcesSubscribe,
            "resources/unsubscribe" => Self::ResourcesUnsubscribe,
            "subscriptions/listen" => Self::SubscriptionsListen,
            "completion/complete" => Self::Complete,
            "logging/setLevel" => Self::SetLevel,
            "notifications/cancelled" => Self::Cancelled,
            "notifications/progress" => Self::Progress,
            "notifications/roots/list_changed" => Self::RootsListChanged,
            other => Self::Other(other.into()),
        }
    }

    /// The method name as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Initialize => "initialize",
            Self::Initialized => "notifications/initialized",
            Self::Ping => "ping",
            Self::Discover => "server/discover",
            Self::ToolsList => "tools/list",
            Self::ToolsCall => "tools/call",
            Self::PromptsList => "prompts/list",
            Self::PromptsGet => "prompts/get",
            Self::ResourcesList => "resources/list",
            Self::ResourceTemplatesList => "resources/templates/list",
            Self::ResourcesRead => "resources/read",
            Self::ResourcesSubscribe => "resources/subscribe",
            Self::ResourcesUnsubscribe => "resources/unsubscribe",
            Self::SubscriptionsListen => "subscriptions/listen",
            Self::Complete => "completion/complete",
            Self::SetLevel => "logging/setLevel",
            Self::Cancelled => "notifications/cancelled",
            Self::Progress => "notifications/progress",
            Self::RootsListChanged => "notifications/roots/list_changed",
            Self::Other(m) => m,
        }
    }

    /// Whether this is a list method whose answer merges all upstreams.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            Self::ToolsList | Self::PromptsList | Self::ResourcesList | Self::ResourceTemplatesList
        )
    }

    /// The kind of feature a method addresses by name or URI, if any.
    pub fn feature(&self) -> Option<FeatureKind> {
        match self {
            Self::ToolsList | Self::ToolsCall => Some(FeatureKind::Tool),
            Self::PromptsList | Self::PromptsGet => Some(FeatureKind::Prompt),
            Self::ResourcesList
            | Self::ResourcesRead
            | Self::ResourcesSubscribe
            | Self::ResourcesUnsubscribe => Some(FeatureKind::Resource),
            Self::ResourceTemplatesList => Some(FeatureKind::ResourceTemplate),
            _ => None,
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of server feature that are listed, provisioned and routed by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeatureKind {
    /// A tool (`tools/*`).
    Tool,
    /// A prompt (`prompts/*`).
    Prompt,
    /// A resource (`resources/*`).
    Resource,
    /// A resource template (`resources/templates/list`).
    ResourceTemplate,
}

impl FeatureKind {
    /// Lower-case name: `tool`, `prompt`, `resource`, `resource_template`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::Resource => "resource",
            Self::ResourceTemplate => "resource_template",
        }
    }
}

// === McpRequest ===

/// A client message travelling through the gateway's layers.
#[derive(Debug)]
pub struct McpRequest {
    /// The JSON-RPC id; `None` for a notification.
    pub id: Option<RequestId>,
    /// The method.
    pub method: Method,
    /// The params exactly as sent (including `_meta`); empty when the client sent none.
    pub params: JsonObject,
    /// What the gateway knows about this message; layers read and annotate it.
    pub ctx: RequestContext,
}

impl McpRequest {
    /// A request with a fresh context.
    pub fn new(id: impl Into<Option<RequestId>>, method: Method, params: JsonObject) -> Self {
        Self {
            id: id.into(),
            method,
            params,
            ctx: RequestContext::default(),
        }
    }

    /// Whether this is a notification (no id, no answer expected).
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// The `name` param (`tools/call`, `prompts/get`), if present and a string.
    pub fn name(&self) -> Option<&str> {
        self.params.get("name").and_then(Value::as_str)
    }

    /// The `uri` param (`resources/read`, `resources/subscribe`), if present and a string.
    pub fn uri(&self) -> Option<&str> {
        self.params.get("uri").and_then(Value::as_str)
    }

    /// The tool-call `arguments`, if present and an object.
    pub fn arguments(&self) -> Option<&JsonObject> {
        self.params.get("arguments").and_then(Value::as_object)
    }

    /// The `_meta` object of the params, if any.
    pub fn meta(&self) -> Option<&JsonObject> {
        self.params.get("_meta").and_then(Value::as_object)
    }

    /// The progress token the client asked for, if any.
    pub fn progress_token(&self) -> Option<&Value> {
        self.meta().and_then(|m| m.get("progressToken"))
    }

    /// An error response to this request.
    pub fn error(&self, error: ErrorData) -> McpResponse {
        McpResponse::error(self.id.clone(), error)
    }

    /// A successful response to this request.
    pub fn reply(&self, result: Value) -> McpResponse {
        McpResponse::result(self.id.clone(), result)
    }
}

// === McpResponse ===

/// The answer to an [`McpRequest`].
#[derive(Debug, Clone)]
pub struct McpResponse {
    /// The id of the request this answers (`None` for a notification's acknowledgement).
    pub id: Option<RequestId>,
    /// The JSON-RPC result or error.
    pub body: Result<Value, ErrorData>,
    /// Typed data inner layers hand back outward (e.g. [`ListOrigins`] for merged lists).
    pub extensions: http::Extensions,
}

impl McpResponse {
    /// A successful result.
    pub fn result(id: Option<RequestId>, result: Value) -> Self {
        Self {
            id,
            body: Ok(result),
            extensions: http::Extensions::new(),
        }
    }

    /// A JSON-RPC error.
    pub fn error(id: Option<RequestId>, error: ErrorData) -> Self {
        Self {
            id,
            body: Err(error),
            extensions: http::Extensions::new(),
        }
    }

    /// The acknowledgement of a notification (nothing is sent to the client).
    pub fn accepted() -> Self {
        Self {
            id: None,
            body: Ok(Value::Null),
            extensions: http::Extensions::new(),
        }
    }

    /// Whether the body is an error.
    pub fn is_error(&self) -> bool {
        self.body.is_err()
    }

    /// The JSON-RPC envelope for the wire: `{"jsonrpc":"2.0","id":..,"result"|"error":..}`.
    pub fn to_jsonrpc(&self) -> Value {
        let mut envelope = JsonObject::with_capacity(3);
        envelope.insert("jsonrpc".into(), Value::String("2.0".into()));
        envelope.insert(
            "id".into(),
            match &self.id {
                Some(id) => serde_json::to_value(id).unwrap_or(Value::Null),
                None => Value::Null,
            },
        );
        match &self.body {
            Ok(result) => envelope.insert("result".into(), result.clone()),
            Err(error) => envelope.insert(
                "error".into(),
                serde_json::to_value(error).unwrap_or(Value::Null),
            ),
        };
        Value::Object(envelope)
    }
}

/// Builds an [`ErrorData`] with a code, a message and optional structured data.
pub fn error(code: i32, message: impl Into<String>, data: Option<Value>) -> ErrorData {
    ErrorData::new(rmcp::model::ErrorCode(code), message.into(), data)
}

// === RequestContext ===

/// What the gateway knows about a message: who sent it, over which session, where it goes, and
/// what the layers decided about it.
#[derive(Clone)]
pub struct RequestContext {
    /// The verified caller, set by the identity layer (or the HTTP adapter from request
    /// extensions). `None` when nobody authenticated.
    pub identity: Option<Arc<Identity>>,
    /// The client's session and what it negotiated.
    pub session: Arc<SessionInfo>,
    /// Where the message goes, set by the routing layer.
    pub target: Option<Target>,
    /// The trace this message belongs to.
    pub trace: TraceContext,
    /// How the message reached the gateway over HTTP.
    pub origin: Arc<Origin>,
    /// The way back to the client: notifications, progress and server-to-client requests caused
    /// by this message. Layers may wrap it to see or rewrite the reverse path.
    pub downstream: Option<Arc<dyn Downstream>>,
    /// Decisions and findings recorded by layers (policy, DLP, routing), read by audit.
    pub annotations: Annotations,
    /// When the gateway received the message.
    pub received_at: Instant,
    /// Typed extensions for layers that need to pass their own data inward.
    pub extensions: http::Extensions,
}

impl Default for RequestContext {
    fn default() -> Self {
        Self {
            identity: None,
            session: Arc::default(),
            target: None,
            trace: TraceContext::new_root(),
            origin: Arc::default(),
            downstream: None,
            annotations: Annotations::default(),
            received_at: Instant::now(),
            extensions: http::Extensions::new(),
        }
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("identity", &self.identity.as_ref().map(|i| &i.subject))
            .field("session", &self.session.id)
            .field("target", &self.target)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

/// The client's session, or for stateless (2026-07-28) requests, what the request's `_meta` said.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// The session id the client presents (`Mcp-Session-Id`); `None` for stateless requests.
    pub id: Option<Arc<str>>,
    /// The negotiated protocol version (e.g. `2025-11-25`).
    pub protocol_version: Option<Arc<str>>,
    /// The client's `clientInfo` (name, version, ...), as sent.
    pub client_info: Option<Arc<Value>>,
    /// The client's capabilities, as sent.
    pub client_capabilities: Option<Arc<Value>>,
}

impl SessionInfo {
    /// The client's name from `clientInfo`, if it sent one.
    pub fn client_name(&self) -> Option<&str> {
        self.client_info.as_deref()?.get("name")?.as_str()
    }

    /// The client's version from `clientInfo`, if it sent one.
    pub fn client_version(&self) -> Option<&str> {
        self.client_info.as_deref()?.get("version")?.as_str()
    }

    /// Whether the client declared a capability (`sampling`, `elicitation`, `roots`, ...).
    pub fn has_capability(&self, name: &str) -> bool {
        self.client_capabilities
            .as_deref()
            .and_then(|c| c.get(name))
            .is_some_and(|v| !v.is_null())
    }
}

/// How a message reached the gateway.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The peer's socket address.
    pub remote_addr: Option<SocketAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// The gateway instance that received it (for multi-replica audit).
    pub gateway: Option<Arc<str>>,
}

/// Where a routed message goes: an upstream server and the feature's name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The upstream server's configured name.
    pub server: Arc<str>,
    /// The feature's name (or URI) as the upstream knows it, after un-namespacing.
    pub name: Option<String>,
    /// The name (or URI) the client used.
    pub exposed_name: Option<String>,
    /// The managed instance chosen for this caller, when the managed layer picked one.
    pub instance: Option<Arc<str>>,
}

impl Target {
    /// A target on a server with no feature name (e.g. `completion/complete`).
    pub fn server(server: impl Into<Arc<str>>) -> Self {
        Self {
            server: server.into(),
            name: None,
            exposed_name: None,
            instance: None,
        }
    }
}

/// Put on the response of a merged list (`tools/list`, ...) by dispatch: for each entry of the
/// list, in order, which server it came from and its name there. Policy uses it to filter lists.
#[derive(Debug, Clone, Default)]
pub struct ListOrigins(pub Arc<Vec<Target>>);

/// Which entries of a merged list one caller may see: given the list's kind and the origins
/// of all its entries, one `bool` per entry.
pub type ListFilterFn = dyn Fn(FeatureKind, &[Target]) -> Vec<bool> + Send + Sync;

/// Put in a `*/list` request's `ctx.extensions` by a layer that hides entries (the policy):
/// dispatch asks it which entries of the merged list this caller may see, copies only those and
/// fills each page with visible entries. It only saves copying entries nobody will see: the layer
/// must still filter the answer it gets back (another inner service may ignore this).
#[derive(Clone)]
pub struct ListFilter(pub Arc<ListFilterFn>);

impl std::fmt::Debug for ListFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListFilter")
    }
}

/// Put on a response's extensions by a layer that refuses a request for now (a rate limit): how
/// long the client should wait. The HTTP adapter sends it as `Retry-After` (whole seconds,
/// rounded up) when the answer is a plain JSON response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

// === Annotations ===

/// Decisions and findings that layers record on a message, shared by every clone of the context
/// so the audit layer sees what inner layers decided.
#[derive(Clone, Default)]
pub struct Annotations(Arc<Mutex<Vec<Annotation>>>);

impl Annotations {
    /// Records an annotation.
    pub fn push(&self, annotation: Annotation) {
        if let Ok(mut list) = self.0.lock() {
            list.push(annotation);
        }
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Vec<Annotation> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl fmt::Debug for Annotations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client towards an upstream.
    Request,
    /// From an upstream back to the client (results, notifications, server-to-client requests).
    Response,
}

/// One decision or finding about a message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Annotation {
    /// A policy decision.
    Policy {
        /// The rule or check that decided (e.g. `scope:team-a`, `kill_switch:tool`).
        rule: String,
        /// `allow`, `deny`, `warn`, `hide`, `rate_limited`, ...
        effect: &'static str,
        /// Why, for humans; never secret data.
        reason: String,
    },
    /// A DLP finding: kinds and counts, never the data.
    Dlp {
        /// The detector (e.g. `email`, `aws_access_key`).
        detector: String,
        /// Which way the content travelled.
        direction: Direction,
        /// How many matches.
        count: u32,
        /// What was done: `block`, `redact`, `replace`, `mask`, `hash`, `warn`.
        action: &'static str,
    },
    /// The upstream leg of the call.
    Upstream {
        /// The server.
        server: Arc<str>,
        /// The instance, for managed servers.
        instance: Option<Arc<str>>,
        /// Time spent waiting for the upstream.
        latency: Duration,
    },
    /// Anything else a layer wants audit to record.
    Other {
        /// A short key.
        key: &'static str,
        /// The value.
        value: Value,
    },
}

/// Milliseconds since the Unix epoch, for timestamps.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_round_trips() {
        for m in [
            "initialize",
            "tools/call",
            "resources/templates/list",
            "notifications/cancelled",
            "x/custom",
        ] {
            assert_eq!(Method::parse(m).as_str(), m);
        }
        assert_eq!(Method::parse("x/custom"), Method::Other("x/custom".into()));
    }

    #[test]
    fn response_envelope() {
        let ok = McpResponse::result(Some(RequestId::Number(7)), serde_json::json!({"a": 1}));
        assert_eq!(
            ok.to_jsonrpc(),
            serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": {"a": 1}})
        );
        let err = McpResponse::error(
            Some(RequestId::String("x".into())),
            error(codes::METHOD_NOT_FOUND, "nope", None),
        );
        let v = err.to_jsonrpc();
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["id"], "x");
    }
}
