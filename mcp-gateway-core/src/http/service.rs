//! [`StreamableHttp`]: HTTP in, [`McpRequest`] to the inner service, JSON or SSE out.

// Refusals are complete HTTP responses returned early through `Result`; they are cold paths.
#![allow(clippy::result_large_err)]

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

use super::{
    body::{self, BoxBody, SseBody},
    checks,
    config::HttpConfig,
    state::{First, LiveSession, Store, Stream, StreamKind, id_key, parse_event_id},
};
use crate::{
    downstream::{Downstream, ServerMessage},
    events::GatewayEvent,
    identity::Identity,
    message::{
        BoxError, ErrorData, JsonObject, McpRequest, McpResponse, Method, Origin, RequestContext,
        RequestId, RetryAfter, SessionInfo, codes, error,
    },
    session::{SessionClaims, SessionKey, UpstreamSessions, identity_binding, unix_secs},
    trace::TraceContext,
};

/// `Mcp-Session-Id`.
pub const HEADER_SESSION_ID: &str = "mcp-session-id";
/// `MCP-Protocol-Version`.
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// `Mcp-Method` (2026-07-28).
pub const HEADER_MCP_METHOD: &str = "mcp-method";
/// `Mcp-Name` (2026-07-28).
pub const HEADER_MCP_NAME: &str = "mcp-name";
/// `Last-Event-ID`.
pub const HEADER_LAST_EVENT_ID: &str = "last-event-id";

/// The stateless protocol revision.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// Every protocol revision the adapter accepts in `MCP-Protocol-Version`.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// The `_meta` key of the per-request protocol version (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of the per-request client info (2026-07-28).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// The `_meta` key of the per-request client capabilities (2026-07-28).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key naming the `subscriptions/listen` request a notification belongs to.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// JSON-RPC code for a header that contradicts the body (2026-07-28 `HEADER_MISMATCH`).
pub const HEADER_MISMATCH: i32 = -32020;

// === StreamableHttp ===

/// The downstream Streamable HTTP adapter: a `tower::Service<http::Request<B>>` that turns MCP
/// over HTTP into [`McpRequest`]s for an MCP-level service `S` and its answers back into JSON or
/// SSE responses. See the [module docs](super) for the protocol it speaks.
pub struct StreamableHttp<S> {
    inner: S,
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: HttpConfig,
    key: Arc<SessionKey>,
    store: Store,
    next_stream: AtomicU64,
    next_request: AtomicU64,
    shutdown: tokio_util::sync::CancellationToken,
}

impl<S: Clone> Clone for StreamableHttp<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for StreamableHttp<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamableHttp")
            .field("path", &self.shared.config.path)
            .field("sessions", &self.shared.store.len())
            .finish_non_exhaustive()
    }
}

impl<S> StreamableHttp<S> {
    /// An adapter in front of `inner`. Fails only when no session key was configured and the
    /// system random source cannot make one.
    ///
    /// When called inside a tokio runtime, a background task reaps idle sessions; it ends when
    /// the last clone of the adapter is dropped.
    pub fn new(inner: S, config: HttpConfig) -> Result<Self, BoxError> {
        let key = match &config.session_key {
            Some(key) => key.clone(),
            None => Arc::new(SessionKey::generate()?),
        };
        let shared = Arc::new(Shared {
            store: Store::new(config.deleted_capacity),
            config,
            key,
            next_stream: AtomicU64::new(seed_u64()),
            next_request: AtomicU64::new(1),
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&shared);
            let idle = shared.config.idle_timeout;
            handle.spawn(reaper(weak, idle));
        }
        Ok(Self { inner, shared })
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.shared.config
    }

    /// How many sessions have in-memory state on this process.
    pub fn live_sessions(&self) -> usize {
        self.shared.store.len()
    }

    /// Ends every standing stream (GET streams, `subscriptions/listen` streams, which get their
    /// final result) so a graceful shutdown need not wait for them. Requests keep running.
    pub fn close_streams(&self) {
        self.shared.shutdown.cancel();
        self.shared.store.close_all();
    }
}

async fn reaper(shared: Weak<Shared>, idle: std::time::Duration) {
    let period = (idle / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let n = shared.store.reap(idle);
        if n > 0 {
            tracing::debug!(reaped = n, "idle sessions dropped from memory");
        }
    }
}

fn seed_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    // Keep ids short and positive: 32 random bits shifted up, counter below.
    (u64::from_le_bytes(b) >> 32) << 16
}

impl<S, B> Service<http::Request<B>> for StreamableHttp<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The inner service is driven to readiness per request (`oneshot`), in its own task.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = Handler {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        };
        Box::pin(async move { Ok(handler.handle(req).await) })
    }
}

// === responses ===

type Resp = http::Response<BoxBody>;

fn jsonrpc_error(status: StatusCode, id: Option<&Value>, code: i32, message: &str) -> Resp {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    });
    let mut res = http::Response::new(body::full(serde_json::to_vec(&body).unwrap_or_default()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn status_only(status: StatusCode) -> Resp {
    let mut res = http::Response::new(body::empty());
    *res.status_mut() = status;
    res
}

fn json_response(bytes: Bytes) -> Resp {
    let mut res = http::Response::new(body::full(bytes));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn sse_response(body: SseBody) -> Resp {
    let mut res = http::Response::new(body.boxed());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

fn not_found_session() -> Resp {
    jsonrpc_error(
        StatusCode::NOT_FOUND,
        None,
        codes::INVALID_REQUEST,
        "Session not found: start a new session with initialize",
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// === the parsed message ===

enum Incoming {
    Request {
        id: Value,
        method: String,
        params: JsonObject,
    },
    Notification {
        method: String,
        params: JsonObject,
    },
    Response {
        id: Value,
        answer: Result<Value, ErrorData>,
    },
}

fn parse_message(bytes: &[u8]) -> Result<Incoming, Resp> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        jsonrpc_error(
            StatusCode::BAD_REQUEST,
            None,
            codes::PARSE_ERROR,
            &format!("Parse error: {e}"),
        )
    })?;
    let invalid = |id: Option<&Value>, why: &str| {
        jsonrpc_error(
            StatusCode::BAD_REQUEST,
            id,
            codes::INVALID_REQUEST,
            &format!("Invalid Request: {why}"),
        )
    };
    let mut obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => {
            return Err(invalid(
                None,
                "JSON-RPC batches are not supported; send one message per POST",
            ));
        }
        _ => return Err(invalid(None, "a JSON-RPC message must be an object")),
    };
    let id = obj.remove("id");
    let id_ok = match &id {
        None => true,
        Some(Value::String(_)) => true,
        Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(
            id.as_ref().filter(|_| id_ok),
            "`jsonrpc` must be \"2.0\"",
        ));
    }
    if !id_ok {
        return Err(invalid(None, "`id` must be a string or an integer"));
    }
    if let Some(method) = obj.remove("method") {
        let Value::String(method) = method else {
            return Err(invalid(id.as_ref(), "`method` must be a string"));
        };
        let params = match obj.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => return Err(invalid(id.as_ref(), "`params` must be an object")),
        };
        return Ok(match id {
            Some(id) => Incoming::Request { id, method, params },
            None => Incoming::Notification { method, params },
        });
    }
    let Some(id) = id else {
        return Err(invalid(
            None,
            "neither a request, a notification nor a response",
        ));
    };
    if let Some(result) = obj.remove("result") {
        return Ok(Incoming::Response {
            id,
            answer: Ok(result),
        });
    }
    if let Some(err) = obj.remove("error") {
        let err: ErrorData = serde_json::from_value(err)
            .map_err(|_| invalid(Some(&id), "`error` must be a JSON-RPC error object"))?;
        return Ok(Incoming::Response {
            id,
            answer: Err(err),
        });
    }
    Err(invalid(Some(&id), "a response needs `result` or `error`"))
}

/// [`parse_message`] for the fuzz bodies: what it accepted, or `None`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_parse(bytes: &[u8]) -> Option<crate::fuzz::FuzzParsed> {
    use crate::fuzz::{FuzzMessage, FuzzParsed};
    Some(match parse_message(bytes).ok()? {
        Incoming::Request { id, method, params } => FuzzParsed {
            id: Some(id),
            kind: FuzzMessage::Request { method, params },
        },
        Incoming::Notification { method, params } => FuzzParsed {
            id: None,
            kind: FuzzMessage::Request { method, params },
        },
        Incoming::Response { id, answer } => FuzzParsed {
            id: Some(id),
            kind: FuzzMessage::Response { result: answer },
        },
    })
}

/// `Mcp-Name` values may be wrapped as `=?base64?...?=`.
fn decode_name_header(value: &str) -> Option<String> {
    use base64::Engine;
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(inner) => base64::engine::general_purpose::STANDARD
            .decode(inner)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(value.to_owned()),
    }
}

fn check_standard_headers(
    headers: &HeaderMap,
    id: Option<&Value>,
    method: &str,
    params: &JsonObject,
) -> Result<(), Resp> {
    let mismatch = |why: String| jsonrpc_error(StatusCode::BAD_REQUEST, id, HEADER_MISMATCH, &why);
    let mut methods = headers.get_all(HEADER_MCP_METHOD).iter();
    if let Some(first) = methods.next() {
        if methods.next().is_some() {
            return Err(mismatch("more than one Mcp-Method header".into()));
        }
        if first.as_bytes() != method.as_bytes() {
            return Err(mismatch(format!(
                "Mcp-Method header `{}` does not match body method `{method}`",
                String::from_utf8_lossy(first.as_bytes())
            )));
        }
    }
    if let Some(raw) = headers.get(HEADER_MCP_NAME) {
        let key = match method {
            "tools/call" | "prompts/get" => "name",
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
            "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
            _ => return Ok(()),
        };
        let expected = params.get(key).and_then(Value::as_str);
        let got = raw.to_str().ok().and_then(decode_name_header);
        if got.as_deref() != expected {
            return Err(mismatch(format!(
                "Mcp-Name header does not match body `{key}` of `{method}`"
            )));
        }
    }
    Ok(())
}

// === Handler ===

struct Handler<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// How a POST relates to sessions.
enum Mode {
    Legacy(Arc<LiveSession>),
    Stateless(Arc<SessionInfo>),
}

impl<S> Handler<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn handle<B>(self, req: http::Request<B>) -> Resp
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let config = &self.shared.config;
        if req.uri().path() != config.path {
            return status_only(StatusCode::NOT_FOUND);
        }
        if !checks::host_allowed(req.uri(), req.headers(), &config.allowed_hosts) {
            return jsonrpc_error(
                StatusCode::FORBIDDEN,
                None,
                codes::INVALID_REQUEST,
                "Forbidden: Host header is not allowed (DNS rebinding protection)",
            );
        }
        if !checks::origin_allowed(req.headers(), &config.allowed_origins) {
            return jsonrpc_error(
                StatusCode::FORBIDDEN,
                None,
                codes::INVALID_REQUEST,
                "Forbidden: Origin is not allowed",
            );
        }
        if let Some(v) = req.headers().get(HEADER_PROTOCOL_VERSION) {
            let known = v
                .to_str()
                .ok()
                .is_some_and(|v| SUPPORTED_VERSIONS.contains(&v));
            if !known {
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    codes::INVALID_REQUEST,
                    &format!(
                        "Bad Request: unsupported MCP-Protocol-Version `{}`; supported: {}",
                        String::from_utf8_lossy(v.as_bytes()),
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                );
            }
        }
        match *req.method() {
            HttpMethod::POST => self.post(req).await,
            HttpMethod::GET => self.get(req),
            HttpMethod::DELETE => self.delete(req),
            _ => {
                let mut res = status_only(StatusCode::METHOD_NOT_ALLOWED);
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                res
            }
        }
    }

    /// Finds (or rebuilds from its sealed id) the session a request names. `Ok(None)` when no
    /// id was sent; `Err(404)` for anything that does not open or is not the caller's.
    fn session(&self, parts: &http::request::Parts) -> Result<Option<Arc<LiveSession>>, Resp> {
        let Some(raw) = parts.headers.get(HEADER_SESSION_ID) else {
            return Ok(None);
        };
        let id = raw.to_str().map_err(|_| not_found_session())?;
        let store = &self.shared.store;
        if store.is_deleted(id) {
            return Err(not_found_session());
        }
        let binding = identity_binding(parts.extensions.get::<Arc<Identity>>().map(|i| &**i));
        let now = store.now_ms();
        let max_age = self.shared.config.max_session_age.as_secs();
        let now_secs = unix_secs(SystemTime::now());
        if let Some(live) = store.get(id) {
            if live.binding != binding || now_secs.saturating_sub(live.created_at) > max_age {
                return Err(not_found_session());
            }
            live.touch(now);
            return Ok(Some(live));
        }
        let claims = self.shared.key.open(id).map_err(|_| not_found_session())?;
        if claims.binding != binding {
            return Err(not_found_session());
        }
        if now_secs.saturating_sub(claims.created_at) > max_age {
            return Err(not_found_session());
        }
        Ok(Some(self.install(id.into(), claims)))
    }

    fn install(&self, id: Arc<str>, claims: SessionClaims) -> Arc<LiveSession> {
        let info = Arc::new(SessionInfo {
            id: Some(id.clone()),
            protocol_version: Some(claims.protocol_version.as_str().into()),
            client_info: claims.client_info.map(Arc::new),
            client_capabilities: claims.client_capabilities.map(Arc::new),
        });
        let upstream = (!claims.upstream.0.is_empty()).then_some(claims.upstream);
        let store = &self.shared.store;
        store.insert(Arc::new(LiveSession::new(
            id,
            info,
            claims.binding,
            claims.created_at,
            upstream,
            self.shared.config.replay_buffer,
            store.now_ms(),
        )))
    }

    fn context(
        &self,
        parts: &http::request::Parts,
        session: Arc<SessionInfo>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> RequestContext {
        let headers = &parts.headers;
        let trace = header_str(headers, "traceparent")
            .and_then(TraceContext::from_traceparent)
            .unwrap_or_else(TraceContext::new_root);
        RequestContext {
            identity: parts.extensions.get::<Arc<Identity>>().cloned(),
            session,
            target: None,
            trace,
            origin: Arc::new(Origin {
                remote_addr: parts.extensions.get::<SocketAddr>().copied(),
                user_agent: header_str(headers, "user-agent").map(str::to_owned),
                origin: header_str(headers, "origin").map(str::to_owned),
                gateway: self.shared.config.gateway_name.clone(),
            }),
            downstream,
            annotations: Default::default(),
            received_at: Instant::now(),
            // Everything outer HTTP layers attached (identity, the caller's bearer token for token
            // exchange, ...) and the request headers (instance selection) are visible to the MCP
            // layers.
            extensions: {
                let mut e = parts.extensions.clone();
                e.insert(parts.headers.clone());
                e
            },
        }
    }

    // === POST ===

    async fn post<B>(self, req: http::Request<B>) -> Resp
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        if !checks::accepts(headers, "application/json")
            || !checks::accepts(headers, "text/event-stream")
        {
            return jsonrpc_error(
                StatusCode::NOT_ACCEPTABLE,
                None,
                codes::INVALID_REQUEST,
                "Not Acceptable: the client must accept both application/json and text/event-stream",
            );
        }
        if !checks::content_type_is_json(headers) {
            return jsonrpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                codes::INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
            );
        }
        let max = self.shared.config.max_body_bytes;
        let too_large = || {
            jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                codes::INVALID_REQUEST,
                &format!("Payload Too Large: the body exceeds {max} bytes"),
            )
        };
        if header_str(headers, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > max as u64)
        {
            return too_large();
        }
        let read = tokio::time::timeout(
            self.shared.config.body_read_timeout,
            Limited::new(body, max).collect(),
        );
        let Ok(read) = read.await else {
            // A client trickling its body (slowloris) does not hold a task forever.
            return jsonrpc_error(
                StatusCode::REQUEST_TIMEOUT,
                None,
                codes::INVALID_REQUEST,
                "Request Timeout: the body did not arrive in time",
            );
        };
        let bytes = match read {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return too_large();
                }
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    codes::PARSE_ERROR,
                    "Bad Request: the body could not be read",
                );
            }
        };
        let message = match parse_message(&bytes) {
            Ok(m) => m,
            Err(res) => return res,
        };
        match message {
            Incoming::Request { id, method, params } => {
                if let Err(res) = check_standard_headers(headers, Some(&id), &method, &params) {
                    return res;
                }
                let method = Method::parse(&method);
                if method == Method::Initialize {
                    return self.initialize(parts, id, params).await;
                }
                let mode = match self.mode(&parts, Some(&id), Some(&params)) {
                    Ok(m) => m,
                    Err(res) => return res,
                };
                let Ok(rid) = serde_json::from_value::<RequestId>(id.clone()) else {
                    return jsonrpc_error(
                        StatusCode::BAD_REQUEST,
                        Some(&id),
                        codes::INVALID_REQUEST,
                        "Invalid Request: bad id",
                    );
                };
                if method == Method::SubscriptionsListen {
                    return self.listen(parts, mode, id, rid, params);
                }
                self.request(parts, mode, id, rid, method, params).await
            }
            Incoming::Notification { method, params } => {
                if let Err(res) = check_standard_headers(headers, None, &method, &params) {
                    return res;
                }
                let mode = match self.mode(&parts, None, None) {
                    Ok(m) => m,
                    Err(res) => return res,
                };
                let method = Method::parse(&method);
                let info = match &mode {
                    Mode::Legacy(s) => {
                        if method == Method::Cancelled
                            && let Some(rid) = params.get("requestId")
                        {
                            s.cancel(&id_key(rid));
                        }
                        s.info.clone()
                    }
                    Mode::Stateless(info) => info.clone(),
                };
                let mut ctx = self.context(&parts, info, None);
                if let Mode::Legacy(s) = &mode
                    && let Some(up) = &s.upstream
                {
                    ctx.extensions.insert(up.clone());
                }
                let msg = McpRequest {
                    id: None,
                    method,
                    params,
                    ctx,
                };
                if let Err(e) = self.inner.clone().oneshot(msg).await {
                    tracing::warn!(error = %e, "inner service failed on a notification");
                }
                status_only(StatusCode::ACCEPTED)
            }
            Incoming::Response { id, answer } => {
                match self.mode(&parts, None, None) {
                    Ok(Mode::Legacy(s)) => {
                        if !s.resolve(&id_key(&id), answer) {
                            tracing::debug!(id = %id, "client answered a request nobody waits for");
                        }
                    }
                    Ok(Mode::Stateless(_)) => {
                        tracing::debug!("stateless client sent a response; nothing asked it");
                    }
                    Err(res) => return res,
                }
                status_only(StatusCode::ACCEPTED)
            }
        }
    }

    /// Decides legacy session vs stateless for a non-initialize POST.
    fn mode(
        &self,
        parts: &http::request::Parts,
        id: Option<&Value>,
        params: Option<&JsonObject>,
    ) -> Result<Mode, Resp> {
        let header_version = header_str(&parts.headers, HEADER_PROTOCOL_VERSION);
        if let Some(session) = self.session(parts)? {
            // Any supported legacy version is accepted on a legacy session: real clients (the
            // conformance suite among them) send another legacy version than the one negotiated,
            // and rmcp's and the TypeScript SDK's servers accept that. Mixing in the stateless
            // revision is refused.
            if let Some(v) = header_version
                && v != &*session.protocol_version
                && v == STATELESS_VERSION
            {
                return Err(jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    id,
                    codes::INVALID_REQUEST,
                    &format!(
                        "Bad Request: MCP-Protocol-Version `{v}` does not match the session's negotiated version `{}`",
                        session.protocol_version
                    ),
                ));
            }
            return Ok(Mode::Legacy(session));
        }
        let meta = params
            .and_then(|p| p.get("_meta"))
            .and_then(Value::as_object);
        let meta_version = meta
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(Value::as_str);
        if let (Some(h), Some(m)) = (header_version, meta_version)
            && h != m
        {
            return Err(jsonrpc_error(
                StatusCode::BAD_REQUEST,
                id,
                HEADER_MISMATCH,
                &format!(
                    "MCP-Protocol-Version header ({h}) does not match request _meta protocolVersion ({m})"
                ),
            ));
        }
        let version = meta_version.or(header_version);
        if version != Some(STATELESS_VERSION) {
            return Err(jsonrpc_error(
                StatusCode::BAD_REQUEST,
                id,
                codes::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (initialize first, or use protocol version 2026-07-28 with per-request _meta)",
            ));
        }
        if params.is_some() && meta_version.is_none() {
            return Err(jsonrpc_error(
                StatusCode::BAD_REQUEST,
                id,
                codes::INVALID_PARAMS,
                &format!("Invalid params: request _meta is missing `{META_PROTOCOL_VERSION}`"),
            ));
        }
        let info = SessionInfo {
            id: None,
            protocol_version: Some(STATELESS_VERSION.into()),
            client_info: meta
                .and_then(|m| m.get(META_CLIENT_INFO))
                .cloned()
                .map(Arc::new),
            client_capabilities: meta
                .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
                .cloned()
                .map(Arc::new),
        };
        Ok(Mode::Stateless(Arc::new(info)))
    }

    async fn initialize(self, parts: http::request::Parts, id: Value, params: JsonObject) -> Resp {
        let requested = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let (Some(h), Some(b)) = (
            header_str(&parts.headers, HEADER_PROTOCOL_VERSION),
            requested.as_deref(),
        ) && h != b
        {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                Some(&id),
                codes::INVALID_REQUEST,
                &format!(
                    "Invalid Request: MCP-Protocol-Version header ({h}) does not match initialize params.protocolVersion ({b})"
                ),
            );
        }
        let Ok(rid) = serde_json::from_value::<RequestId>(id.clone()) else {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                Some(&id),
                codes::INVALID_REQUEST,
                "Invalid Request: bad id",
            );
        };
        let client_info = params.get("clientInfo").cloned();
        let client_capabilities = params.get("capabilities").cloned();
        let info = Arc::new(SessionInfo {
            id: None,
            protocol_version: requested.as_deref().map(Into::into),
            client_info: client_info.clone().map(Arc::new),
            client_capabilities: client_capabilities.clone().map(Arc::new),
        });
        // Messages sent while initializing have no stream to go to: dropped.
        let stream_id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let (stream, _first, _rx) = Stream::new(stream_id, None, StreamKind::JsonOnly);
        let downstream: Arc<dyn Downstream> = Arc::new(RequestDownstream {
            stream,
            session: None,
            shared: self.shared.clone(),
        });
        let ctx = self.context(&parts, info, Some(downstream));
        let identity = ctx.identity.clone();
        let msg = McpRequest {
            id: Some(rid.clone()),
            method: Method::Initialize,
            params,
            ctx,
        };
        let mut response = match self.inner.clone().oneshot(msg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "inner service failed on initialize");
                McpResponse::error(
                    Some(rid.clone()),
                    error(
                        codes::INTERNAL_ERROR,
                        "the gateway failed to initialize",
                        None,
                    ),
                )
            }
        };
        response.id = Some(rid);
        let mut session_id = None;
        if let Ok(result) = &response.body {
            let protocol_version = result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(requested)
                .unwrap_or_else(|| "2025-03-26".to_owned());
            let claims = SessionClaims {
                binding: identity_binding(identity.as_deref()),
                protocol_version,
                client_info,
                client_capabilities,
                created_at: unix_secs(SystemTime::now()),
                upstream: response
                    .extensions
                    .get::<UpstreamSessions>()
                    .cloned()
                    .unwrap_or_default(),
            };
            match self.shared.key.seal(&claims) {
                Ok(sealed) => {
                    let sealed: Arc<str> = sealed.into();
                    self.install(sealed.clone(), claims);
                    session_id = Some(sealed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not seal a session id");
                    response.body = Err(error(
                        codes::INTERNAL_ERROR,
                        "the gateway could not create a session",
                        None,
                    ));
                }
            }
        }
        let mut res = json_response(Bytes::from(
            serde_json::to_vec(&response.to_jsonrpc()).unwrap_or_default(),
        ));
        if let Some(sid) = session_id
            && let Ok(v) = HeaderValue::from_str(&sid)
        {
            res.headers_mut().insert(HEADER_SESSION_ID, v);
        }
        res
    }

    async fn request(
        self,
        parts: http::request::Parts,
        mode: Mode,
        id: Value,
        rid: RequestId,
        method: Method,
        params: JsonObject,
    ) -> Resp {
        let (session, info) = match &mode {
            Mode::Legacy(s) => (Some(s.clone()), s.info.clone()),
            Mode::Stateless(info) => (None, info.clone()),
        };
        let stream_id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let (stream, first, rx) = Stream::new(stream_id, session.clone(), StreamKind::Post);
        let downstream: Arc<dyn Downstream> = Arc::new(RequestDownstream {
            stream: stream.clone(),
            session: session.clone(),
            shared: self.shared.clone(),
        });
        let mut ctx = self.context(&parts, info, Some(downstream));
        if let Some(up) = session.as_ref().and_then(|s| s.upstream.as_ref()) {
            ctx.extensions.insert(up.clone());
        }
        let subscription_uri = match method {
            Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                params.get("uri").and_then(Value::as_str).map(str::to_owned)
            }
            _ => None,
        };
        let msg = McpRequest {
            id: Some(rid.clone()),
            method,
            params,
            ctx,
        };
        let key = id_key(&id);
        if let Some(s) = &session {
            s.add_stream(stream.clone());
        }
        let guard = RequestGuard {
            stream: stream.clone(),
            session: session.clone(),
            key: key.clone(),
        };
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let guard = guard;
            let method = msg.method.clone();
            let mut response = match inner.oneshot(msg).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, %method, "inner service failed");
                    McpResponse::error(
                        None,
                        error(codes::INTERNAL_ERROR, format!("gateway error: {e}"), None),
                    )
                }
            };
            response.id = Some(rid);
            if response.body.is_ok()
                && let (Some(s), Some(uri)) = (&guard.session, subscription_uri)
            {
                if method == Method::ResourcesSubscribe {
                    s.subscribe(uri);
                } else {
                    s.unsubscribe(&uri);
                }
            }
            let retry_after = response.extensions.get::<RetryAfter>().map(|r| r.0);
            guard.stream.finish_with(
                serde_json::to_vec(&response.to_jsonrpc()).unwrap_or_default(),
                retry_after,
            );
        });
        if let Some(s) = &session {
            s.add_inflight(key.clone(), task.abort_handle());
            if task.is_finished() {
                s.remove_inflight(&key);
            }
        }
        let keep_alive = self.shared.config.sse_keep_alive;
        let mut first = first;
        let first = match self.shared.config.stream_after {
            Some(after) if session.is_some() => {
                match tokio::time::timeout(after, &mut first).await {
                    Ok(first) => first,
                    // Still working: open a resumable stream now; the answer follows on it.
                    Err(_) if stream.prime(self.shared.config.sse_retry) => Ok(First::Sse),
                    // The answer raced the timer.
                    Err(_) => first.await,
                }
            }
            _ => first.await,
        };
        match first {
            Ok(First::Json(bytes, retry_after)) => {
                let mut res = json_response(bytes);
                if let Some(wait) = retry_after {
                    // Whole seconds, rounded up: never tell a client to retry too early.
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                res
            }
            Ok(First::Sse) | Ok(First::Nothing) | Err(_) => {
                sse_response(SseBody::new(rx, keep_alive))
            }
        }
    }

    /// `subscriptions/listen`: an SSE stream that stays open, acknowledges the filter, then
    /// carries the bus notifications the filter asks for, each tagged with the subscription id.
    fn listen(
        self,
        parts: http::request::Parts,
        mode: Mode,
        id: Value,
        rid: RequestId,
        params: JsonObject,
    ) -> Resp {
        let _ = &parts;
        let session = match &mode {
            Mode::Legacy(s) => Some(s.clone()),
            Mode::Stateless(_) => None,
        };
        let filter = params
            .get("notifications")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let wants = |k: &str| filter.get(k).and_then(Value::as_bool) == Some(true);
        let tools = wants("toolsListChanged");
        let prompts = wants("promptsListChanged");
        let resources = wants("resourcesListChanged");
        let uris: Vec<String> = filter
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut accepted = Map::new();
        if tools {
            accepted.insert("toolsListChanged".into(), Value::Bool(true));
        }
        if prompts {
            accepted.insert("promptsListChanged".into(), Value::Bool(true));
        }
        if resources {
            accepted.insert("resourcesListChanged".into(), Value::Bool(true));
        }
        if !uris.is_empty() {
            accepted.insert("resourceSubscriptions".into(), json!(uris));
        }
        let stream_id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let (stream, _first, rx) = Stream::new(stream_id, None, StreamKind::Standing);
        fn tag(id: &Value, mut params: JsonObject) -> JsonObject {
            let meta = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = meta {
                m.insert(META_SUBSCRIPTION_ID.into(), id.clone());
            }
            params
        }
        let ack = json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": tag(&id, json!({"notifications": accepted}).as_object().cloned().unwrap_or_default()),
        });
        stream.message(&serde_json::to_vec(&ack).unwrap_or_default());
        let mut events = self.shared.config.events.as_ref().map(|b| b.subscribe());
        let shutdown = self.shared.shutdown.clone();
        let closed = session
            .as_ref()
            .map(|s| s.closed.clone())
            .unwrap_or_default();
        let key = id_key(&id);
        let guard = RequestGuard {
            stream: stream.clone(),
            session: session.clone(),
            key: key.clone(),
        };
        let task = tokio::spawn(async move {
            let guard = guard;
            let stream = guard.stream.clone();
            loop {
                let event = tokio::select! {
                    _ = stream.reader_gone() => break,
                    _ = closed.cancelled() => break,
                    _ = shutdown.cancelled() => {
                        let done = json!({
                            "jsonrpc": "2.0",
                            "id": id,
                            "result": {"resultType": "complete", "_meta": {META_SUBSCRIPTION_ID: id}},
                        });
                        stream.finish(serde_json::to_vec(&done).unwrap_or_default());
                        break;
                    }
                    ev = recv(&mut events) => match ev {
                        Some(ev) => ev,
                        None => {
                            // No bus (or it closed): wait for the reader or shutdown only.
                            events = None;
                            continue;
                        }
                    },
                };
                let message = match event {
                    GatewayEvent::ListChanged(m) => {
                        let ok = match m.method.as_str() {
                            "notifications/tools/list_changed" => tools,
                            "notifications/prompts/list_changed" => prompts,
                            "notifications/resources/list_changed" => resources,
                            _ => false,
                        };
                        ok.then_some(m)
                    }
                    GatewayEvent::ResourceUpdated { uri, message } => {
                        uris.contains(&uri).then_some(message)
                    }
                    _ => None,
                };
                if let Some(m) = message {
                    let note =
                        json!({"jsonrpc": "2.0", "method": m.method, "params": tag(&id, m.params)});
                    stream.message(&serde_json::to_vec(&note).unwrap_or_default());
                }
            }
        });
        if let Some(s) = &session {
            s.add_inflight(key.clone(), task.abort_handle());
            if task.is_finished() {
                s.remove_inflight(&key);
            }
        }
        let _ = rid;
        sse_response(SseBody::new(rx, self.shared.config.sse_keep_alive))
    }

    // === GET ===

    fn get<B>(self, req: http::Request<B>) -> Resp {
        let (parts, _) = req.into_parts();
        if header_str(&parts.headers, HEADER_PROTOCOL_VERSION) == Some(STATELESS_VERSION) {
            let mut res = jsonrpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                codes::INVALID_REQUEST,
                "Method Not Allowed: 2026-07-28 has no GET stream; use subscriptions/listen",
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return res;
        }
        if !checks::accepts(&parts.headers, "text/event-stream") {
            return jsonrpc_error(
                StatusCode::NOT_ACCEPTABLE,
                None,
                codes::INVALID_REQUEST,
                "Not Acceptable: the client must accept text/event-stream",
            );
        }
        let session = match self.session(&parts) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    codes::INVALID_REQUEST,
                    "Bad Request: Mcp-Session-Id header is required",
                );
            }
            Err(res) => return res,
        };
        if let Some(v) = header_str(&parts.headers, HEADER_PROTOCOL_VERSION)
            && v != &*session.protocol_version
        {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                None,
                codes::INVALID_REQUEST,
                "Bad Request: MCP-Protocol-Version does not match the session",
            );
        }
        let keep_alive = self.shared.config.sse_keep_alive;
        let conflict = || {
            jsonrpc_error(
                StatusCode::CONFLICT,
                None,
                codes::INVALID_REQUEST,
                "Conflict: this session already has an open GET stream",
            )
        };
        if let Some(last) = header_str(&parts.headers, HEADER_LAST_EVENT_ID) {
            let Some((stream_id, seq)) = parse_event_id(last) else {
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    codes::INVALID_REQUEST,
                    "Bad Request: malformed Last-Event-ID",
                );
            };
            let is_get = session.get_stream().is_some_and(|g| g.id == stream_id);
            let rx = match session.stream(stream_id) {
                Some(stream) => {
                    if is_get && stream.attached() {
                        return conflict();
                    }
                    stream.resume(seq)
                }
                None => {
                    // A finished stream: replay what is buffered, then end.
                    let (tmp, _, _) =
                        Stream::new(stream_id, Some(session.clone()), StreamKind::Post);
                    tmp.abandon();
                    tmp.resume(seq)
                }
            };
            return sse_response(SseBody::new(rx, keep_alive));
        }
        let stream_id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let (fresh, _, fresh_rx) =
            Stream::new(stream_id, Some(session.clone()), StreamKind::Standing);
        let (get, is_new) = session.get_or_set_get_stream(|| fresh);
        let rx = if is_new {
            if let Some(bus) = &self.shared.config.events {
                tokio::spawn(forward_events(
                    bus.subscribe(),
                    session.clone(),
                    get.clone(),
                    self.shared.shutdown.clone(),
                ));
            }
            fresh_rx
        } else {
            match get.attach() {
                Some(rx) => rx,
                None => return conflict(),
            }
        };
        sse_response(SseBody::new(rx, keep_alive))
    }

    // === DELETE ===

    fn delete<B>(self, req: http::Request<B>) -> Resp {
        let (parts, _) = req.into_parts();
        match self.session(&parts) {
            Ok(Some(s)) => {
                self.shared.store.delete(&s.id);
                status_only(StatusCode::NO_CONTENT)
            }
            Ok(None) => jsonrpc_error(
                StatusCode::BAD_REQUEST,
                None,
                codes::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
            ),
            Err(res) => res,
        }
    }
}

async fn recv(
    events: &mut Option<tokio::sync::broadcast::Receiver<GatewayEvent>>,
) -> Option<GatewayEvent> {
    use tokio::sync::broadcast::error::RecvError;
    let Some(rx) = events.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(ev) => return Some(ev),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "a notification stream fell behind the event bus"
                );
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// Feeds a session's GET stream from the event bus until the session ends.
async fn forward_events(
    rx: tokio::sync::broadcast::Receiver<GatewayEvent>,
    session: Arc<LiveSession>,
    get: Arc<Stream>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut events = Some(rx);
    loop {
        let event = tokio::select! {
            _ = session.closed.cancelled() => break,
            _ = shutdown.cancelled() => break,
            ev = recv(&mut events) => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        let message = match event {
            GatewayEvent::ListChanged(m) | GatewayEvent::Unsolicited(m) => Some(m),
            GatewayEvent::ResourceUpdated { uri, message } => {
                session.is_subscribed(&uri).then_some(message)
            }
            _ => None,
        };
        if let Some(m) = message {
            let note = json!({"jsonrpc": "2.0", "method": m.method, "params": m.params});
            get.message(&serde_json::to_vec(&note).unwrap_or_default());
        }
    }
    get.abandon();
}

// === RequestGuard ===

/// Runs when a request task ends, normally or aborted (cancellation): ends its stream and
/// removes its bookkeeping.
struct RequestGuard {
    stream: Arc<Stream>,
    session: Option<Arc<LiveSession>>,
    key: String,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.stream.abandon();
        if let Some(s) = &self.session {
            s.remove_inflight(&self.key);
            s.remove_stream(self.stream.id);
        }
    }
}

// === RequestDownstream ===

/// The reverse path of one request: its notifications and server-to-client requests go on its
/// own stream (or, once the client left it, the session's GET stream or replay buffer).
struct RequestDownstream {
    stream: Arc<Stream>,
    session: Option<Arc<LiveSession>>,
    shared: Arc<Shared>,
}

#[async_trait]
impl Downstream for RequestDownstream {
    async fn notify(&self, message: ServerMessage) -> Result<(), BoxError> {
        if self.stream.done() {
            return Err("the request has finished; its stream is closed".into());
        }
        let note = json!({"jsonrpc": "2.0", "method": message.method, "params": message.params});
        self.stream
            .message(&serde_json::to_vec(&note).map_err(|e| Box::new(e) as BoxError)?);
        Ok(())
    }

    async fn request(&self, message: ServerMessage) -> Result<Result<Value, ErrorData>, BoxError> {
        let Some(session) = &self.session else {
            return Err("client cannot be asked: a stateless (2026-07-28) request has no channel for server-to-client requests".into());
        };
        if self.stream.kind == StreamKind::JsonOnly {
            return Err("client cannot be asked during initialize".into());
        }
        let n = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("gw-{n}"));
        let key = id_key(&id);
        let (tx, rx) = oneshot::channel();
        session.add_pending(key.clone(), tx);
        struct Pending<'a>(&'a LiveSession, &'a str);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.remove_pending(self.1);
            }
        }
        let _pending = Pending(session, &key);
        let req =
            json!({"jsonrpc": "2.0", "id": id, "method": message.method, "params": message.params});
        self.stream
            .message(&serde_json::to_vec(&req).map_err(|e| Box::new(e) as BoxError)?);
        rx.await
            .map_err(|_| "the client session ended before answering".into())
    }
}
